"""Gradient arithmetic shared by the training step and by networks a method trains itself
(DML's peer): loss scaling, the seed's weight decay, and the replicas' share."""

from __future__ import annotations

from typing import Callable

import tensorflow as tf
import tf_keras as keras

Gradients = list  # of tf.Tensor | None, one per variable


def add(first: tf.Tensor | None, second: tf.Tensor | None) -> tf.Tensor | None:
    """first + second, where either may be absent."""
    if first is None:
        return second
    return first if second is None else first + second


def of(tape: tf.GradientTape, target: tf.Tensor, variables: list[tf.Variable],
       optimizer: keras.optimizers.Optimizer) -> Gradients:
    """d target / d variables; under mixed_float16 (a LossScaleOptimizer) computed at the loss
    scale, so small float16 gradients do not flush to zero, then unscaled."""
    if isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer):
        scale = tf.cast(optimizer.loss_scale, target.dtype)
        return optimizer.get_unscaled_gradients(tape.gradient(target, variables, output_gradients=scale))
    return tape.gradient(target, variables)


def with_weight_decay(task_gradients: Gradients, variables: list[tf.Variable],
                      decay_losses: Callable[[], list[tf.Tensor]]) -> tuple[tf.Tensor, Gradients]:
    """(weight decay, task gradients plus the decay's gradient): decay reaches only the
    variables that have a task gradient (the seed, op_util.py:47-55, 76-83)."""
    with tf.GradientTape() as tape:
        terms = decay_losses()
        decay = tf.add_n(terms) if terms else tf.constant(0.0)
    decay_gradients = tape.gradient(decay, variables)
    return decay, [None if g is None else add(g, d) for g, d in zip(task_gradients, decay_gradients)]


def replica_share(gradients: Gradients) -> Gradients:
    """Under MirroredStrategy the optimizer sums the replicas' gradients, each of the mean
    over its part of the batch: dividing by the replica count makes that sum the gradient
    of the whole batch's mean (as on one device; Keras' compiled losses do the same)."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return [g if g is None or replicas == 1 else g / replicas for g in gradients]


def apply(optimizer: keras.optimizers.Optimizer, gradients: Gradients, variables: list[tf.Variable]) -> None:
    """Applies the replicas' share of the gradients; variables without one do not move."""
    optimizer.apply_gradients([(g, v) for g, v in zip(replica_share(gradients), variables) if g is not None])
