"""Reading a finished run back from ML Metadata: artifacts per component, TFMA numbers, table."""

from __future__ import annotations

import dataclasses
import json
import os

import tensorflow as tf
import tensorflow_model_analysis as tfma
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from kd_trainer.run_fn import CONFIG_FILE, HISTORY_FILE

ACCURACY = "sparse_categorical_accuracy"
TOP5 = "sparse_top_k_categorical_accuracy"


def latest_artifacts(connection_config: metadata_store_pb2.ConnectionConfig,
                     pipeline_name: str) -> dict[str, dict[str, metadata_store_pb2.Artifact]]:
    """{component id: {artifact type name: newest LIVE output artifact}} for one pipeline.

    Cached executions publish no new artifacts, so "newest" is the one the latest run used.
    """
    store = metadata_store.MetadataStore(connection_config)
    type_names = {t.id: t.name for t in store.get_artifact_types()}
    prefix = f"{pipeline_name}."
    result: dict[str, dict[str, metadata_store_pb2.Artifact]] = {}
    for context in store.get_contexts_by_type("node"):
        if not context.name.startswith(prefix):
            continue
        outputs = {e.artifact_id for e in store.get_events_by_execution_ids(
            [x.id for x in store.get_executions_by_context(context.id)])
            if e.type == metadata_store_pb2.Event.OUTPUT}
        newest: dict[str, metadata_store_pb2.Artifact] = {}
        for artifact in store.get_artifacts_by_id(sorted(outputs)):
            if artifact.state != metadata_store_pb2.Artifact.LIVE:
                continue
            name = type_names[artifact.type_id]
            if name not in newest or artifact.id > newest[name].id:
                newest[name] = artifact
        result[context.name[len(prefix):]] = newest
    return result


def overall_metrics(evaluation_uri: str, model_name: str | None = None) -> dict[str, float]:
    """The whole-test-set metrics of one model from an Evaluator's output.

    `model_name` is "candidate" or "baseline" for a comparison; None for a lone model.
    """
    result = tfma.load_eval_result(evaluation_uri, model_name=model_name)
    for slice_key, metrics in result.slicing_metrics:
        if slice_key == ():
            values = metrics[""][""]
            return {name: value["doubleValue"] for name, value in values.items() if "doubleValue" in value}
    raise ValueError(f"{evaluation_uri}: no overall slice for model '{model_name}'")


def is_blessed(blessing: metadata_store_pb2.Artifact) -> bool:
    return blessing.custom_properties["blessed"].int_value == 1


def read_json(path: str):
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


@dataclasses.dataclass
class ResultRow:
    component: str
    role: str
    method: str
    trial: int
    model: str
    accuracy: float
    top5_accuracy: float
    baseline_accuracy: float | None
    blessed: bool | None
    model_uri: str
    evaluation_uri: str
    code_revision: str
    train_seconds: float

    @property
    def gain(self) -> float | None:
        return None if self.baseline_accuracy is None else self.accuracy - self.baseline_accuracy


def _trainer_outputs(model_uri: str) -> tuple[dict, float]:
    """(trainer_config.json, total training seconds from history.json) of a Model artifact."""
    history = read_json(os.path.join(model_uri, HISTORY_FILE))
    return read_json(os.path.join(model_uri, CONFIG_FILE)), sum(epoch["epoch_seconds"] for epoch in history)


def collect(connection_config: metadata_store_pb2.ConnectionConfig, pipeline_name: str) -> list[ResultRow]:
    """Rows for the teacher, each trial's baseline student and every distilled student.

    Baseline numbers come from the Evaluators that compared it with a student (all of
    them score the same model on the same data).
    """
    artifacts = latest_artifacts(connection_config, pipeline_name)
    rows: dict[str, ResultRow] = {}
    for component, outputs in sorted(artifacts.items()):
        if not component.startswith("Evaluator.") or "ModelEvaluation" not in outputs:
            continue
        name = component[len("Evaluator."):]
        trainer = artifacts[f"Trainer.{name}"]["Model"]
        config, seconds = _trainer_outputs(trainer.uri)
        evaluation = outputs["ModelEvaluation"].uri
        compared = config["role"] == "student"
        candidate = overall_metrics(evaluation, "candidate" if compared else None)
        baseline = overall_metrics(evaluation, "baseline") if compared else None
        blessing = outputs.get("ModelBlessing")
        rows[name] = ResultRow(
            component=name, role=config["role"], method=config["method"], trial=config["trial"],
            model=config["model"], accuracy=candidate[ACCURACY], top5_accuracy=candidate[TOP5],
            baseline_accuracy=baseline[ACCURACY] if baseline else None,
            blessed=is_blessed(blessing) if baseline and blessing is not None else None,
            model_uri=trainer.uri, evaluation_uri=evaluation, code_revision=config["code_revision"],
            train_seconds=seconds)
        baseline_name = f"baseline_trial{config['trial']}"
        if baseline and baseline_name not in rows:
            baseline_model = artifacts[f"Trainer.{baseline_name}"]["Model"]
            baseline_config, baseline_seconds = _trainer_outputs(baseline_model.uri)
            rows[baseline_name] = ResultRow(
                component=baseline_name, role="baseline", method="", trial=config["trial"],
                model=baseline_config["model"], accuracy=baseline[ACCURACY], top5_accuracy=baseline[TOP5],
                baseline_accuracy=None, blessed=None, model_uri=baseline_model.uri, evaluation_uri=evaluation,
                code_revision=baseline_config["code_revision"], train_seconds=baseline_seconds)
    order = {"teacher": 0, "baseline": 1, "student": 2}
    return sorted(rows.values(), key=lambda r: (order[r.role], r.method, r.trial))


def format_table(rows: list[ResultRow]) -> str:
    """Markdown table: accuracy of the teacher, the baseline and every student, blessing."""
    lines = ["| Model | Network | Trial | Top-1 acc. | Top-5 acc. | Gain over baseline | Blessed | Train (min) |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        label = row.method or row.role
        gain = "" if row.gain is None else f"{100 * row.gain:+.2f}"
        blessed = "" if row.blessed is None else ("yes" if row.blessed else "no")
        lines.append(f"| {label} | {row.model} | {row.trial} | {100 * row.accuracy:.2f} | "
                     f"{100 * row.top5_accuracy:.2f} | {gain} | {blessed} | {row.train_seconds / 60:.1f} |")
    revisions = sorted({row.code_revision for row in rows})
    lines.append(f"\nAccuracies: TFMA on the eval split. Code revision: {', '.join(revisions)}.")
    return "\n".join(lines)
