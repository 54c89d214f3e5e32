"""Interrupted Trainers resume from their last epoch; seeded runs repeat exactly (CPU)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from kd_trainer.contract import CONFIG_FILE, HISTORY_FILE
from kd_trainer.run_fn import run_fn
from test_run_fn import TRAINING, example_files, fn_args, teacher_export  # noqa: F401  (fixtures)

# Runs run_fn in a child process that SIGKILLs itself right after saving epoch KILL_AFTER.
KILLED_CHILD = """
import json, os, signal, sys, types
from kd_trainer import checkpoints
from kd_trainer.run_fn import run_fn
save = checkpoints.EpochCheckpoints.save
def save_then_die(self, checkpoint, epochs_done, stage, history):
    save(self, checkpoint, epochs_done, stage, history)
    if epochs_done == int(os.environ["KILL_AFTER"]):
        os.kill(os.getpid(), signal.SIGKILL)
checkpoints.EpochCheckpoints.save = save_then_die
run_fn(types.SimpleNamespace(**json.loads(sys.argv[1])))
"""


def model_dir(args):
    return os.path.dirname(args.serving_model_dir)


def outputs(args):
    history = json.load(open(os.path.join(model_dir(args), HISTORY_FILE)))
    config = json.load(open(os.path.join(model_dir(args), CONFIG_FILE)))
    reader = tf.train.load_checkpoint(os.path.join(args.serving_model_dir, "variables", "variables"))
    weights = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    return history, config, weights


def without_times(history):
    return [{k: v for k, v in epoch.items() if k != "epoch_seconds"} for epoch in history]


def run_killed(args, kill_after):
    child = subprocess.run([sys.executable, "-c", KILLED_CHILD, json.dumps(vars(args))], capture_output=True,
                           text=True, env={**os.environ, "KILL_AFTER": str(kill_after)}, timeout=600)
    assert child.returncode == -9, child.stderr[-3000:]
    assert not os.path.exists(args.serving_model_dir), "a killed Trainer exported a model"


def resumed_args(tmp_path, example_files, config, base_model=None):  # noqa: F811
    """The same Trainer's first (killed) and second execution: sibling run directories."""
    first = fn_args(tmp_path / "exec1", example_files, "job", config, base_model)
    second = fn_args(tmp_path / "exec2", example_files, "job", config, base_model)
    runs = tmp_path / "Trainer.x" / "model_run"
    first.model_run_dir, second.model_run_dir = str(runs / "1"), str(runs / "2")
    return first, second


# The baseline's resumed configuration (students change its epochs).
BASELINE_RESUMED = {**TRAINING, "epochs": 3, "lr_decay_at": [0.5], "seed": 7}


@pytest.fixture(scope="module")
def uninterrupted_runs(tmp_path_factory):
    """Uninterrupted reference runs, one per configuration, shared by the kill points that use it."""
    runs = {}

    def run(example_files, config, base_model):  # noqa: F811
        key = json.dumps(config, sort_keys=True)
        if key not in runs:
            runs[key] = fn_args(tmp_path_factory.mktemp("reference"), example_files, "reference", config, base_model)
            run_fn(runs[key])
        return runs[key]
    return run


@pytest.mark.parametrize("method, kill_after", [("", 2), ("fitnet", 1), ("fitnet", 2)],
                         ids=["baseline-mid-stage", "fitnet-stage-boundary", "fitnet-mid-main-stage"])
def test_killed_trainer_resumes_and_matches_an_uninterrupted_run(tmp_path, example_files, teacher_export,  # noqa: F811
                                                                  uninterrupted_runs, method, kill_after):
    config = {"role": "student" if method else "baseline", "method": method, **BASELINE_RESUMED}
    if method:
        config["method_params"] = {"init_epochs": 1}
        config["epochs"] = 2
    base_model = teacher_export.serving_model_dir if method else None
    reference = uninterrupted_runs(example_files, config, base_model)
    first, second = resumed_args(tmp_path, example_files, config, base_model)
    run_killed(first, kill_after)
    assert os.path.exists(os.path.join(first.model_run_dir, "checkpoints", "progress.json"))

    run_fn(second)

    history, trainer_config, weights = outputs(second)
    reference_history, _, reference_weights = outputs(reference)
    assert trainer_config["resumed_after_epoch"] == kill_after
    assert without_times(history) == without_times(reference_history)
    assert weights.keys() == reference_weights.keys()
    for name in weights:
        np.testing.assert_array_equal(weights[name], reference_weights[name], err_msg=name)
    assert not os.path.exists(os.path.join(second.model_run_dir, "checkpoints")), "checkpoints left after export"


def test_checkpoints_of_other_work_are_ignored(tmp_path, example_files):  # noqa: F811
    config = {"role": "baseline", **TRAINING, "epochs": 2, "seed": 1}
    first, second = resumed_args(tmp_path, example_files, config)
    run_killed(first, 1)
    second.custom_config = {**config, "learning_rate": 0.05}  # different work: must start from scratch
    run_fn(second)
    assert outputs(second)[1]["resumed_after_epoch"] == 0


def test_same_seed_same_metrics(tmp_path, example_files, uninterrupted_runs):  # noqa: F811
    config = {"role": "baseline", "method": "", **BASELINE_RESUMED}  # the resume test's reference, shared
    first = uninterrupted_runs(example_files, config, None)
    again = fn_args(tmp_path / "again", example_files, "run", config)
    run_fn(again)
    (history_a, _, weights_a), (history_b, _, weights_b) = outputs(first), outputs(again)
    assert without_times(history_a) == without_times(history_b)
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        np.testing.assert_array_equal(weights_a[name], weights_b[name], err_msg=name)
