"""The whole pipeline with BeamDagRunner on tiny generated CIFAR-100 (smoke preset)."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from kd_trainer.contract import HISTORY_FILE, LABEL_KEY, PREDICTION_KEY, SERVING_FOLDER, SERVING_SIGNATURE
from pipelines import cli, presets, results
from pipelines.pipeline import ECE_BINS, create_pipeline
from conftest import REPO_ROOT
from test_metrics import numpy_ece

METHODS = presets.SEED_METHODS
TRAINERS = ["Trainer.teacher", "Trainer.baseline_trial1", *(f"Trainer.{m}_trial1" for m in METHODS)]
EVALUATORS = ["Evaluator.teacher", *(f"Evaluator.{m}_trial1" for m in METHODS)]


def executions_by_node(paths):
    store = metadata_store.MetadataStore(paths.connection_config())
    prefix = f"{paths.pipeline_name}."
    states = {}
    for context in store.get_contexts_by_type("node"):
        if context.name.startswith(prefix):
            states[context.name[len(prefix):]] = [metadata_store_pb2.Execution.State.Name(e.last_known_state)
                                                  for e in store.get_executions_by_context(context.id)]
    return states


def independent_ece(model_uri, examples_uri):
    """ECE of the exported model on the eval split, computed here without TFMA."""
    model = tf.saved_model.load(os.path.join(model_uri, SERVING_FOLDER))
    files = tf.io.gfile.glob(os.path.join(examples_uri, "Split-eval", "*"))
    probabilities, labels = [], []
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(64):
        probabilities.append(model.signatures[SERVING_SIGNATURE](examples=batch)[PREDICTION_KEY].numpy())
        parsed = tf.io.parse_example(batch, {LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)})
        labels.append(parsed[LABEL_KEY].numpy())
    return numpy_ece(np.concatenate(probabilities), np.concatenate(labels), ECE_BINS)


def test_first_run_completes_every_component(smoke_first_run):
    # conftest's session fixture ran `kd run` once (its output captured); this checks that run.
    paths = smoke_first_run.paths
    assert smoke_first_run.exit_code == 0
    states = executions_by_node(paths)
    assert set(states) == {"CifarExampleGen", *TRAINERS, *EVALUATORS, "Leaderboard"}
    assert all(s == ["COMPLETE"] for s in states.values()), states

    artifacts = results.latest_artifacts(paths.connection_config(), paths.pipeline_name)
    examples = artifacts["CifarExampleGen"]["Examples"]
    assert json.loads(examples.properties["split_names"].string_value) == ["train", "eval"]
    for trainer in TRAINERS:
        model_dir = artifacts[trainer]["Model"].uri
        assert os.path.isfile(os.path.join(model_dir, SERVING_FOLDER, "saved_model.pb"))
        stages = [h["stage"] for h in json.load(open(os.path.join(model_dir, HISTORY_FILE)))]
        two_stage = trainer.split(".")[1].rsplit("_trial", 1)[0] in ("fitnet", "fsp", "ab")
        assert stages == (["init", "main"] if two_stage else ["main"]), trainer
    for method in METHODS:
        blessing = artifacts[f"Evaluator.{method}_trial1"]["ModelBlessing"]
        assert blessing.custom_properties["blessed"].int_value in (0, 1)

    report = results.leaderboard_dir(artifacts)
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json", "report.html", "val_accuracy.png",
                 "gains.png", "superclass_gains.png"):
        assert os.path.getsize(os.path.join(report, name)) > 0, name
    board = json.load(open(os.path.join(report, "leaderboard.json")))
    assert [row["label"] for row in board["rows"]][:2] == ["Teacher", "Student (baseline)"]
    assert {row["label"] for row in board["rows"]} == {"Teacher", "Student (baseline)", *METHODS}
    assert all(row["trials"] == 1 for row in board["rows"])
    assert board["configuration"]["name"] == "smoke"
    baseline_top1 = next(r["top1"] for r in board["models"] if r["role"] == "baseline")
    for record in board["models"]:
        component = record["model_uri"].split(os.sep)[-3]
        history = json.load(open(os.path.join(record["model_uri"], HISTORY_FILE)))
        main = [h["val_accuracy"] for h in history if h["stage"] == "main"]
        assert (record["last"], record["best"]) == (main[-1], max(main)), component
        # Accuracies are TFMA's, read independently here.
        evaluation = artifacts[component.replace("Trainer.", "Evaluator.")]["ModelEvaluation"].uri \
            if record["role"] != "baseline" else record["evaluation_uri"]
        model_name = {"teacher": None, "baseline": "baseline", "student": "candidate"}[record["role"]]
        tfma_result = tfma.load_eval_result(evaluation, model_name=model_name)
        overall = next(m for key, m in tfma_result.slicing_metrics if key == ())
        assert record["top1"] == overall[""][""]["sparse_categorical_accuracy"]["doubleValue"], component
        assert overall[""][""]["example_count"]["doubleValue"] == 200
        assert record["ece"] == overall[""][""]["expected_calibration_error"]["doubleValue"], component
        assert len(record["superclass_top1"]) == 20
        if record["role"] == "student":
            blessing = artifacts[component.replace("Trainer.", "Evaluator.")]["ModelBlessing"]
            assert record["blessed"] == (blessing.custom_properties["blessed"].int_value == 1)
            assert record["blessed"] == (record["top1"] >= baseline_top1), component
    teacher = next(r for r in board["models"] if r["role"] == "teacher")
    assert teacher["ece"] == pytest.approx(independent_ece(teacher["model_uri"], examples.uri), abs=1e-5)
    page = open(os.path.join(report, "report.html")).read()
    assert page.count("data:image/png;base64,") == 3
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", page), "the report references a remote resource"
    assert page.count("<script") == 1  # the superclass table's inline sorting (the regex above: no remote source)

    printed = smoke_first_run.printed
    assert str(paths.pipeline_root) in printed and report in printed
    assert "| Teacher | 1 |" in printed and all(f"| {m} | 1 |" in printed for m in METHODS)


def test_second_run_hits_the_cache(smoke_run):
    args, paths = smoke_run
    assert cli.main(args) == 0
    states = executions_by_node(paths)
    assert all(sorted(s) == ["CACHED", "COMPLETE"] for s in states.values()), states
    # The newest run, as benchmarks/component_times.py reads it: every component, each a cache hit.
    newest = results.latest_run_executions(paths.connection_config(), paths.pipeline_name)
    assert sorted(r.node for r in newest) == sorted(states)
    assert all(r.state == "CACHED" and 0 <= r.seconds < 600 for r in newest), newest


def test_report_command_regenerates_the_leaderboard(smoke_run, capsys, tmp_path):
    _, paths = smoke_run
    output = tmp_path / "report"
    capsys.readouterr()
    assert cli.main(["report", str(paths.pipeline_root), "--output", str(output)]) == 0
    assert "| Student (baseline) | 1 |" in capsys.readouterr().out
    original = results.leaderboard_dir(results.latest_artifacts(paths.connection_config(), paths.pipeline_name))
    assert json.load(open(output / "leaderboard.json")) == json.load(open(os.path.join(original, "leaderboard.json")))
    assert (output / "report.html").stat().st_size > 0
    assert cli.main(["report", str(tmp_path / "missing" / "root")]) == 1  # a run folder that is not there: reported on one line, exit 1 (test_cli_errors)
    # A run from before the Leaderboard component: the Trainers' configurations stand in.
    artifacts = results.latest_artifacts(paths.connection_config(), paths.pipeline_name)
    del artifacts["Leaderboard"]
    rows = results.regenerate_report(artifacts, str(tmp_path / "older"))
    assert len(rows) == 2 + len(METHODS)
    older = json.load(open(tmp_path / "older" / "leaderboard.json"))
    assert set(older["configuration"]["trainers"]) == set(TRAINERS)


def test_structure_follows_methods_and_trials(tmp_path):
    preset = presets.resolve("smoke", ["trials=3", "methods=soft_logits,fitnet"])
    pipeline = create_pipeline("p", str(tmp_path), preset)
    ids = [c.id for c in pipeline.components]
    assert ids.count("Trainer.teacher") == 1
    for trial in (1, 2, 3):
        assert {f"Trainer.baseline_trial{trial}", f"Trainer.soft_logits_trial{trial}",
                f"Evaluator.soft_logits_trial{trial}", f"Trainer.fitnet_trial{trial}",
                f"Evaluator.fitnet_trial{trial}"} <= set(ids)
    assert len(ids) == 3 + 3 * (1 + 2 * 2) + 1 and ids[-1] == "Leaderboard"
    evaluator = next(c for c in pipeline.components if c.id == "Evaluator.soft_logits_trial2")
    assert evaluator.inputs["baseline_model"].producer_component_id == "Trainer.baseline_trial2"
    assert evaluator.inputs["model"].producer_component_id == "Trainer.soft_logits_trial2"
    student = next(c for c in pipeline.components if c.id == "Trainer.soft_logits_trial2")
    assert student.inputs["base_model"].producer_component_id == "Trainer.teacher"


def test_tfx_cli_creates_the_pipeline_from_the_runner_module(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "KD_PRESET": "smoke", "KD_OUTPUT_DIR": str(tmp_path / "out")}
    tfx_cli = os.path.join(os.path.dirname(sys.executable), "tfx")
    result = subprocess.run([tfx_cli, "pipeline", "create", "--engine", "beam", "--pipeline_path",
                             "pipelines/local_runner.py"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'Pipeline "kd-smoke" created successfully' in result.stdout
    assert (tmp_path / "tfx" / "beam" / "kd-smoke" / "pipeline_args.json").is_file()
