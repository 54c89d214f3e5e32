"""One record per trained model, read from the run's own artifacts.

A Trainer's Model artifact gives the configuration, the training curve and the outcome
(trainer_config.json, history.json); an Evaluator's ModelEvaluation gives TFMA's metrics,
overall and per superclass. Each evaluation names the models it scored (TFMA's
model_locations), which ties it to its Trainer.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import tensorflow as tf
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.writers import eval_config_writer

from kd_trainer.contract import CONFIG_FILE, HISTORY_FILE, SLICE_KEY

# TFMA's names of the metrics the pipeline's EvalConfig computes (pipelines/pipeline.py: eval_config).
ACCURACY = "sparse_categorical_accuracy"
TOP5 = "sparse_top_k_categorical_accuracy"
CROSS_ENTROPY = "sparse_categorical_crossentropy"
CALIBRATION_ERROR = "expected_calibration_error"
# A record's per-superclass metrics: its key -> TFMA's metric name.
SUPERCLASS_METRICS = {"top1": ACCURACY, "top5": TOP5, "cross_entropy": CROSS_ENTROPY, "ece": CALIBRATION_ERROR,
                      "examples": "example_count"}
TEACHER, BASELINE = "Teacher", "Student (baseline)"


def label(record: dict) -> str:
    """The row a record is shown in: Teacher, Student (baseline) or its method."""
    return {"teacher": TEACHER, "baseline": BASELINE}.get(record["role"], record["method"])


def _read_json(path: str) -> Any:
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def _model_dir(serving_dir: str) -> str:
    return os.path.dirname(serving_dir.rstrip("/"))


def _sliced_metrics(evaluation_uri: str, model_name: str | None
                    ) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    """(overall metrics, {superclass: its metrics}) of one model in one evaluation."""
    result = tfma.load_eval_result(evaluation_uri, model_name=model_name)
    overall, superclasses = {}, {}
    for slice_key, metrics in result.slicing_metrics:
        values = {k: v["doubleValue"] for k, v in metrics[""][""].items() if "doubleValue" in v}
        if slice_key == ():
            overall = values
        elif len(slice_key) == 1 and slice_key[0][0] == SLICE_KEY:
            superclasses[int(slice_key[0][1])] = values
    return overall, superclasses


def _trained_record(model_uri: str) -> dict[str, Any]:
    config = _read_json(os.path.join(model_uri, CONFIG_FILE))
    history = _read_json(os.path.join(model_uri, HISTORY_FILE))
    main = [epoch for epoch in history if epoch.get("stage", "main") == "main"]
    curve = [epoch["val_accuracy"] for epoch in main]
    record = {
        "role": config["role"], "method": config["method"], "trial": config["trial"], "network": config["model"],
        "parameters": config["num_weights_without_bn"], "code_revision": config["code_revision"],
        "config": config, "val_accuracy_curve": curve,
        "train_seconds": sum(epoch["epoch_seconds"] for epoch in history),
    }
    if config.get("divergence"):
        where = config["divergence"]
        record["failure"] = f"non-finite loss at stage {where['stage']}, epoch {where['epoch']}, step {where['step']}"
    else:
        record.update(last=curve[-1], best=max(curve))
    return record


def collect_records(evaluation_uris: list[str], blessings: dict[str, bool], model_uris: list[str],
                    relocate: Callable[[str], str] = str) -> list[dict]:
    """One record per evaluated model (teacher, each trial's baseline, every student).

    `blessings` maps a candidate model's uri to its blessing. `relocate` maps the model paths
    recorded inside each evaluation to where the run folder is now (`kd report` on a moved run).
    """
    known_models = {uri.rstrip("/") for uri in model_uris}
    records: dict[str, dict] = {}
    for evaluation in sorted(evaluation_uris):  # a baseline is read from the same evaluation every time
        locations = eval_config_writer.load_eval_run(evaluation)[3]
        for name, serving_dir in locations.items():
            model_uri = relocate(_model_dir(serving_dir))
            if model_uri not in known_models:
                raise ValueError(f"{evaluation}: evaluated model {model_uri} is not among the Leaderboard's inputs")
            if model_uri in records:
                continue
            overall, superclasses = _sliced_metrics(evaluation, name or None)
            record = _trained_record(model_uri)
            record.update(model_uri=model_uri, evaluation_uri=evaluation, top1=overall[ACCURACY], top5=overall[TOP5],
                          cross_entropy=overall[CROSS_ENTROPY], ece=overall[CALIBRATION_ERROR],
                          superclass_top1={k: v[ACCURACY] for k, v in superclasses.items()},
                          superclass_metrics={k: {key: v[name] for key, name in SUPERCLASS_METRICS.items()}
                                              for k, v in superclasses.items()})
            if record["role"] == "student":
                record["blessed"] = blessings[model_uri]
            records[model_uri] = record
    for model_uri in sorted(known_models - set(records)):  # not evaluated: training diverged
        record = _trained_record(model_uri)
        record.update(model_uri=model_uri, blessed=False)
        record.setdefault("failure", "not evaluated (its baseline diverged)")
        records[model_uri] = record
    baselines = {r["trial"]: r for r in records.values() if r["role"] == "baseline" and "top1" in r}
    for record in records.values():
        if record["role"] == "student" and "top1" in record and record["trial"] in baselines:
            baseline = baselines[record["trial"]]
            record["gain"] = record["top1"] - baseline["top1"]
            record["superclass_gain"] = {k: v - baseline["superclass_top1"][k]
                                         for k, v in record["superclass_top1"].items()}
    return sorted(records.values(), key=lambda r: (r["role"] != "teacher", r["role"] != "baseline",
                                                   r["method"], r["trial"]))
