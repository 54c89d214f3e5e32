"""The Keras model that trains a student, with or without a frozen teacher.

Keeping distillation inside `train_step` lets `fit` provide callbacks, progress output and
TensorBoard. The teacher is any callable mapping normalized images to a tap dict (the
`feature_taps` function of a teacher export); it runs in inference mode and is never
updated, so only the student and the method's connectors move. DML's peer is the one
exception: a trainable network with its own optimizer.
"""

from __future__ import annotations

from typing import Callable, Mapping

import tensorflow as tf
import tf_keras as keras

from kd_trainer import models
from kd_trainer.methods.base import INPUT_GRADIENT, MAIN_STAGE, DistillationMethod

TeacherFn = Callable[[tf.Tensor], Mapping[str, tf.Tensor]]


def cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


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


def as_float32(taps: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Taps of a network computing in bfloat16/float16 (mixed precision), cast so every loss is float32."""
    return {name: tf.cast(value, tf.float32) for name, value in taps.items()}


def _add(first: tf.Tensor | None, second: tf.Tensor | None) -> tf.Tensor | None:
    if first is None:
        return second
    return first if second is None else first + second


class Distiller(keras.Model):
    """Trains `student` on CE, or on the objective of `method` given a frozen `teacher`.

    `stage` selects the method's stage (retraced at each `compile`). A stage's objective is
    its task terms (the distillation term alone while initialising) plus weight decay; as in
    the seed (op_util.py:47-55, 76-83), only the variables the task terms reach move, and
    only those are decayed (e.g. the classifier neither moves nor decays while initialising,
    nor do AB's connectors afterwards). `connector_layers` (models.layer_factory) gives the
    method's connectors the student's initializer and weight decay (default: no decay).
    Metrics: `loss` (the full objective when training, CE when evaluating), `accuracy`,
    `top5_accuracy`, and one metric per loss term.
    """

    def __init__(self, student: keras.Model, method: DistillationMethod | None = None,
                 teacher: TeacherFn | None = None, peer: keras.Model | None = None,
                 connector_layers: models._Layers | None = None, **kwargs):
        super().__init__(**kwargs)
        if method is not None and method.needs_teacher and teacher is None:
            raise ValueError(f"method '{method.name}' needs a teacher model (the Trainer's base_model)")
        if method is not None and getattr(method, "trains_peer", False) and peer is None:
            raise ValueError(f"method '{method.name}' needs a peer network")
        self.student = student
        self.method = method
        self.teacher = teacher
        self.peer = peer
        self.stage = MAIN_STAGE
        self.peer_optimizer: keras.optimizers.Optimizer | None = None
        # Read by the gradient clipping of KD-SVD and DKD's warm-up; set by an epoch callback.
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
            reference = teacher or peer
            if reference is not None:
                # In a replica: a teacher loaded under MirroredStrategy runs only there.
                strategy = tf.distribute.get_strategy()
                taps = strategy.run(reference, args=(tf.zeros((1, *student.input_shape[1:])),))
                teacher_shapes = {k: strategy.experimental_local_results(v)[0].shape for k, v in taps.items()}
            method.build({k: v.shape for k, v in student.output.items()}, teacher_shapes)

    def compile(self, optimizer, peer_optimizer: keras.optimizers.Optimizer | None = None, **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        if self.peer is not None and peer_optimizer is None:
            raise ValueError("a Distiller with a peer network needs a peer_optimizer")
        self.peer_optimizer = peer_optimizer

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
        if self.method is not None and self.method.uses_example_index:
            if not extra:
                raise ValueError(f"method '{self.method.name}' needs (images, labels, example indices) batches "
                                 "(data.load_indexed_records); got (images, labels)")
            inputs["index"] = extra[0]
        if self.method is not None and self.method.uses_epoch:
            inputs["epoch"] = self.epoch
        return inputs

    def train_step(self, data):
        images, labels, *extra = data
        if self.method is not None and self.stage in self.method.teacher_stages:
            return self._teacher_stage_step(images, labels, self._step_inputs(tuple(extra)))
        teacher_taps = self._teacher_taps(images, labels)
        clipping = self.method is not None and self.method.clips_distillation_gradient
        peer_first = self.peer is not None and self.method.peer_steps_first
        with tf.GradientTape(persistent=True) as tape:
            student_taps = self._student_taps(images, labels)
            if peer_first:
                with tape.stop_recording():
                    peer_objective = self._peer_step(images, labels, student_taps["logits"])
                    teacher_taps = self._peer_taps_keeping_statistics(images)
            elif self.peer is not None:
                teacher_taps = as_float32(self.peer(images, training=True))
            ce = cross_entropy(labels, student_taps["logits"])
            if self.method is None:
                terms = {"ce": ce}
            else:
                terms = self.method.loss_terms(labels, ce, student_taps, teacher_taps, stage=self.stage,
                                               **self._step_inputs(tuple(extra)))
            supervised = terms.get("ce")
            distillation_terms = [value for name, value in terms.items() if name != "ce"]
            distillation = tf.add_n(distillation_terms) if distillation_terms else None
            task = _add(supervised, distillation)
            if self.peer is not None and not peer_first:
                peer_task = cross_entropy(labels, teacher_taps["logits"]) + distillation
        variables = self.trainable_student_variables()
        if clipping and supervised is not None and distillation is not None:
            task_gradients = self._clipped_gradients(tape, supervised, distillation, variables)
        else:
            task_gradients = self._gradients(tape, task, variables, self.optimizer)
        decay, gradients = self._with_weight_decay(task_gradients, variables, self.student_weight_decay_losses)
        objective = task + decay
        if self.peer is not None and not peer_first:
            peer_variables = self.peer.trainable_variables
            peer_decay, peer_gradients = self._with_weight_decay(
                self._gradients(tape, peer_task, peer_variables, self.peer_optimizer), peer_variables,
                lambda: self.peer.losses)
            peer_objective = peer_task + peer_decay
        self._record_non_finite(objective if self.peer is None else objective + peer_objective)
        # Variables the stage's task terms do not reach get no gradient and do not move.
        gradients = self._replica_share(gradients)
        self.optimizer.apply_gradients([(g, v) for g, v in zip(gradients, variables) if g is not None])
        if self.peer is not None and not peer_first:
            self.peer_optimizer.apply_gradients(zip(self._replica_share(peer_gradients), peer_variables))
        self.loss_tracker.update_state(objective)
        for name, value in terms.items():
            self.term_trackers[name].update_state(value)
        self.accuracy.update_state(labels, student_taps["logits"])
        self.top5_accuracy.update_state(labels, student_taps["logits"])
        return {m.name: m.result() for m in self.metrics}

    def _peer_step(self, images, labels, student_logits) -> tf.Tensor:
        """DML, peer first (the seed's first session call, train_w_distill.py:120-124): the
        peer's SGD step on CE + weight decay + D against the student's current outputs.
        Returns the peer's objective."""
        student_logits = tf.stop_gradient(student_logits)
        with tf.GradientTape() as tape:
            peer_logits = self.peer(images, training=True)["logits"]
            peer_terms = self.method.loss_terms(labels, cross_entropy(labels, peer_logits), {"logits": student_logits},
                                                {"logits": peer_logits}, stage=self.stage)
            peer_task = tf.add_n(list(peer_terms.values()))
        variables = self.peer.trainable_variables
        decay, gradients = self._with_weight_decay(self._gradients(tape, peer_task, variables, self.peer_optimizer),
                                                   variables,
                                                   lambda: self.peer.losses)
        self.peer_optimizer.apply_gradients(zip(self._replica_share(gradients), variables))
        return peer_task + decay

    def _peer_taps_keeping_statistics(self, images) -> dict[str, tf.Tensor]:
        """The updated peer's training-mode outputs, for the student's step (the seed's second
        session call). That call does not run the peer's BN updates, so the moving statistics
        this forward pass writes are put back."""
        statistics = self.peer.non_trainable_variables
        saved = [tf.identity(variable) for variable in statistics]
        taps = as_float32(self.peer(images, training=True))
        with tf.control_dependencies(list(taps.values())):
            for variable, value in zip(statistics, saved):
                variable.assign(value)
        return {name: tf.stop_gradient(value) for name, value in taps.items()}

    @staticmethod
    def _with_weight_decay(task_gradients: list[tf.Tensor | None], variables: list[tf.Variable], decay_losses
                           ) -> tuple[tf.Tensor, list[tf.Tensor | None]]:
        """(weight decay, task gradients plus the decay's gradient): decay reaches only the
        variables that have a task gradient (the seed, op_util.py:47-55, 76-83)."""
        with tf.GradientTape() as tape:
            terms = decay_losses()
            decay = tf.add_n(terms) if terms else tf.constant(0.0)
        decay_gradients = tape.gradient(decay, variables)
        return decay, [None if g is None else _add(g, d) for g, d in zip(task_gradients, decay_gradients)]

    def _teacher_stage_step(self, images, labels, inputs: dict[str, tf.Tensor]):
        """A method-owned stage on the teacher (FT's paraphraser): only the method's modules
        train, on its terms from the teacher's taps; the student neither runs nor changes."""
        teacher_taps = self._teacher_taps(images, labels)
        with tf.GradientTape() as tape:
            terms = self.method.loss_terms(labels, tf.constant(0.0), {}, teacher_taps, stage=self.stage, **inputs)
            objective = tf.add_n(list(terms.values()))
        self._record_non_finite(objective)
        variables = list(self.method.trainable_variables)
        gradients = self._replica_share(self._gradients(tape, objective, variables, self.optimizer))
        self.optimizer.apply_gradients([(g, v) for g, v in zip(gradients, variables) if g is not None])
        self.loss_tracker.update_state(objective)
        for name, value in terms.items():
            self.term_trackers[name].update_state(value)
        return {m.name: m.result() for m in self.metrics}

    @staticmethod
    def _gradients(tape: tf.GradientTape, target: tf.Tensor, variables: list[tf.Variable],
                   optimizer: keras.optimizers.Optimizer) -> list[tf.Tensor | None]:
        """d target / d variables; under mixed_float16 (a LossScaleOptimizer) computed at the loss
        scale, so small float16 gradients do not flush to zero, then unscaled."""
        if isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer):
            scale = tf.cast(optimizer.loss_scale, target.dtype)
            return optimizer.get_unscaled_gradients(tape.gradient(target, variables, output_gradients=scale))
        return tape.gradient(target, variables)

    def _replica_share(self, gradients: list[tf.Tensor | None]) -> list[tf.Tensor | None]:
        """Under MirroredStrategy the optimizer sums the replicas' gradients, each of the mean
        over its part of the batch: dividing by the replica count makes that sum the gradient
        of the whole batch's mean (as on one device; Keras' compiled losses do the same)."""
        replicas = self.distribute_strategy.num_replicas_in_sync
        return [g if g is None or replicas == 1 else g / replicas for g in gradients]

    def _record_non_finite(self, objective: tf.Tensor) -> None:
        first = self.non_finite_step < 0
        diverged = tf.logical_not(tf.reduce_all(tf.math.is_finite(objective)))
        self.non_finite_step.assign(tf.where(tf.logical_and(first, diverged), self.optimizer.iterations,
                                             self.non_finite_step))

    def _clipped_gradients(self, tape, supervised, distillation, variables):
        """KD-SVD: per variable, the distillation gradient's norm is capped at the CE
        gradient's norm (weight decay excluded, as in the seed's op_util.py:80) times
        sigmoid(epoch of the stage), then the two are added."""
        supervised_gradients = self._gradients(tape, supervised, variables, self.optimizer)
        distillation_gradients = self._gradients(tape, distillation, variables, self.optimizer)
        ramp = tf.sigmoid(self.epoch - float(self.stage_first_epoch))
        combined = []
        for g_supervised, g_distillation in zip(supervised_gradients, distillation_gradients):
            if g_distillation is not None and g_supervised is not None:
                g_distillation = tf.clip_by_norm(g_distillation, tf.norm(g_supervised) * ramp)
            combined.append(_add(g_supervised, g_distillation))
        return combined

    def test_step(self, data):
        images, labels = data
        logits = tf.cast(self.student(images, training=False)["logits"], tf.float32)
        self.loss_tracker.update_state(cross_entropy(labels, logits), sample_weight=tf.shape(labels)[0])
        self.accuracy.update_state(labels, logits)
        self.top5_accuracy.update_state(labels, logits)
        return {m.name: m.result() for m in (self.loss_tracker, self.accuracy, self.top5_accuracy)}
