"""Soft-logits (Hinton, Vinyals & Dean 2015): match the teacher's softened class distribution."""

from __future__ import annotations

import tensorflow as tf

from kd_trainer.methods import catalog
from kd_trainer.methods.base import DistillationMethod
from kd_trainer.methods.logit_standardization import softened


def softened_kl(teacher_logits: tf.Tensor, student_logits: tf.Tensor, temperature: float,
                standardized: bool = False) -> tf.Tensor:
    """Batch mean of KL(softmax(t / T) || softmax(s / T)); with `standardized`, of the
    z-scored logits (logit standardization)."""
    log_p_teacher = tf.nn.log_softmax(softened(teacher_logits, temperature, standardized))
    log_p_student = tf.nn.log_softmax(softened(student_logits, temperature, standardized))
    per_example = tf.reduce_sum(tf.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
    return tf.reduce_mean(per_example)


class SoftLogits(DistillationMethod):
    """total = ce_weight * CE + kd_weight * KL at temperature T (seed: 0.7 / 0.3, T = 3).

    The seed does not multiply the KL by T^2 (the paper and most libraries do, with T = 4);
    `temperature_squared=True` gives that variant. `logit_standardization=True` z-scores
    both sides' logits first (Sun et al. 2024; its CIFAR-100 setting: T = 2, kd_weight 9,
    ce_weight 0.1, with T^2).
    """

    name = "soft_logits"
    student_taps = ("logits",)
    teacher_taps = ("logits",)
    loss_term_names = ("ce", "kd")

    Params = catalog.SoftLogitsParams

    def loss_terms(self, labels, cross_entropy, student, teacher, stage="main"):
        p = self.params
        kd = softened_kl(teacher["logits"], student["logits"], p.temperature, p.logit_standardization)
        if p.temperature_squared:
            kd = kd * p.temperature ** 2
        return {"ce": p.ce_weight * cross_entropy, "kd": p.kd_weight * kd}
