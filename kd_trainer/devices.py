"""The tf.distribute strategy a Trainer uses, from the GPUs its process sees.

The same image runs on CPU-only nodes, on one-GPU nodes and on nodes with several GPUs
(the preset's `resources` decide what a Trainer's pod gets), so the choice is made at
run time rather than configured.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence, TypeVar

import tensorflow as tf

Result = TypeVar("Result")

DEFAULT, ONE_DEVICE, MIRRORED = "default", "one_device", "mirrored"


def strategy_kind(gpus: Sequence[str]) -> str:
    """`mirrored` for several GPUs, `one_device` for one, `default` (no distribution) for none."""
    if len(gpus) > 1:
        return MIRRORED
    return ONE_DEVICE if gpus else DEFAULT


def visible_gpus() -> list[str]:
    return [device.name for device in tf.config.list_logical_devices("GPU")]


def distribution_strategy(gpus: Sequence[str] | None = None) -> tf.distribute.Strategy:
    """The strategy for `gpus` (device names; default: the GPUs TensorFlow sees)."""
    return _strategy(tuple(visible_gpus() if gpus is None else gpus))


@functools.cache
def _strategy(gpus: tuple[str, ...]) -> tf.distribute.Strategy:
    """One strategy per device set and process. Two MirroredStrategy objects over the same
    GPUs number their all-reduces alike, so the second one's collide with the first's when
    several Trainers run in one process (the local runner): "Shape mismatch in the collective"."""
    kind = strategy_kind(gpus)
    if kind == MIRRORED:
        return tf.distribute.MirroredStrategy(devices=list(gpus))
    if kind == ONE_DEVICE:
        return tf.distribute.OneDeviceStrategy(gpus[0])
    return tf.distribute.get_strategy()


def strategy_name(gpus: Sequence[str] | None = None) -> str:
    """What `distribution_strategy(gpus)` uses, e.g. `mirrored over 2 GPUs`, for the Trainer's records."""
    gpus = visible_gpus() if gpus is None else gpus
    kind = strategy_kind(gpus)
    if kind == MIRRORED:
        return f"{kind} over {len(gpus)} GPUs"
    return f"{kind} on {gpus[0]}" if kind == ONE_DEVICE else f"{kind} (no GPU)"


def in_distribution_strategy(function: Callable[..., Result]) -> Callable[..., Result]:
    """Runs `function` in the scope of the strategy for the visible GPUs: the models and
    optimizers it creates get their variables placed (or mirrored) there."""

    @functools.wraps(function)
    def scoped(*args, **kwargs) -> Result:
        with distribution_strategy().scope():
            return function(*args, **kwargs)

    return scoped
