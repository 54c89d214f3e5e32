"""`teacher.import_from`: a teacher of an earlier run replaces Trainer.teacher, checked before anything runs;
`kd teachers` lists the teachers recorded in ML Metadata. (The end-to-end reuse is in test_cache_keys.py.)"""

import json
import os

import pytest
import tensorflow as tf

from kd_trainer import models
from kd_trainer.contract import (CONFIG_FILE, HISTORY_FILE, LOGITS_KEY, PREDICTION_KEY, SERVING_FOLDER,
                                 SERVING_SIGNATURE, TAPS_SIGNATURE)
from pipelines import cli, presets
from pipelines.pipeline import TEACHER_IMPORTER, create_pipeline


def fake_model_dir(root, taps=("logits",), role="teacher", model="resnet14", serving=True):
    """A Model artifact folder whose SavedModel has this project's signatures but only `taps`."""

    class Fake(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(self, examples):
            logits = tf.zeros([tf.shape(examples)[0], models.NUM_CLASSES])
            return {LOGITS_KEY: logits, PREDICTION_KEY: tf.nn.softmax(logits)}

        @tf.function(input_signature=[tf.TensorSpec([None, *models.INPUT_SHAPE], tf.float32, name="images")])
        def taps(self, images):
            return {name: tf.reduce_mean(images, axis=[1, 2]) for name in taps}

    module = Fake()
    signatures = {TAPS_SIGNATURE: module.taps}
    if serving:
        signatures[SERVING_SIGNATURE] = module.serve
    tf.saved_model.save(module, str(root / SERVING_FOLDER), signatures=signatures)
    (root / CONFIG_FILE).write_text(json.dumps({"role": role, "model": model, "divergence": None}))
    (root / HISTORY_FILE).write_text(json.dumps([{"stage": "main", "val_accuracy": 0.5}]))
    return root


def resolve(path, *overrides):
    return presets.resolve("smoke", [f"teacher.import_from={path}", *overrides])


def test_an_imported_teacher_replaces_the_teacher_trainer(tmp_path):
    model_dir = fake_model_dir(tmp_path)
    for given in (model_dir, model_dir / SERVING_FOLDER):  # the artifact folder or its SavedModel
        preset = resolve(given, "methods=soft_logits")
        components = {c.id: c for c in create_pipeline("p", str(tmp_path / "root"), preset).components}
        assert "Trainer.teacher" not in components
        importer = components[TEACHER_IMPORTER]
        assert importer.exec_properties["artifact_uri"] == str(model_dir)
        for consumer in ("Trainer.soft_logits_trial1", "Evaluator.teacher"):
            channel = components[consumer].inputs["base_model" if consumer.startswith("Trainer") else "model"]
            assert channel.producer_component_id == TEACHER_IMPORTER
        assert components["Leaderboard"].inputs["model_0"].producer_component_id == TEACHER_IMPORTER


def test_missing_taps_are_named_per_method(tmp_path):
    model_dir = fake_model_dir(tmp_path)
    with pytest.raises(presets.PresetError) as error:
        resolve(model_dir, "methods=soft_logits,at,fitnet")
    message = str(error.value)
    assert str(model_dir / SERVING_FOLDER) in message and "found ['logits']" in message
    assert "'at': ['stage1', 'stage2', 'stage3']" in message and "'fitnet'" in message and "soft_logits" not in message


def test_every_seed_method_needs_only_exported_taps(tmp_path):
    # Jacobian's teacher input gradient is computed by the training loop, not read from the export.
    taps = ("logits", "embedding", "stage1", "stage2", "stage3", "stage1_preact", "stage2_preact", "stage3_preact")
    preset = resolve(fake_model_dir(tmp_path, taps=taps))
    assert "jacobian" in preset.methods and presets.teacher_taps(preset)["jacobian"] == ("stage1", "stage2", "stage3")


@pytest.mark.parametrize("kwargs, overrides, expected", [
    ({"role": "baseline"}, [], "found role 'baseline', model 'resnet14'"),
    ({}, ["teacher.model=resnet32"], "expected a teacher of architecture 'resnet32'.*found role 'teacher', model 'resnet14'"),
    ({"serving": False}, [], "has no 'serving_default' signature; expected .* found \\['feature_taps'\\]"),
    ({}, ["data.normalization=seed_bgr"],
     "trained on images normalized as 'cifar100_rgb', this run normalizes them as 'seed_bgr'"),
])
def test_a_wrong_model_fails_with_expected_and_found(tmp_path, kwargs, overrides, expected):
    model_dir = fake_model_dir(tmp_path, **kwargs)
    with pytest.raises(presets.PresetError, match=expected):
        resolve(model_dir, "methods=soft_logits", *overrides)


def test_kd_run_with_a_missing_teacher_fails_before_any_component(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    code = cli.main(["run", "--preset", "smoke", "--output-dir", str(tmp_path / "out"),
                     "--set", f"teacher.import_from={missing}"])
    assert code == 2
    assert f"teacher.import_from: {missing} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_kd_teachers_lists_the_recorded_teacher(smoke_run, capsys):
    _, paths = smoke_run
    capsys.readouterr()
    assert cli.main(["teachers", "--metadata", str(paths.metadata_path), "--json"]) == 0
    teachers = json.loads(capsys.readouterr().out)
    assert len(teachers) == 1 and teachers[0]["pipeline"] == paths.pipeline_name
    teacher = teachers[0]
    assert teacher["uri"].startswith(str(paths.pipeline_root / "Trainer.teacher"))
    history = json.load(open(os.path.join(teacher["uri"], HISTORY_FILE)))
    assert teacher["last"] == history[-1]["val_accuracy"] and teacher["config"]["role"] == "teacher"
    assert cli.main(["teachers", "--metadata", str(paths.metadata_path)]) == 0
    table = capsys.readouterr().out
    assert teacher["uri"] in table and "| resnet14 | 1 |" in table
    assert cli.main(["teachers", "--metadata", str(paths.metadata_path.parent / "missing.sqlite")]) == 2
