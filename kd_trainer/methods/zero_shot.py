"""Zero-shot KD (Nayak et al., ICML 2019): the student learns from data impressions alone."""

from __future__ import annotations

from kd_trainer.methods import catalog
from kd_trainer.methods.base import DistillationMethod
from kd_trainer.methods.soft_logits import softened_kl


class ZeroShot(DistillationMethod):
    """KL(p_t^T || p_s^T) at T = 20 on data impressions; no cross-entropy, no labels.

    The Trainer's training split is the DataImpressions component's output (impressions
    synthesised from the teacher, kd_trainer/impressions.py; the catalog entry's `trains_on`); the teacher runs on each
    augmented batch to give the soft targets, as in the paper. `temperature_squared`
    (default on, our choice: the paper does not say) multiplies the KL by T^2, which keeps
    the gradient's scale independent of T (Hinton et al.); without it, at T = 20 the
    preset's SGD learning rate would be 400 times too small for this loss.
    """

    name = "zero_shot"
    student_taps = ("logits",)
    teacher_taps = ("logits",)
    loss_term_names = ("kd",)

    Params = catalog.ZeroShotParams

    def loss_terms(self, labels, cross_entropy, student, teacher, stage="main"):
        p = self.params
        kd = softened_kl(teacher["logits"], student["logits"], p.temperature)
        return {"kd": kd * p.temperature ** 2 if p.temperature_squared else kd}
