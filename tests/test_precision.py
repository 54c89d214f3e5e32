"""Mixed precision and XLA settings (kd_trainer/precision.py): resolution, and training with them on CPU;
oneDNN turned on by `kd`."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from kd_trainer import models, precision
from kd_trainer.config import TrainingConfig
from kd_trainer.methods.base import cross_entropy
from conftest import REPO_ROOT
from method_harness import build_distiller
from pipelines import presets


def test_auto_resolves_to_float32_without_xla_on_this_cpu_machine():
    assert tf.config.list_physical_devices("GPU") == []
    assert precision.resolve_precision("auto") == "float32"
    assert precision.resolve_jit_compile("auto") is False
    assert presets.resolve("quick").student.mixed_precision == "auto"


def test_auto_on_gpus_picks_bfloat16_from_ampere_and_float16_before():
    assert precision.resolve_precision("auto", [(8, 0), (9, 0)]) == "mixed_bfloat16"
    assert precision.resolve_precision("auto", [(7, 5)]) == "mixed_float16"
    assert precision.resolve_precision("auto", [(8, 6), (7, 0)]) == "mixed_float16"
    assert precision.resolve_precision("float32", [(9, 0)]) == "float32"
    assert precision.resolve_jit_compile("auto", gpus=1) is True
    assert precision.resolve_jit_compile("off", gpus=1) is False
    assert precision.resolve_jit_compile("on", gpus=0) is True


def test_unknown_values_are_rejected_with_the_valid_ones():
    with pytest.raises(ValueError, match="mixed_precision must be one of auto, float32, mixed_bfloat16, mixed_float16, "
                                         "got 'fp8'"):
        TrainingConfig(model="resnet8", epochs=1, mixed_precision="fp8")
    with pytest.raises(presets.PresetError, match="jit_compile must be one of"):
        presets.resolve("smoke", ["student.jit_compile=yes"])


def test_policy_is_restored_after_building():
    with precision.policy("mixed_bfloat16"):
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"
    # Restored as "no policy set": a later float64 floatx (the golden tests') still reaches new layers.
    keras.backend.set_floatx("float64")
    try:
        assert keras.layers.Dense(2).dtype_policy.name == "float64"
    finally:
        keras.backend.set_floatx("float32")


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_on_cpu_with_float32_losses(policy):
    compute_dtype = policy.removeprefix("mixed_")
    optimizer = precision.optimizer_for(policy, keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True))
    assert isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer) == (policy == "mixed_float16")
    harness = build_distiller("soft_logits", policy=policy, optimizer=optimizer, run_eagerly=False)
    distiller, student, method = harness.distiller, harness.student, harness.method
    images = tf.random.normal((16, *models.INPUT_SHAPE))
    labels = tf.random.uniform((16,), 0, models.NUM_CLASSES, tf.int32)

    # The networks compute in the low precision, their variables stay float32 ...
    assert student(images)["logits"].dtype == compute_dtype
    assert all(v.dtype == tf.float32 for v in student.trainable_variables)
    # ... and every loss is float32, from taps cast to float32.
    student_taps = distiller._student_taps(images, labels)
    teacher_taps = distiller._teacher_taps(images, labels)
    assert {t.dtype for t in [*student_taps.values(), *teacher_taps.values()]} == {tf.float32}
    ce = cross_entropy(labels, student_taps["logits"])
    terms = method.loss_terms(labels, ce, student_taps, teacher_taps)
    assert {t.dtype for t in terms.values()} == {tf.float32}

    before = [v.numpy().copy() for v in student.trainable_variables]
    history = distiller.fit(tf.data.Dataset.from_tensors((images, labels)).repeat(3), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    moved = sum(not np.array_equal(b, v.numpy()) for b, v in zip(before, student.trainable_variables))
    assert moved == len(before)


@pytest.mark.parametrize("given, expected", [(None, "1"), ("0", "0")])
def test_kd_turns_on_onednn_before_tensorflow_loads_unless_told_otherwise(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if given is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = given
    probe = ("import sys, os; import pipelines.cli; assert 'tensorflow' not in sys.modules; "
             "print(os.environ['TF_ENABLE_ONEDNN_OPTS'])")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == expected
