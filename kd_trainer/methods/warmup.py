"""Loss warm-up schedules (ReviewKD, DKD): a distillation term is scaled
by min(epoch / warmup, 1), counting epochs from 1 as mdistiller does, with the warm-up
length given on the reference 240-epoch schedule and scaled to the run's length."""

from __future__ import annotations

import tensorflow as tf

# Length of the schedule the official warm-ups are given for (mdistiller's CIFAR-100 recipe).
REFERENCE_EPOCHS = 240


def scaled_warmup_epochs(reference_warmup_epochs: float, run_epochs: int,
                         reference_epochs: int = REFERENCE_EPOCHS) -> float:
    """The warm-up length for a run of `run_epochs` with the same fraction of the schedule."""
    if run_epochs <= 0:
        raise ValueError(f"run_epochs must be positive, got {run_epochs}")
    return reference_warmup_epochs * run_epochs / reference_epochs


def linear_warmup(epoch: tf.Tensor, warmup_epochs: float) -> tf.Tensor:
    """min((epoch + 1) / warmup_epochs, 1) for a 0-based epoch; 1 without warm-up."""
    if warmup_epochs <= 0:
        return tf.ones_like(epoch)
    return tf.minimum((epoch + 1.0) / warmup_epochs, 1.0)
