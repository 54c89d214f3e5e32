"""Attention transfer (Zagoruyko & Komodakis 2017): match normalized spatial attention maps."""

from __future__ import annotations

import tensorflow as tf

from kd_trainer.methods import catalog
from kd_trainer.methods.base import DistillationMethod

TAPS = ("stage1", "stage2", "stage3")


def attention_map(features: tf.Tensor) -> tf.Tensor:
    """[B, H, W, C] -> [B, H*W]: channel mean of F^2, flattened, L2-normalized per sample."""
    energy = tf.reduce_mean(tf.square(features), axis=-1)
    flat = tf.reshape(energy, [tf.shape(energy)[0], -1])
    return tf.math.l2_normalize(flat, axis=1)


def attention_loss(student: tf.Tensor, teacher: tf.Tensor, beta: float) -> tf.Tensor:
    """beta / 2 * mean((Q_s - Q_t)^2) for one tap."""
    return beta / 2 * tf.reduce_mean(tf.square(attention_map(student) - attention_map(teacher)))


def attention_terms(student, teacher, beta: float) -> tf.Tensor:
    return tf.add_n([attention_loss(student[tap], teacher[tap], beta) for tap in TAPS])


class AttentionTransfer(DistillationMethod):
    """CE + beta/2 * sum over the 3 stage outputs of the attention-map MSE (beta = 1e3)."""

    name = "at"
    student_taps = TAPS
    teacher_taps = TAPS
    loss_term_names = ("ce", "at")

    Params = catalog.AttentionTransferParams

    def loss_terms(self, labels, cross_entropy, student, teacher, stage="main"):
        return {"ce": cross_entropy, "at": attention_terms(student, teacher, self.params.beta)}
