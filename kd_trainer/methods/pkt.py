"""Probabilistic Knowledge Transfer (Passalis & Tefas, ECCV 2018): match the distribution of
cosine similarities between the samples of a batch in the embedding space."""

from __future__ import annotations

import tensorflow as tf

from kd_trainer.methods import catalog
from kd_trainer.methods.base import DistillationMethod

# RepDistiller `distiller_zoo/PKT.py` (the authors' code): eps = 1e-7 in norms and the KL.
EPSILON = 1e-7


def _conditional_probabilities(vectors: tf.Tensor) -> tf.Tensor:
    """[B, B]: cosine similarities mapped to [0, 1], each row normalised to sum to 1."""
    norms = tf.sqrt(tf.reduce_sum(tf.square(vectors), axis=1, keepdims=True))
    unit = vectors / (norms + EPSILON)
    similarity = (tf.matmul(unit, unit, transpose_b=True) + 1.0) / 2.0
    return similarity / tf.reduce_sum(similarity, axis=1, keepdims=True)


def pkt_loss(student: tf.Tensor, teacher: tf.Tensor) -> tf.Tensor:
    """mean over the B x B entries of p_t log((p_t + eps) / (p_s + eps))."""
    p_s, p_t = _conditional_probabilities(student), _conditional_probabilities(teacher)
    return tf.reduce_mean(p_t * tf.math.log((p_t + EPSILON) / (p_s + EPSILON)))


class PKT(DistillationMethod):
    """ce_weight * CE + weight * PKT on the pooled embedding (RepDistiller: feat[-1]), 1 / 30000."""

    name = "pkt"
    student_taps = ("embedding",)
    teacher_taps = ("embedding",)
    loss_term_names = ("ce", "pkt")

    Params = catalog.PKTParams

    def loss_terms(self, labels, cross_entropy, student, teacher, stage="main"):
        p = self.params
        return {"ce": p.ce_weight * cross_entropy,
                "pkt": p.weight * pkt_loss(student["embedding"], teacher["embedding"])}
