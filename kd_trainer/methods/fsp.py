"""FSP (Yim et al. 2017): match the "flow of solution procedure" Gram matrices between stages."""

from __future__ import annotations

import tensorflow as tf

from kd_trainer.methods import catalog
from kd_trainer.methods.base import INIT_STAGE, DistillationMethod

TAPS = ("stage1", "stage2", "stage3")


def fsp_matrix(first: tf.Tensor, second: tf.Tensor) -> tf.Tensor:
    """G = F_a^T F_b / (H_b W_b): [B, C_a, C_b]; F_a is 2x2 max-pooled while larger than F_b."""
    while first.shape[1] > second.shape[1]:
        first = tf.nn.max_pool2d(first, 2, 2, "VALID")
    height, width = second.shape[1], second.shape[2]
    return tf.einsum("bhwc,bhwd->bcd", first, second) / float(height * width)


class FSP(DistillationMethod):
    """Initialisation stage on weight * sum over the pairs (1,2), (2,3) of
    mean_B sum (G_t - G_s)^2 / 2 (weight 1e-3), then CE only."""

    name = "fsp"
    student_taps = TAPS
    teacher_taps = TAPS
    loss_term_names = ("fsp", "ce")
    stages = (INIT_STAGE, "main")

    Params = catalog.FSPParams

    def loss_terms(self, labels, cross_entropy, student, teacher, stage="main"):
        if stage != INIT_STAGE:
            return {"ce": cross_entropy}
        total = 0.0
        for a, b in zip(TAPS, TAPS[1:]):
            difference = fsp_matrix(teacher[a], teacher[b]) - fsp_matrix(student[a], student[b])
            total += tf.reduce_mean(tf.reduce_sum(tf.square(difference), axis=[1, 2]) / 2)
        return {"fsp": self.params.weight * total}
