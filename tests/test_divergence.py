"""A NaN/Inf objective stops the Trainer, is recorded, and keeps the model from evaluation."""

import dataclasses
import json
import os

import pytest
import tensorflow as tf

from kd_trainer import fields, methods
from kd_trainer.contract import CONFIG_FILE, HISTORY_FILE, LEADERBOARD_JSON
from kd_trainer.methods.base import DistillationMethod
from kd_trainer.run_fn import run_fn
from test_run_fn import TRAINING, example_files, fn_args  # noqa: F401  (fixtures)


class DivergesAtStep(DistillationMethod):
    """CE plus a term that is 0 until optimizer step `at_step`, then NaN (an injected fault)."""

    name = "diverges_at_step"
    student_taps = ("logits",)
    loss_term_names = ("ce", "fault")

    @dataclasses.dataclass(frozen=True)
    class Params:
        at_step: int = fields.integer(8, 0, 1000)

    def __init__(self, params=None, name=None):
        super().__init__(params, name)
        self.calls = tf.Variable(0, dtype=tf.int64, trainable=False)

    def loss_terms(self, labels, cross_entropy, student, teacher, stage="main"):
        fault = tf.where(self.calls >= self.params.at_step, tf.constant(float("nan")), 0.0)
        self.calls.assign_add(1)
        return {"ce": cross_entropy, "fault": fault}


@pytest.fixture
def diverging_method(monkeypatch):
    monkeypatch.setitem(methods.CATALOG, DivergesAtStep.name,
                        methods.MethodEntry(DivergesAtStep.name, DivergesAtStep, DivergesAtStep.Params))
    return DivergesAtStep.name


def test_nan_stops_training_and_names_where(tmp_path, example_files, diverging_method, caplog):  # noqa: F811
    # 6 steps per epoch: step index 8 is epoch 2, step 3.
    config = {"role": "student", "method": diverging_method, **TRAINING, "epochs": 4}
    args = fn_args(tmp_path, example_files, "student", config)
    run_fn(args)
    model_dir = os.path.dirname(args.serving_model_dir)
    trainer_config = json.load(open(os.path.join(model_dir, CONFIG_FILE)))
    assert trainer_config["divergence"] == {"method": diverging_method, "stage": "main", "epoch": 2, "step": 3}
    history = json.load(open(os.path.join(model_dir, HISTORY_FILE)))
    assert [h["epoch"] for h in history] == [1, 2], "training went on after the NaN"
    assert "Non-finite training loss: method diverges_at_step, stage main, epoch 2, step 3" in caplog.text


def test_finite_training_records_no_divergence(tmp_path, example_files):  # noqa: F811
    args = fn_args(tmp_path, example_files, "baseline", {"role": "baseline", **TRAINING, "epochs": 1})
    run_fn(args)
    config = json.load(open(os.path.join(os.path.dirname(args.serving_model_dir), CONFIG_FILE)))
    assert config["divergence"] is None


def test_pipeline_skips_evaluating_a_diverged_student_and_reports_it(tmp_path, tiny_archive, diverging_method):
    """A tiny pipeline: the diverged student gets no Evaluator run (so no blessing); the teacher,
    behind the same kind of condition, is evaluated; the leaderboard lists the failure."""
    from pipelines import local_runner, presets, results
    from conftest import SMOKE_OVERRIDES

    preset = presets.resolve("smoke", [f"data.data_dir={tiny_archive.parent}", *SMOKE_OVERRIDES,
                                       f'methods=["{diverging_method}"]',
                                       f"method_params.{diverging_method}.at_step=2"])
    paths = local_runner.local_paths(preset, tmp_path)
    local_runner.run(preset, paths)

    artifacts = results.latest_artifacts(paths.connection_config(), paths.pipeline_name)
    diverged = artifacts[f"Trainer.{diverging_method}_trial1"]["Model"]
    assert diverged.custom_properties["diverged"].int_value == 1
    assert json.loads(diverged.custom_properties["divergence"].string_value)["step"] == 3
    assert artifacts["Trainer.teacher"]["Model"].custom_properties["diverged"].int_value == 0
    assert not artifacts.get(f"Evaluator.{diverging_method}_trial1"), "a diverged model was evaluated"
    assert "ModelEvaluation" in artifacts["Evaluator.teacher"]

    board = json.load(open(os.path.join(results.leaderboard_dir(artifacts), LEADERBOARD_JSON)))
    rows = {row["label"]: row for row in board["rows"]}
    assert rows[diverging_method]["failures"] == ["non-finite loss at stage main, epoch 1, step 3"]
    assert rows[diverging_method]["blessed"] == 0 and "top1" not in rows[diverging_method]
    assert "top1" in rows["Teacher"] and rows["Teacher"]["failures"] == []
