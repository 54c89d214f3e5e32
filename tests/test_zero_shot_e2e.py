"""Zero-shot KD end to end (BeamDagRunner, tiny generated CIFAR-100, `zero_shot` preset shrunk).

Only the zero_shot method runs here (the few-shot student's wiring is checked in
test_zero_shot.py; it is a soft_logits student on a smaller CifarExampleGen).

The zero_shot student must never read real training images: after a first run, the real
training split is overwritten with garbage and the zero_shot student alone is retrained
(a changed method parameter); it must still train, while reading the poisoned split fails.
"""

import json
import os

import pytest
import tensorflow as tf
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from kd_trainer import data
from kd_trainer.contract import CONFIG_FILE, LEADERBOARD_JSON
from pipelines import cli, local_runner, presets, results
from test_pipeline_e2e import executions_by_node

OVERRIDES = ["methods=zero_shot", "data.require_official_sizes=false", "data.train_per_class=4",
             "data.eval_per_class=2", "teacher.model=resnet8", "teacher.epochs=1", "teacher.batch_size=64",
             "student.epochs=1", "student.batch_size=64", "zero_shot.num_impressions=64", "zero_shot.iterations=3",
             "zero_shot.batch_size=32"]
NODES = {"CifarExampleGen", "DataImpressions", "Trainer.teacher", "Trainer.baseline_trial1", "Trainer.zero_shot_trial1",
         "Evaluator.teacher", "Evaluator.zero_shot_trial1", "Leaderboard"}
RETRAINED = {"Trainer.zero_shot_trial1", "Evaluator.zero_shot_trial1", "Leaderboard"}


def run(output_dir, archive, extra=()):
    args = ["run", "--preset", "zero_shot", "--output-dir", str(output_dir)]
    for override in [f"data.data_dir={archive.parent}", *OVERRIDES, *extra]:
        args += ["--set", override]
    assert cli.main(args) == 0
    preset = presets.resolve("zero_shot", [f"data.data_dir={archive.parent}", *OVERRIDES, *extra])
    paths = local_runner.local_paths(preset, output_dir)
    return paths, results.latest_artifacts(paths.connection_config(), paths.pipeline_name)


def input_examples_of(paths, node):
    """Ids of the Examples artifacts the node's executions read."""
    store = metadata_store.MetadataStore(paths.connection_config())
    context = store.get_context_by_type_and_name("node", f"{paths.pipeline_name}.{node}")
    executions = [e.id for e in store.get_executions_by_context(context.id)]
    inputs = [e.artifact_id for e in store.get_events_by_execution_ids(executions)
              if e.type == metadata_store_pb2.Event.INPUT]
    examples_type = store.get_artifact_type("Examples").id
    return {a.id for a in store.get_artifacts_by_id(inputs) if a.type_id == examples_type}


def split_files(artifact, split):
    return tf.io.gfile.glob(os.path.join(artifact.uri, f"Split-{split}", "*"))


@pytest.mark.e2e
def test_zero_shot_student_learns_from_impressions_only(tmp_path, tiny_archive):
    paths, artifacts = run(tmp_path, tiny_archive)
    states = executions_by_node(paths)
    assert set(states) == NODES and all(s == ["COMPLETE"] for s in states.values()), states
    impressions = artifacts["DataImpressions"]["Examples"]
    assert input_examples_of(paths, "Trainer.zero_shot_trial1") == {impressions.id}
    real_train = split_files(artifacts["CifarExampleGen"]["Examples"], "train")
    assert data.count(data.load_records(real_train)) == 400

    board = json.load(open(os.path.join(results.leaderboard_dir(artifacts), LEADERBOARD_JSON)))
    assert {row["label"] for row in board["rows"]} == {"Teacher", "Student (baseline)", "zero_shot"}
    zero_shot = next(r for r in board["models"] if r["method"] == "zero_shot")
    assert 0 <= zero_shot["top1"] <= 1 and "gain" in zero_shot and len(zero_shot["val_accuracy_curve"]) == 1

    # Poison the real training split; reading it now fails.
    for path in real_train:
        with open(path, "wb") as f:
            f.write(b"poisoned: not a gzipped TFRecord")
    with pytest.raises(tf.errors.OpError):
        data.count(data.load_records(real_train))

    paths, artifacts = run(tmp_path, tiny_archive, ["method_params.zero_shot.temperature=10"])
    states = executions_by_node(paths)
    assert {node for node, s in states.items() if s == ["COMPLETE", "COMPLETE"]} == RETRAINED, states
    assert all(sorted(s) == ["CACHED", "COMPLETE"] for node, s in states.items() if node not in RETRAINED), states
    config = json.load(open(os.path.join(artifacts["Trainer.zero_shot_trial1"]["Model"].uri, CONFIG_FILE)))
    assert config["method_params"] == {"temperature": 10}
