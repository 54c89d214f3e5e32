"""Similarity-preserving KD (Tung & Mori, ICCV 2019): inputs that produce similar activations
in the teacher should produce similar activations in the student."""

from __future__ import annotations

import tensorflow as tf

from kd_trainer.methods import catalog
from kd_trainer.methods.base import DistillationMethod

TAP = "stage3"  # RepDistiller: feat[-2], the last stage's output after its ReLU
# torch.nn.functional.normalize divides by max(||row||, 1e-12).
NORM_FLOOR = 1e-12


def similarity_matrix(features: tf.Tensor) -> tf.Tensor:
    """[B, B]: the batch's Gram matrix of flattened features, each row L2-normalised."""
    flat = tf.reshape(features, [tf.shape(features)[0], -1])
    gram = tf.matmul(flat, flat, transpose_b=True)
    norms = tf.sqrt(tf.reduce_sum(tf.square(gram), axis=1, keepdims=True))
    return gram / tf.maximum(norms, NORM_FLOOR)


def sp_loss(student: tf.Tensor, teacher: tf.Tensor) -> tf.Tensor:
    """sum (G_t - G_s)^2 / B^2."""
    batch = tf.cast(tf.shape(student)[0], student.dtype)
    return tf.reduce_sum(tf.square(similarity_matrix(teacher) - similarity_matrix(student))) / (batch * batch)


class SimilarityPreserving(DistillationMethod):
    """ce_weight * CE + weight * SP on the last stage's output (RepDistiller: 1 / 3000). Student
    and teacher may differ in width and resolution: only B x B matrices are compared."""

    name = "sp"
    student_taps = (TAP,)
    teacher_taps = (TAP,)
    loss_term_names = ("ce", "sp")

    Params = catalog.SPParams

    def loss_terms(self, labels, cross_entropy, student, teacher, stage="main"):
        p = self.params
        return {"ce": p.ce_weight * cross_entropy, "sp": p.weight * sp_loss(student[TAP], teacher[TAP])}
