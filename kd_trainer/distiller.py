"""The Keras model that trains a student, with or without a frozen teacher.

Keeping distillation inside `train_step` lets `fit` provide callbacks, progress output and
TensorBoard. The teacher is any callable mapping normalized images to a tap dict (the
`feature_taps` function of a teacher export); it runs in inference mode and is never
updated, so only the student and the method's connectors move. The step names no method:
a method changes what the optimizer applies through its `task_gradients` hook, and a method
that trains a network alongside the student (DML's peer) supplies it as its `partner`.
"""

from __future__ import annotations

from typing import Callable, Mapping

import tensorflow as tf
import tf_keras as keras

from kd_trainer import gradients, models
from kd_trainer.methods.base import (INPUT_GRADIENT, MAIN_STAGE, DistillationMethod, Partner, StepState, TaskTerms,
                                     as_float32, cross_entropy)
from kd_trainer.methods.catalog import INDEXED_EXAMPLES

TeacherFn = Callable[[tf.Tensor], Mapping[str, tf.Tensor]]


def with_input_gradient(network: TeacherFn, images: tf.Tensor, labels: tf.Tensor) -> dict[str, tf.Tensor]:
    """Runs `network` and adds d logit[true class] / d images as the `input_gradient` tap.

    Called inside an outer tape, the gradient stays differentiable (double back-prop).
    """
    with tf.GradientTape() as tape:
        tape.watch(images)
        taps = dict(network(images))
        true_logits = tf.gather(taps["logits"], labels, axis=1, batch_dims=1)
    taps[INPUT_GRADIENT] = tape.gradient(true_logits, images)
    return taps


class Distiller(keras.Model):
    """Trains `student` on CE, or on the objective of `method` given a frozen `teacher`.

    `stage` selects the method's stage (retraced at each `compile`). A stage's objective is
    its task terms (the distillation term alone while initialising) plus weight decay; as in
    the seed (op_util.py:47-55, 76-83), only the variables the task terms reach move, and
    only those are decayed (e.g. the classifier neither moves nor decays while initialising,
    nor do AB's connectors afterwards). `connector_layers` (models.layer_factory) gives the
    method's connectors the student's initializer and weight decay (default: no decay).
    `partner`: the network the method trains alongside the student in place of the teacher
    (`DistillationMethod.partner`). Metrics: `loss` (the full objective when training, CE when
    evaluating), `accuracy`, `top5_accuracy`, and one metric per loss term.
    """

    def __init__(self, student: keras.Model, method: DistillationMethod | None = None,
                 teacher: TeacherFn | None = None, partner: Partner | None = None,
                 connector_layers: models._Layers | None = None, **kwargs):
        super().__init__(**kwargs)
        if method is not None and method.needs_teacher and teacher is None:
            raise ValueError(f"method '{method.name}' needs a teacher model (the Trainer's base_model)")
        self.student = student
        self.method = method
        self.teacher = teacher
        self.partner = partner
        self.stage = MAIN_STAGE
        # Read by methods' hooks (KD-SVD's clipping ramp, DKD's warm-up); set by an epoch callback.
        self.epoch = tf.Variable(0.0, trainable=False, name="epoch")
        # First epoch of the current stage (set with `stage`): the clipping ramp counts from it.
        self.stage_first_epoch = 0
        # The optimizer step (within the stage) of the first non-finite objective, -1 if none;
        # written in the graph so detecting divergence costs no host sync per step.
        self.non_finite_step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="non_finite_step")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.top5_accuracy = keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy")
        term_names = method.loss_term_names if method is not None else ("ce",)
        self.term_trackers = {name: keras.metrics.Mean(name=name) for name in term_names}
        if method is not None:
            if connector_layers is not None:
                method.layers = connector_layers
            teacher_shapes = {}
            reference = teacher or (partner.network if partner is not None else None)
            if reference is not None:
                # In a replica: a teacher loaded under MirroredStrategy runs only there.
                strategy = tf.distribute.get_strategy()
                taps = strategy.run(reference, args=(tf.zeros((1, *student.input_shape[1:])),))
                teacher_shapes = {k: strategy.experimental_local_results(v)[0].shape for k, v in taps.items()}
            method.build({k: v.shape for k, v in student.output.items()}, teacher_shapes)

    def compile(self, optimizer, partner_optimizer: keras.optimizers.Optimizer | None = None, **kwargs):
        """`partner_optimizer`: the partner's for this stage (required when there is a partner)."""
        super().compile(optimizer=optimizer, **kwargs)
        if self.partner is not None:
            if partner_optimizer is None:
                raise ValueError("a Distiller with a partner network needs a partner_optimizer")
            self.partner.start_stage(partner_optimizer)

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy, self.top5_accuracy, *self.term_trackers.values()]

    def call(self, images, training=False):
        return self.student(images, training=training)["logits"]

    def _wants(self, taps: tuple[str, ...], name: str) -> bool:
        return self.method is not None and name in taps

    def _teacher_taps(self, images, labels) -> dict[str, tf.Tensor]:
        if self.method is None or not self.method.needs_teacher:
            return {}
        if self._wants(self.method.teacher_taps, INPUT_GRADIENT):
            taps = with_input_gradient(self.teacher, images, labels)
        else:
            taps = dict(self.teacher(images))
        return {k: tf.stop_gradient(v) for k, v in as_float32(taps).items()}

    def _student_taps(self, images, labels) -> dict[str, tf.Tensor]:
        def forward(x):
            return self.student(x, training=True)

        if self._wants(self.method.student_taps if self.method else (), INPUT_GRADIENT):
            return as_float32(with_input_gradient(forward, images, labels))
        return as_float32(forward(images))

    def trainable_student_variables(self) -> list[tf.Variable]:
        extra = list(self.method.trainable_variables) if self.method is not None else []
        return self.student.trainable_variables + extra

    def student_weight_decay_losses(self) -> list[tf.Tensor]:
        """Weight-decay terms of the student and the method's connectors."""
        return self.student.losses + (self.method.weight_decay_losses() if self.method is not None else [])

    def _step_inputs(self, extra: tuple[tf.Tensor, ...]) -> dict[str, tf.Tensor]:
        """The keyword inputs of `loss_terms` the method asks for: the batch's example indices, the epoch."""
        inputs = {}
        if self.method is not None and self.method.trains_on == INDEXED_EXAMPLES:
            if not extra:
                raise ValueError(f"method '{self.method.name}' needs (images, labels, example indices) batches "
                                 "(data.load_indexed_records); got (images, labels)")
            inputs["index"] = extra[0]
        if self.method is not None and self.method.uses_epoch:
            inputs["epoch"] = self.epoch
        return inputs

    def train_step(self, data):
        images, labels, *extra = data
        inputs = self._step_inputs(tuple(extra))
        if self.method is not None and self.stage in self.method.teacher_stages:
            return self._teacher_stage_step(images, labels, inputs)
        teacher_taps = self._teacher_taps(images, labels)
        partner_objective = None
        with tf.GradientTape(persistent=True) as tape:
            student_taps = self._student_taps(images, labels)
            if self.partner is not None:
                teacher_taps, partner_objective = self.partner.taps(images, labels, student_taps, tape, self.stage)
            ce = cross_entropy(labels, student_taps["logits"])
            if self.method is None:
                terms = {"ce": ce}
            else:
                terms = self.method.loss_terms(labels, ce, student_taps, teacher_taps, stage=self.stage, **inputs)
            supervised = terms.get("ce")
            distillation_terms = [value for name, value in terms.items() if name != "ce"]
            distillation = tf.add_n(distillation_terms) if distillation_terms else None
            task = TaskTerms(supervised, distillation, gradients.add(supervised, distillation))
        variables = self.trainable_student_variables()
        def gradient(target: tf.Tensor) -> gradients.Gradients:
            return gradients.of(tape, target, variables, self.optimizer)

        if self.method is None:
            task_gradients = gradient(task.total)
        else:
            task_gradients = self.method.task_gradients(gradient, task, StepState(self.epoch, self.stage_first_epoch))
        decay, student_gradients = gradients.with_weight_decay(task_gradients, variables,
                                                               self.student_weight_decay_losses)
        objective = task.total + decay
        if self.partner is not None:
            updated = self.partner.update(tape, labels, teacher_taps, distillation, self.stage)
            partner_objective = updated if updated is not None else partner_objective
        self._record_non_finite(objective if partner_objective is None else objective + partner_objective)
        # Variables the stage's task terms do not reach get no gradient and do not move.
        gradients.apply(self.optimizer, student_gradients, variables)
        self.loss_tracker.update_state(objective)
        for name, value in terms.items():
            self.term_trackers[name].update_state(value)
        self.accuracy.update_state(labels, student_taps["logits"])
        self.top5_accuracy.update_state(labels, student_taps["logits"])
        return {m.name: m.result() for m in self.metrics}

    def _teacher_stage_step(self, images, labels, inputs: dict[str, tf.Tensor]):
        """A method-owned stage on the teacher (FT's paraphraser): only the method's modules
        train, on its terms from the teacher's taps; the student neither runs nor changes."""
        teacher_taps = self._teacher_taps(images, labels)
        with tf.GradientTape() as tape:
            terms = self.method.loss_terms(labels, tf.constant(0.0), {}, teacher_taps, stage=self.stage, **inputs)
            objective = tf.add_n(list(terms.values()))
        self._record_non_finite(objective)
        variables = list(self.method.trainable_variables)
        gradients.apply(self.optimizer, gradients.of(tape, objective, variables, self.optimizer), variables)
        self.loss_tracker.update_state(objective)
        for name, value in terms.items():
            self.term_trackers[name].update_state(value)
        return {m.name: m.result() for m in self.metrics}

    def _record_non_finite(self, objective: tf.Tensor) -> None:
        first = self.non_finite_step < 0
        diverged = tf.logical_not(tf.reduce_all(tf.math.is_finite(objective)))
        self.non_finite_step.assign(tf.where(tf.logical_and(first, diverged), self.optimizer.iterations,
                                             self.non_finite_step))

    def test_step(self, data):
        images, labels = data
        logits = tf.cast(self.student(images, training=False)["logits"], tf.float32)
        self.loss_tracker.update_state(cross_entropy(labels, logits), sample_weight=tf.shape(labels)[0])
        self.accuracy.update_state(labels, logits)
        self.top5_accuracy.update_state(labels, logits)
        return {m.name: m.result() for m in (self.loss_tracker, self.accuracy, self.top5_accuracy)}
