"""Jacobian matching (Srinivas & Fleuret 2018) combined with attention transfer.

The student matches the direction of the teacher's input gradient d logit[y] / d x. The
training loop computes that gradient for both networks (the `input_gradient` pseudo-tap),
inside the student's gradient tape, so the loss back-propagates through the student's
input gradient (double back-propagation).
"""

from __future__ import annotations

import tensorflow as tf

from kd_trainer.methods.attention import TAPS, attention_terms
from kd_trainer.methods import catalog
from kd_trainer.methods.base import INPUT_GRADIENT, DistillationMethod


def jacobian_loss(student_gradient: tf.Tensor, teacher_gradient: tf.Tensor) -> tf.Tensor:
    """Batch mean of || J_s / ||J_s|| - J_t / ||J_t|| ||^2 over each example's input gradient."""
    batch = tf.shape(student_gradient)[0]
    s = tf.math.l2_normalize(tf.reshape(student_gradient, [batch, -1]), axis=1)
    t = tf.math.l2_normalize(tf.reshape(teacher_gradient, [batch, -1]), axis=1)
    return tf.reduce_mean(tf.reduce_sum(tf.square(s - t), axis=1))


class JacobianMatching(DistillationMethod):
    """CE + AT (beta = 1e3, as the AT method) + weight * Jacobian loss."""

    name = "jacobian"
    student_taps = (*TAPS, INPUT_GRADIENT)
    teacher_taps = (*TAPS, INPUT_GRADIENT)
    loss_term_names = ("ce", "at", "jacobian")

    Params = catalog.JacobianMatchingParams

    def loss_terms(self, labels, cross_entropy, student, teacher, stage="main"):
        return {
            "ce": cross_entropy,
            "at": attention_terms(student, teacher, self.params.at_beta),
            "jacobian": self.params.weight * jacobian_loss(student[INPUT_GRADIENT], teacher[INPUT_GRADIENT]),
        }
