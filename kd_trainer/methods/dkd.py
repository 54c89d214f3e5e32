"""Decoupled KD (Zhao, Cui, Song, Qiu & Liang, CVPR 2022): classical KD split into a
target-class term (TCKD) and a non-target-class term (NCKD), weighted independently."""

from __future__ import annotations

import tensorflow as tf

from kd_trainer.methods import catalog
from kd_trainer.methods.base import DistillationMethod, RunInfo
from kd_trainer.methods.logit_standardization import softened
from kd_trainer.methods.warmup import linear_warmup

# mdistiller masks the target class out of the non-target softmax by subtracting 1000 from
# its softened logit: exp(-1000) is exactly 0 in float32 and float64.
MASK_OFFSET = 1000.0


def _binary_log_probabilities(log_probabilities: tf.Tensor, target_mask: tf.Tensor) -> tf.Tensor:
    """[B, 2]: log p(target class), log p(any other class), computed in log space."""
    target = tf.reduce_sum(log_probabilities * target_mask, axis=-1)
    others = tf.reduce_logsumexp(log_probabilities - MASK_OFFSET * target_mask, axis=-1)
    return tf.stack([target, others], axis=-1)


def _kl(log_p: tf.Tensor, log_q: tf.Tensor) -> tf.Tensor:
    """Batch mean of sum p (log p - log q)."""
    return tf.reduce_mean(tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1))


def dkd_losses(student_logits: tf.Tensor, teacher_logits: tf.Tensor, labels: tf.Tensor, temperature: float,
               standardized: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
    """(TCKD, NCKD), each multiplied by T^2 and averaged over the batch.

    TCKD: KL between the teacher's and the student's binary (target, non-target) probabilities
    at temperature T. NCKD: KL between their distributions over the non-target classes.
    """
    s = softened(student_logits, temperature, standardized)
    t = softened(teacher_logits, temperature, standardized)
    target_mask = tf.one_hot(labels, tf.shape(s)[-1], dtype=s.dtype)
    tckd = _kl(_binary_log_probabilities(tf.nn.log_softmax(t), target_mask),
               _binary_log_probabilities(tf.nn.log_softmax(s), target_mask))
    nckd = _kl(tf.nn.log_softmax(t - MASK_OFFSET * target_mask), tf.nn.log_softmax(s - MASK_OFFSET * target_mask))
    return tckd * temperature ** 2, nckd * temperature ** 2


class DKD(DistillationMethod):
    """ce_weight * CE + warm-up * (tckd_weight * TCKD + nckd_weight * NCKD); mdistiller defaults
    (1, 1, 8, T = 4).

    Warm-up: mdistiller multiplies the KD terms by min(epoch / 20, 1) with epochs counted from
    1 in a 240-epoch run; here methods/warmup.py's linear warm-up over warmup_fraction of the
    run's main-stage epochs, so the warm-up keeps its share of any run's length. The factor
    changes once per epoch, as in the source.
    """

    name = "dkd"
    student_taps = ("logits",)
    teacher_taps = ("logits",)
    loss_term_names = ("ce", "tckd", "nckd")
    uses_epoch = True

    Params = catalog.DKDParams

    def prepare(self, run: RunInfo) -> None:
        self.warmup_epochs = self.params.warmup_fraction * run.main_epochs

    def loss_terms(self, labels, cross_entropy, student, teacher, stage="main", epoch=None):
        p = self.params
        tckd, nckd = dkd_losses(student["logits"], teacher["logits"], labels, p.temperature,
                                p.logit_standardization)
        ramp = tf.constant(1.0, tckd.dtype)
        if p.warmup_fraction > 0:
            if epoch is None or not hasattr(self, "warmup_epochs"):
                raise ValueError(f"method 'dkd': the warm-up (warmup_fraction {p.warmup_fraction}) needs the "
                                 "run's epoch count and the current epoch: call prepare(RunInfo(main_epochs=...)) "
                                 "and pass epoch=, as the Distiller does; or set warmup_fraction=0")
            ramp = linear_warmup(tf.cast(epoch, tckd.dtype), self.warmup_epochs)
        return {"ce": p.ce_weight * cross_entropy, "tckd": ramp * p.tckd_weight * tckd,
                "nckd": ramp * p.nckd_weight * nckd}
