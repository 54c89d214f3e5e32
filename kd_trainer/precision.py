"""Numeric precision and XLA compilation of a Trainer, decided where it runs.

`training.mixed_precision` and `training.jit_compile` default to "auto": float32 without
XLA on CPU (where bfloat16/float16 kernels and XLA do not make the step faster), and on
GPUs mixed precision (bfloat16 from compute capability 8.0, Ampere, else float16 with loss
scaling) with the train step compiled by XLA. Only the networks compute in the lower
precision: their variables, every loss and the method's connectors stay float32
(Distiller casts the taps to float32 before any loss).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import tensorflow as tf
import tf_keras as keras

from kd_trainer.config import AUTO, FLOAT32, JIT_CHOICES, MIXED_BFLOAT16, MIXED_FLOAT16, PRECISIONS  # noqa: F401
BFLOAT16_COMPUTE_CAPABILITY = (8, 0)


def gpu_compute_capabilities() -> list[tuple[int, int]]:
    """(major, minor) of each GPU TensorFlow sees; empty without one."""
    return [tuple(tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0)))
            for gpu in tf.config.list_physical_devices("GPU")]


def resolve_precision(setting: str, capabilities: Sequence[tuple[int, int]] | None = None) -> str:
    """The Keras policy name for `setting` on GPUs of these compute capabilities (default: the visible ones)."""
    if setting not in PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {PRECISIONS}, got {setting!r}")
    if setting != AUTO:
        return setting
    capabilities = gpu_compute_capabilities() if capabilities is None else capabilities
    if not capabilities:
        return FLOAT32
    return MIXED_BFLOAT16 if min(capabilities) >= BFLOAT16_COMPUTE_CAPABILITY else MIXED_FLOAT16


def resolve_jit_compile(setting: str, gpus: int | None = None) -> bool:
    """Whether to compile the train step with XLA: "auto" means on GPUs only."""
    if setting not in JIT_CHOICES:
        raise ValueError(f"jit_compile must be one of {JIT_CHOICES}, got {setting!r}")
    if setting != AUTO:
        return setting == "on"
    return (len(tf.config.list_physical_devices("GPU")) if gpus is None else gpus) > 0


@contextlib.contextmanager
def policy(name: str) -> Iterator[None]:
    """Keras layers created inside compute in `name`'s dtype; the global policy is restored afterwards,
    so other Trainers of the same process are unaffected."""
    previous = keras.mixed_precision.global_policy()
    # A policy equal to floatx is restored as "no policy set" (None), which keeps following floatx:
    # pinning "float32" would silently override a later keras.backend.set_floatx("float64").
    restored = None if previous.name == keras.backend.floatx() else previous
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(restored)


def optimizer_for(precision: str, optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """float16 needs dynamic loss scaling (its range is narrow); bfloat16 and float32 do not."""
    return keras.mixed_precision.LossScaleOptimizer(optimizer) if precision == MIXED_FLOAT16 else optimizer
