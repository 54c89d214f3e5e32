"""Relational KD (Park et al. 2019): match distance and angle structure within the batch."""

from __future__ import annotations

import tensorflow as tf

from kd_trainer.methods import catalog
from kd_trainer.methods.base import DistillationMethod


def huber(x: tf.Tensor, y: tf.Tensor, delta: float = 1.0) -> tf.Tensor:
    """Mean Huber loss (smooth L1 for delta = 1): 0.5 e^2 for e = |x - y| < delta, else
    delta (e - 0.5 delta), written as a (e - 0.5 a) with a = min(e, delta).

    On the B x B x B angle tensors every elementwise op counts, so the gradient is given
    directly (d/dx = clip(x - y, -delta, delta) / size) instead of being traced through the
    piecewise form. First-order only: RKD never differentiates its loss twice."""

    @tf.custom_gradient
    def mean_huber(difference: tf.Tensor) -> tf.Tensor:
        clipped = tf.clip_by_value(difference, -delta, delta)
        error = tf.abs(difference)
        value = tf.reduce_mean(tf.abs(clipped) * (error - 0.5 * tf.abs(clipped)))

        def gradient(upstream: tf.Tensor) -> tf.Tensor:
            return clipped * (upstream / tf.cast(tf.size(difference), difference.dtype))
        return value, gradient

    return mean_huber(x - y)


def pairwise_distances(vectors: tf.Tensor) -> tf.Tensor:
    squared = tf.reduce_sum(tf.square(vectors), axis=1)
    gram = tf.matmul(vectors, vectors, transpose_b=True)
    squared_distances = tf.maximum(squared[:, None] + squared[None, :] - 2 * gram, 0.0)
    off_diagonal = 1.0 - tf.eye(tf.shape(vectors)[0], dtype=vectors.dtype)
    # sqrt has an infinite derivative at 0: take it on a safe value, then zero the diagonal.
    safe = tf.where(squared_distances > 0, squared_distances, tf.ones_like(squared_distances))
    return tf.sqrt(safe) * tf.cast(squared_distances > 0, vectors.dtype) * off_diagonal


def distance_potential(vectors: tf.Tensor) -> tf.Tensor:
    """Pairwise Euclidean distances divided by their mean over the non-zero pairs."""
    distances = pairwise_distances(vectors)
    positive = tf.cast(distances > 0, distances.dtype)
    mean = tf.reduce_sum(distances) / tf.maximum(tf.reduce_sum(positive), 1.0)
    return distances / mean


def seed_distance_potential(vectors: tf.Tensor) -> tf.Tensor:
    """The seed's distance potential (nets/Distillation.py:167-173): distances floored at
    sqrt(1e-12), the diagonal included, divided by (their mean over the entries > 0, i.e. all
    B x B of them, + 1e-8)."""
    squared = tf.reduce_sum(tf.square(vectors), axis=1)
    gram = tf.matmul(vectors, vectors, transpose_b=True)
    distances = tf.sqrt(tf.maximum(squared[:, None] + squared[None, :] - 2 * gram, 1e-12))
    mean = tf.reduce_sum(distances) / tf.reduce_sum(tf.cast(distances > 0, distances.dtype))
    return distances / (mean + 1e-8)


@tf.custom_gradient
def batched_gram(rows: tf.Tensor) -> tf.Tensor:
    """[J, I, D] -> [J, I, I]: rows @ rows^T per j. The product is symmetric, so its gradient
    (U + U^T) @ rows takes one batched matmul where the generic matmul gradient takes two."""
    def gradient(upstream: tf.Tensor) -> tf.Tensor:
        return tf.matmul(upstream + tf.linalg.matrix_transpose(upstream), rows)
    return tf.matmul(rows, rows, transpose_b=True), gradient


def angle_potential(vectors: tf.Tensor) -> tf.Tensor:
    """[B, B, B]: cosine of the angle at anchor j between (i - j) and (k - j)."""
    differences = tf.math.l2_normalize(vectors[None, :, :] - vectors[:, None, :], axis=2)  # [j, i, d]
    return batched_gram(differences)


class RKD(DistillationMethod):
    """CE + distance_weight * Huber(distance potentials) + angle_weight * Huber(angle potentials).

    Seed: on the logits, weights 100 / 200. The paper (and the seed's later fix) uses the
    pooled embedding with weights 25 / 50: `tap="embedding", distance_weight=25, angle_weight=50`.
    Vectors are L2-normalized per sample first. Distance potentials are normalised as in the
    seed (`distance_normalization="all_entries"`: the B x B entries, the diagonal floored at
    1e-6) or as in the paper (`"off_diagonal"`: the B^2 - B pairs, the diagonal zero).
    """

    name = "rkd"
    loss_term_names = ("ce", "rkd_distance", "rkd_angle")

    Params = catalog.RKDParams

    def __init__(self, params=None, name=None):
        super().__init__(params, name)
        self.student_taps = self.teacher_taps = (self.params.tap,)

    def loss_terms(self, labels, cross_entropy, student, teacher, stage="main"):
        s, t = student[self.params.tap], teacher[self.params.tap]
        if self.params.normalize:
            s, t = tf.math.l2_normalize(s, axis=1), tf.math.l2_normalize(t, axis=1)
        potential = seed_distance_potential if self.params.distance_normalization == "all_entries" else distance_potential
        return {
            "ce": cross_entropy,
            "rkd_distance": self.params.distance_weight * huber(potential(s), potential(t)),
            "rkd_angle": self.params.angle_weight * huber(angle_potential(s), angle_potential(t)),
        }
