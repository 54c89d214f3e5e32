"""The contract every distillation method implements."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import tensorflow as tf
import tf_keras as keras

from kd_trainer import gradients, models
from kd_trainer.methods import catalog
from kd_trainer.methods.catalog import NoParams, parse_params

TapDict = Mapping[str, tf.Tensor]
MAIN_STAGE = "main"
INIT_STAGE = "init"
# A method-owned stage that trains only the method's own modules on the teacher's taps
# (FT's paraphraser): the student does not run, so its weights and BN statistics stay put.
TEACHER_STAGE = "teacher_init"
# Pseudo-tap: d logit[true class] / d input, computed by the training loop on request.
INPUT_GRADIENT = "input_gradient"


def cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def as_float32(taps: TapDict) -> dict[str, tf.Tensor]:
    """Taps of a network computing in bfloat16/float16 (mixed precision), cast so every loss is float32."""
    return {name: tf.cast(value, tf.float32) for name, value in taps.items()}


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What a run tells its method before the networks are built (`DistillationMethod.prepare`)."""

    main_epochs: int
    seed: int = 0
    # Fine label of every training example by its `index` feature; only for methods that train
    # on catalog.INDEXED_EXAMPLES.
    example_labels: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class TaskTerms:
    """A training step's task objective (weight decay is added by the loop), split as a
    method's `task_gradients` may need it."""

    supervised: tf.Tensor | None  # the "ce" term, if the stage has one
    distillation: tf.Tensor | None  # the sum of the other terms, if any
    total: tf.Tensor  # their sum, on the step's tape


@dataclasses.dataclass(frozen=True)
class StepState:
    """Where training is, for a method's hooks."""

    epoch: tf.Variable  # float, 0-based, counted from the run's start
    stage_first_epoch: int  # the first epoch of the current stage


GradientFn = Callable[[tf.Tensor], gradients.Gradients]


class Partner(tf.Module):
    """A network trained with the student that stands in for the frozen teacher (DML's peer).

    A method that has one creates it in `DistillationMethod.partner`; the training step asks it
    for the step's teacher taps inside the student's gradient tape (`taps`), then lets it train
    (`update`), with the optimizer the loop gives it each stage. Subclasses say in which order.
    """

    def __init__(self, network: keras.Model):
        super().__init__(name="partner")
        self.network = network
        self.optimizer: keras.optimizers.Optimizer | None = None

    def start_stage(self, optimizer: keras.optimizers.Optimizer) -> None:
        self.optimizer = optimizer
        optimizer.build(self.network.trainable_variables)

    def taps(self, images: tf.Tensor, labels: tf.Tensor, student_taps: TapDict, tape: tf.GradientTape,
             stage: str) -> tuple[dict[str, tf.Tensor], tf.Tensor | None]:
        """(the taps the method reads as the teacher's, the partner's objective if it trained here)."""
        raise NotImplementedError

    def update(self, tape: tf.GradientTape, labels: tf.Tensor, taps: TapDict, distillation: tf.Tensor,
               stage: str) -> tf.Tensor | None:
        """Trains the partner after the student's objective is known; returns its objective, if it trained here."""
        raise NotImplementedError

    def checkpoint_objects(self, networks_only: bool) -> dict[str, Any]:
        """What an epoch checkpoint saves of the partner (under the names DML's checkpoints had
        before partners existed, so an interrupted run resumes across the change)."""
        objects: dict[str, Any] = {"peer": self.network}
        if not networks_only:
            objects["peer_optimizer"] = self.optimizer
        return objects


class DistillationMethod(tf.Module):
    """A distillation objective: which taps it reads, its hyper-parameters, its loss terms.

    Subclasses set `name`, `student_taps`, `teacher_taps`, `loss_term_names` and `Params`
    (a frozen dataclass whose field defaults are the seed project's defaults) and
    implement `loss_terms`. Trainable connectors are created in `build` as attributes of
    the method (a tf.Module), so `trainable_variables` finds them and the training loop
    trains them. Two-stage methods list `("init", "main")` in `stages` and take the length
    of the initialisation stage from their `init_epochs` parameter. A method with its own
    training mechanics overrides a hook: `task_gradients` (what the optimizer applies, e.g.
    KD-SVD's clipping) or `partner` (a network trained alongside, e.g. DML's peer). What the
    student trains on is its catalog entry's `trains_on`.
    """

    name: ClassVar[str]
    student_taps: ClassVar[tuple[str, ...]] = ("logits",)
    teacher_taps: ClassVar[tuple[str, ...]] = ()
    loss_term_names: ClassVar[tuple[str, ...]]
    stages: ClassVar[tuple[str, ...]] = (MAIN_STAGE,)
    # Loss warm-ups: `loss_terms` receives `epoch=` (a float tensor, 0-based, counted from the run's start).
    uses_epoch: ClassVar[bool] = False
    # Stages in `stages` that train only the method's modules on teacher taps (TEACHER_STAGE).
    teacher_stages: ClassVar[tuple[str, ...]] = ()
    Params: ClassVar[type] = NoParams

    def __init__(self, params: Mapping[str, Any] | None = None, name: str | None = None):
        """`name`: the catalog entry this instance runs as, when one class serves several entries."""
        super().__init__(name=name or type(self).name)
        self.name = name or type(self).name
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

    @property
    def trains_on(self) -> str:
        """What the student trains on (catalog.TRAINING_DATA), from the method's catalog entry; a
        method built outside the catalog (a benchmark's floor, an experiment) trains on examples."""
        entry = catalog.CATALOG.get(self.name)
        return entry.trains_on if entry is not None else catalog.EXAMPLES

    def partner(self, build_teacher_network: Callable[[], keras.Model]) -> Partner | None:
        """A network to train alongside the student in place of the frozen teacher (none by
        default); `build_teacher_network` builds a fresh one of the teacher's architecture."""
        return None

    def task_gradients(self, gradient: GradientFn, terms: TaskTerms, step: StepState) -> gradients.Gradients:
        """The gradients the optimizer applies, before weight decay, given `gradient(target)`
        (d target / d the trained variables). Default: the gradient of the whole task objective."""
        return gradient(terms.total)

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
