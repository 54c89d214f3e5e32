"""Activation boundaries (Heo et al. 2019): the student reproduces which neurons the teacher fires."""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from kd_trainer.methods import catalog
from kd_trainer.methods.base import INIT_STAGE, DistillationMethod
from kd_trainer.methods.soft_logits import softened_kl

TAP_WEIGHTS = {"stage1": 1.0, "stage2": 2.0, "stage3": 4.0}  # shallow to deep, as in the seed


def activation_boundary_loss(response: tf.Tensor, teacher: tf.Tensor, margin: float) -> tf.Tensor:
    """Hinge-like transfer loss, summed over H, W, C and averaged over the batch.

    (r + m)^2 where the teacher neuron is off (t <= 0) but r > -m, and (r - m)^2 where it
    is on (t > 0) but r <= m.
    """
    active = tf.cast(teacher > 0, response.dtype)
    off_violation = tf.square(response + margin) * tf.cast(response > -margin, response.dtype) * (1 - active)
    on_violation = tf.square(response - margin) * tf.cast(response <= margin, response.dtype) * active
    per_example = tf.reduce_sum(off_violation + on_violation, axis=list(range(1, len(response.shape))))
    return tf.reduce_mean(per_example)


class ActivationBoundary(DistillationMethod):
    """Initialisation stage on weight * sum_k w_k * AB loss (w = 1, 2, 4; weight 3e-3) through a
    trainable connector per tap (1x1 conv without bias + BN; as in the seed: BN epsilon 1e-5,
    the student's initializer and weight decay, nets/Distillation.py:146-147), then ce_weight * CE +
    kd_weight * soft-logits KD at T (0.7 / 0.3, T = 3).

    Taps are the pre-ReLU stage outputs, as in the paper (the seed fed post-ReLU features
    by mistake; `preact=False` reproduces that). The teacher's on/off pattern is the same
    either way, since t > 0 exactly where ReLU(t) > 0.
    """

    name = "ab"
    loss_term_names = ("ab", "ce", "kd")
    stages = (INIT_STAGE, "main")

    Params = catalog.ActivationBoundaryParams

    def __init__(self, params=None, name=None):
        super().__init__(params, name)
        suffix = "_preact" if self.params.preact else ""
        self.tap_names = {stage: stage + suffix for stage in TAP_WEIGHTS}
        self.student_taps = (*self.tap_names.values(), "logits")
        self.teacher_taps = (*self.tap_names.values(), "logits")

    def build(self, student_shapes, teacher_shapes):
        self.connectors = {}
        for stage, tap in self.tap_names.items():
            connector = keras.Sequential([self.layers.conv_layer(teacher_shapes[tap][-1], 1, 1), self.layers.bn_layer()],
                                         name=f"ab_connector_{stage}")
            connector.build(student_shapes[tap])
            self.connectors[stage] = connector

    def weight_decay_losses(self):
        return [loss for connector in self.connectors.values() for loss in connector.losses]

    def loss_terms(self, labels, cross_entropy, student, teacher, stage="main"):
        p = self.params
        if stage == INIT_STAGE:
            total = tf.add_n([
                weight * activation_boundary_loss(self.connectors[name](student[self.tap_names[name]], training=True),
                                                  teacher[self.tap_names[name]], p.margin)
                for name, weight in TAP_WEIGHTS.items()])
            return {"ab": p.weight * total}
        kd = softened_kl(teacher["logits"], student["logits"], p.temperature)
        return {"ce": p.ce_weight * cross_entropy, "kd": p.kd_weight * kd}
