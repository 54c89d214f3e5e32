"""DIST (Huang, You, Wang, Qian & Xu, NeurIPS 2022): match the relations between softened
predictions, not the predictions themselves, by Pearson correlation across classes
(inter-class) and across the batch (intra-class)."""

from __future__ import annotations

import tensorflow as tf

from kd_trainer.methods import catalog
from kd_trainer.methods.base import DistillationMethod
from kd_trainer.methods.logit_standardization import softened

# hunto/image_classification_sota `lib/models/losses/dist_kd.py`: cosine denominators get + 1e-8.
COSINE_EPSILON = 1e-8


def _norm(x: tf.Tensor) -> tf.Tensor:
    """Row L2 norms, with gradient 0 (not NaN) at a zero row, as torch's norm."""
    squared = tf.reduce_sum(tf.square(x), axis=1)
    positive = squared > 0
    return tf.where(positive, tf.sqrt(tf.where(positive, squared, tf.ones_like(squared))), tf.zeros_like(squared))


def pearson_rows(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Per row: the Pearson correlation of a's row with b's row."""
    a = a - tf.reduce_mean(a, axis=1, keepdims=True)
    b = b - tf.reduce_mean(b, axis=1, keepdims=True)
    return tf.reduce_sum(a * b, axis=1) / (_norm(a) * _norm(b) + COSINE_EPSILON)


def dist_relations(student_logits: tf.Tensor, teacher_logits: tf.Tensor, temperature: float,
                   standardized: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
    """(inter, intra), each multiplied by T^2: 1 - mean Pearson correlation of the softened
    predictions per sample (over classes), and per class (over the batch)."""
    p_s = tf.nn.softmax(softened(student_logits, temperature, standardized))
    p_t = tf.nn.softmax(softened(teacher_logits, temperature, standardized))
    inter = 1.0 - tf.reduce_mean(pearson_rows(p_s, p_t))
    intra = 1.0 - tf.reduce_mean(pearson_rows(tf.transpose(p_s), tf.transpose(p_t)))
    return inter * temperature ** 2, intra * temperature ** 2


class DIST(DistillationMethod):
    """ce_weight * CE + kd_weight * (inter_weight * inter + intra_weight * intra), the official
    CIFAR-100 setting (1, 2, beta = gamma = 1, T = 4)."""

    name = "dist"
    student_taps = ("logits",)
    teacher_taps = ("logits",)
    loss_term_names = ("ce", "dist_inter", "dist_intra")

    Params = catalog.DISTParams

    def loss_terms(self, labels, cross_entropy, student, teacher, stage="main"):
        p = self.params
        inter, intra = dist_relations(student["logits"], teacher["logits"], p.temperature, p.logit_standardization)
        return {"ce": p.ce_weight * cross_entropy, "dist_inter": p.kd_weight * p.inter_weight * inter,
                "dist_intra": p.kd_weight * p.intra_weight * intra}
