"""run_fn with a fake FnArgs: trains, writes history and config, exports answering signatures."""

import json
import os
import types

import numpy as np
import pytest
import tensorflow as tf

from components.cifar_example_gen import to_example
from kd_data import cifar100
from kd_trainer import data
from kd_trainer.contract import (CONFIG_FILE, HISTORY_FILE, LOGITS_KEY, PREDICTION_KEY, SERVING_FOLDER,
                                 SERVING_SIGNATURE, TAPS_SIGNATURE)
from kd_trainer.run_fn import run_fn


@pytest.fixture(scope="module")
def example_files(tmp_path_factory, tiny_archive):
    root = tmp_path_factory.mktemp("examples")
    files = {}
    for split, official in (("train", "train"), ("eval", "test")):
        loaded = cifar100.load_split(tiny_archive, official)
        path = str(root / f"{split}.gz")
        with tf.io.TFRecordWriter(path, "GZIP") as writer:
            for i in range(len(loaded)):
                writer.write(to_example(loaded.images[i], loaded.fine_labels[i], loaded.coarse_labels[i],
                                        loaded.filenames[i]))
        files[split] = path
    return files


def fn_args(tmp_path, files, name, config, base_model=None):
    model_dir = tmp_path / name / "model"
    return types.SimpleNamespace(
        train_files=[files["train"]], eval_files=[files["eval"]], custom_config=config, base_model=base_model,
        serving_model_dir=str(model_dir / SERVING_FOLDER), model_run_dir=str(tmp_path / name / "model_run"))


TRAINING = {"model": "resnet8", "epochs": 2, "batch_size": 64, "eval_batch_size": 50}


@pytest.fixture(scope="module")
def teacher_export(tmp_path_factory, example_files):
    args = fn_args(tmp_path_factory.mktemp("teacher"), example_files, "teacher", {"role": "teacher", **TRAINING})
    run_fn(args)
    return args


def test_teacher_trains_and_records_history(teacher_export):
    model_dir = os.path.dirname(teacher_export.serving_model_dir)
    history = json.load(open(os.path.join(model_dir, HISTORY_FILE)))
    assert [h["epoch"] for h in history] == [1, 2]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch_seconds"} <= set(history[0])
    assert all(np.isfinite(h["loss"]) for h in history)
    config = json.load(open(os.path.join(model_dir, CONFIG_FILE)))
    assert config["role"] == "teacher" and config["num_weights_without_bn"] == 83_220
    assert tf.io.gfile.glob(os.path.join(teacher_export.model_run_dir, "train", "events.out.tfevents.*"))


def test_serving_signature_answers_serialized_examples(teacher_export, example_files):
    loaded = tf.saved_model.load(teacher_export.serving_model_dir)
    serve = loaded.signatures[SERVING_SIGNATURE]
    records = [r.numpy() for r in tf.data.TFRecordDataset(example_files["eval"], "GZIP").take(5)]
    outputs = serve(examples=tf.constant(records))
    assert outputs[LOGITS_KEY].shape == (5, 100)
    np.testing.assert_allclose(outputs[PREDICTION_KEY].numpy().sum(axis=1), 1.0, rtol=1e-5)
    # The taps function sees the same network: its logits on the decoded images agree.
    images, _ = data.parse_examples(tf.constant(records))
    taps = loaded.signatures[TAPS_SIGNATURE](images=data.normalize(images))
    np.testing.assert_allclose(taps["logits"].numpy(), outputs[LOGITS_KEY].numpy(), rtol=1e-4, atol=1e-4)
    assert taps["stage3"].shape == (5, 8, 8, 64)


def test_a_student_normalizing_otherwise_than_its_teacher_fails_before_training(tmp_path, teacher_export,
                                                                             example_files):
    config = {"role": "student", "method": "soft_logits", **TRAINING, "epochs": 1, "input_normalization": "seed_bgr"}
    args = fn_args(tmp_path, example_files, "student", config, base_model=teacher_export.serving_model_dir)
    with pytest.raises(ValueError, match="the teacher expects images normalized as 'cifar100_rgb', this student's "
                                         "input_normalization is 'seed_bgr'"):
        run_fn(args)
    assert not os.path.exists(args.serving_model_dir)


def test_student_distills_from_base_model_only(tmp_path, teacher_export, example_files):
    config = {"role": "student", "method": "soft_logits", **TRAINING, "epochs": 1}
    args = fn_args(tmp_path, example_files, "student", config, base_model=teacher_export.serving_model_dir)
    run_fn(args)
    history = json.load(open(os.path.join(os.path.dirname(args.serving_model_dir), HISTORY_FILE)))
    assert history[0]["kd"] > 0 and history[0]["ce"] > 0
    assert tf.saved_model.load(args.serving_model_dir).signatures[SERVING_SIGNATURE] is not None


def test_student_without_teacher_fails_clearly(tmp_path, example_files):
    args = fn_args(tmp_path, example_files, "student", {"role": "student", "method": "soft_logits", **TRAINING})
    with pytest.raises(ValueError, match="method 'soft_logits' needs the teacher as the Trainer's base_model"):
        run_fn(args)


def test_invalid_config_is_rejected(tmp_path, example_files):
    args = fn_args(tmp_path, example_files, "x", {"role": "teacher", **TRAINING, "epochs": 0, "optimiser": "adam"})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['optimiser'\]"):
        run_fn(args)
    args.custom_config = {"role": "teacher", **TRAINING, "epochs": 0}
    with pytest.raises(ValueError, match=r"epochs must be an integer in \[1, 1000\], got 0"):
        run_fn(args)


def test_two_stage_method_switches_stage_and_restarts_the_schedule(tmp_path, teacher_export, example_files):
    config = {"role": "student", "method": "fitnet", "method_params": {"init_epochs": 1}, **TRAINING,
              "epochs": 2, "learning_rate": 0.05, "lr_decay_at": [0.5]}
    args = fn_args(tmp_path, example_files, "fitnet", config, base_model=teacher_export.serving_model_dir)
    run_fn(args)
    history = json.load(open(os.path.join(os.path.dirname(args.serving_model_dir), HISTORY_FILE)))
    assert [(h["epoch"], h["stage"]) for h in history] == [(1, "init"), (2, "main"), (3, "main")]
    assert [h["learning_rate"] for h in history] == pytest.approx([0.05, 0.05, 0.005])
    assert history[0]["hint"] > 0 and history[0]["ce"] == 0 and history[1]["hint"] == 0 and history[1]["ce"] > 0


def test_augmentation_crops_a_window_of_the_padded_maybe_flipped_image():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(64, 32, 32, 3), dtype=np.uint8)
    augmented = data.augment_batch(tf.constant(images), tf.constant([1, 2], tf.int64)).numpy()
    padded = np.pad(images, [(0, 0), (4, 4), (4, 4), (0, 0)], mode="reflect")
    flipped = np.pad(images[:, :, ::-1], [(0, 0), (4, 4), (4, 4), (0, 0)], mode="reflect")
    offsets, flips = set(), 0
    for i in range(len(images)):
        matches = [(source_flipped, dy, dx) for source_flipped, source in ((False, padded), (True, flipped))
                   for dy in range(9) for dx in range(9)
                   if np.array_equal(source[i, dy:dy + 32, dx:dx + 32], augmented[i])]
        assert matches, f"image {i} is not a crop of its padded image"
        flips += matches[0][0]
        offsets.add(matches[0][1:])
    assert 16 < flips < 48 and len(offsets) > 20  # draws differ per image
    again = data.augment_batch(tf.constant(images), tf.constant([1, 2], tf.int64)).numpy()
    np.testing.assert_array_equal(again, augmented)


def test_dkd_student_gets_the_runs_epochs_for_its_warmup(tmp_path, teacher_export, example_files):
    """run_fn prepares the method with the Trainer's epochs: without them DKD's warm-up raises."""
    config = {"role": "student", "method": "dkd", "method_params": {"warmup_fraction": 1.0}, **TRAINING, "epochs": 2}
    args = fn_args(tmp_path, example_files, "dkd", config, base_model=teacher_export.serving_model_dir)
    run_fn(args)
    history = json.load(open(os.path.join(os.path.dirname(args.serving_model_dir), HISTORY_FILE)))
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(h["tckd"] > 0 and h["nckd"] > 0 for h in history)
