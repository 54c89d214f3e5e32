"""The contract every distillation method implements."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

import numpy as np
import tensorflow as tf

from kd_trainer import models
from kd_trainer.methods.catalog import NoParams, parse_params

TapDict = Mapping[str, tf.Tensor]
MAIN_STAGE = "main"
INIT_STAGE = "init"
# A method-owned stage that trains only the method's own modules on the teacher's taps
# (FT's paraphraser): the student does not run, so its weights and BN statistics stay put.
TEACHER_STAGE = "teacher_init"
# Pseudo-tap: d logit[true class] / d input, computed by the training loop on request.
INPUT_GRADIENT = "input_gradient"


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What a run tells its method before the networks are built (`DistillationMethod.prepare`)."""

    main_epochs: int
    seed: int = 0
    # Fine label of every training example by its `index` feature; only for methods with
    # `uses_example_index`.
    example_labels: np.ndarray | None = None


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
    # CRD: the batches carry each example's `index`, passed to `loss_terms` as `index=`, and
    # `prepare` receives every training example's label.
    uses_example_index: ClassVar[bool] = False
    # Loss warm-ups: `loss_terms` receives `epoch=` (a float tensor, 0-based, counted from the run's start).
    uses_epoch: ClassVar[bool] = False
    # Stages in `stages` that train only the method's modules on teacher taps (TEACHER_STAGE).
    teacher_stages: ClassVar[tuple[str, ...]] = ()
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
        return {stage: (self.params.init_epochs if stage in (INIT_STAGE, TEACHER_STAGE) else main_epochs)
                for stage in self.stages}

    def prepare(self, run: RunInfo) -> None:
        """Takes what the run knows before the networks exist (nothing by default)."""

    def stage_learning_rate(self, stage: str, configured: float) -> float:
        """The constant learning rate of a stage other than the main one (the configured one by default)."""
        return configured

    def build(self, student_shapes: Mapping[str, tf.TensorShape], teacher_shapes: Mapping[str, tf.TensorShape]) -> None:
        """Creates trainable connectors once the tap shapes are known (none by default)."""

    def loss_terms(self, labels: tf.Tensor, cross_entropy: tf.Tensor, student: TapDict, teacher: TapDict,
                   stage: str = MAIN_STAGE) -> dict[str, tf.Tensor]:
        """Weighted scalar terms whose sum (plus weight decay) is the student's objective.

        Terms other than "ce" form the distillation part (used for gradient clipping).
        """
        raise NotImplementedError
