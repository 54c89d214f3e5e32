"""The contract every distillation method implements."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import tensorflow as tf

from kd_trainer import models
from kd_trainer.methods.catalog import NoParams, parse_params

TapDict = Mapping[str, tf.Tensor]
MAIN_STAGE = "main"
INIT_STAGE = "init"
# Pseudo-tap: d logit[true class] / d input, computed by the training loop on request.
INPUT_GRADIENT = "input_gradient"


class DistillationMethod(tf.Module):
    """A distillation objective: which taps it reads, its hyper-parameters, its loss terms.

    Subclasses set `name`, `student_taps`, `teacher_taps`, `loss_term_names` and `Params`
    (a frozen dataclass whose field defaults are the seed project's defaults) and
    implement `loss_terms`. Trainable connectors are created in `build` as attributes of
    the method (a tf.Module), so `trainable_variables` finds them and the training loop
    trains them. Two-stage methods list `("init", "main")` in `stages` and take the length
    of the initialisation stage from their `init_epochs` parameter.
    """

    name: ClassVar[str]
    student_taps: ClassVar[tuple[str, ...]] = ("logits",)
    teacher_taps: ClassVar[tuple[str, ...]] = ()
    loss_term_names: ClassVar[tuple[str, ...]]
    stages: ClassVar[tuple[str, ...]] = (MAIN_STAGE,)
    # KD-SVD: clip the distillation gradient per variable to |grad CE| * sigmoid(epoch).
    clips_distillation_gradient: ClassVar[bool] = False
    # DML: a trainable peer of the teacher's architecture replaces the frozen teacher.
    trains_peer: ClassVar[bool] = False
    # DML: the peer takes its step first and the student's step sees the updated peer.
    peer_steps_first: bool = False
    # Zero-shot KD: the training split holds data impressions (data.IMPRESSION_FEATURES), not CIFAR images.
    trains_on_impressions: ClassVar[bool] = False
    Params: ClassVar[type] = NoParams

    def __init__(self, params: Mapping[str, Any] | None = None):
        super().__init__(name=self.name)
        self.params = parse_params(self.Params, params or {}, f"method '{self.name}'")
        # Connectors' layer factory; the training loop gives the student's (default: no weight decay).
        self.layers = models.layer_factory(0.0)

    def weight_decay_losses(self) -> list[tf.Tensor]:
        """The connectors' weight-decay terms (none by default)."""
        return []

    @property
    def needs_teacher(self) -> bool:
        """Whether the frozen teacher (the Trainer's base_model) must run every step."""
        return bool(self.teacher_taps)

    def stage_epochs(self, main_epochs: int) -> dict[str, int]:
        """Epochs per stage, in order."""
        return {stage: (self.params.init_epochs if stage == INIT_STAGE else main_epochs) for stage in self.stages}

    def follow_training(self, epoch: tf.Variable, epochs: int | None) -> None:
        """Receives the Distiller's epoch counter (0-based, assigned at each epoch's start) and
        the run's main-stage epoch count (None where unknown), for losses that change during
        training (DKD's warm-up), which keep them (read in the graph: no Python work per step).
        Ignored by default, so other methods' checkpoints do not gain the counter."""

    def build(self, student_shapes: Mapping[str, tf.TensorShape], teacher_shapes: Mapping[str, tf.TensorShape]) -> None:
        """Creates trainable connectors once the tap shapes are known (none by default)."""

    def loss_terms(self, labels: tf.Tensor, cross_entropy: tf.Tensor, student: TapDict, teacher: TapDict,
                   stage: str = MAIN_STAGE) -> dict[str, tf.Tensor]:
        """Weighted scalar terms whose sum (plus weight decay) is the student's objective.

        Terms other than "ce" form the distillation part (used for gradient clipping).
        """
        raise NotImplementedError
