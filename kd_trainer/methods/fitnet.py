"""FitNet (Romero et al. 2015): the student's intermediate features regress the teacher's."""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from kd_trainer.methods import catalog
from kd_trainer.methods.base import INIT_STAGE, MAIN_STAGE, DistillationMethod

TAPS = ("stage1", "stage2", "stage3")


def hint_loss(student: tf.Tensor, teacher: tf.Tensor) -> tf.Tensor:
    """mean((s - t)^2) over batch and feature positions."""
    return tf.reduce_mean(tf.square(student - teacher))


class FitNet(DistillationMethod):
    """Seed: an initialisation stage on the hint loss alone (sum over the 3 taps, no
    regressor since the seed's shapes match), then CE only. `hint_stage="main"` is
    RepDistiller's variant: one stage of CE + weight * hint (its `crd` weights: 100 on stage2
    with a regressor).

    `regressor=True` adds the paper's trainable regressor (3x3 conv + BN per tap) that maps
    the student's features to the teacher's width; it is used automatically when widths
    differ, since the hint loss is undefined otherwise.
    """

    name = "fitnet"
    student_taps = TAPS
    teacher_taps = TAPS
    loss_term_names = ("hint", "ce")
    stages = (INIT_STAGE, "main")

    Params = catalog.FitNetParams

    @property
    def hint_taps(self) -> tuple[str, ...]:
        return tuple(self.params.taps.split(","))

    def stage_epochs(self, main_epochs: int) -> dict[str, int]:
        if self.params.hint_stage == MAIN_STAGE:
            return {MAIN_STAGE: main_epochs}
        return super().stage_epochs(main_epochs)

    def build(self, student_shapes, teacher_shapes):
        self.regressors = {}
        for tap in self.hint_taps:
            if self.params.regressor or student_shapes[tap][-1] != teacher_shapes[tap][-1]:
                if student_shapes[tap][1:3] != teacher_shapes[tap][1:3]:
                    raise ValueError(f"fitnet: tap '{tap}' has spatial size {student_shapes[tap][1:3]} in the "
                                     f"student and {teacher_shapes[tap][1:3]} in the teacher")
                self.regressors[tap] = keras.Sequential(
                    [self.layers.conv_layer(teacher_shapes[tap][-1], 3, 1), self.layers.bn_layer()],
                    name=f"fitnet_regressor_{tap}")
                self.regressors[tap].build(student_shapes[tap])

    def weight_decay_losses(self):
        return [loss for regressor in self.regressors.values() for loss in regressor.losses]

    def loss_terms(self, labels, cross_entropy, student, teacher, stage="main"):
        hint_now = stage == (INIT_STAGE if self.params.hint_stage == INIT_STAGE else MAIN_STAGE)
        if not hint_now:
            return {"ce": cross_entropy}
        total = 0.0
        for tap in self.hint_taps:
            features = student[tap]
            if tap in self.regressors:
                features = self.regressors[tap](features, training=True)
            total += hint_loss(features, teacher[tap])
        hint = {"hint": self.params.weight * total}
        return hint if stage == INIT_STAGE else {"ce": cross_entropy, **hint}
