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

    `stage` selects the method's stage (retraced at each `compile`). In the initialisation
    stage the objective is the distillation term alone, without weight decay, and only the
    variables it reaches move. Metrics: `loss` (the full objective when training, CE when
    evaluating), `accuracy`, `top5_accuracy`, and one metric per loss term.
    """

    def __init__(self, student: keras.Model, method: DistillationMethod | None = None,
                 teacher: TeacherFn | None = None, peer: keras.Model | None = None, **kwargs):
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
        # Read by the gradient clipping of KD-SVD; set by an epoch callback.
        self.epoch = tf.Variable(0.0, trainable=False, name="epoch")
        # The optimizer step (within the stage) of the first non-finite objective, -1 if none;
        # written in the graph so detecting divergence costs no host sync per step.
        self.non_finite_step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="non_finite_step")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.top5_accuracy = keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy")
        term_names = method.loss_term_names if method is not None else ("ce",)
        self.term_trackers = {name: keras.metrics.Mean(name=name) for name in term_names}
        if method is not None:
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

    def train_step(self, data):
        images, labels = data
        teacher_taps = self._teacher_taps(images, labels)
        initialising = self.stage != MAIN_STAGE
        clipping = self.method is not None and self.method.clips_distillation_gradient
        with tf.GradientTape(persistent=self.peer is not None or clipping) as tape:
            student_taps = self._student_taps(images, labels)
            if self.peer is not None:
                teacher_taps = as_float32(self.peer(images, training=True))
            ce = cross_entropy(labels, student_taps["logits"])
            if self.method is None:
                terms = {"ce": ce}
            else:
                terms = self.method.loss_terms(labels, ce, student_taps, teacher_taps, stage=self.stage)
            supervised_terms = ([terms["ce"]] if "ce" in terms else []) + ([] if initialising else self.student.losses)
            supervised = tf.add_n(supervised_terms) if supervised_terms else None
            distillation_terms = [value for name, value in terms.items() if name != "ce"]
            distillation = tf.add_n(distillation_terms) if distillation_terms else None
            objective = _add(supervised, distillation)
            if self.peer is not None:
                peer_objective = (cross_entropy(labels, teacher_taps["logits"]) + tf.add_n(self.peer.losses)
                                  + distillation)
        self._record_non_finite(objective if self.peer is None else objective + peer_objective)
        variables = self.trainable_student_variables()
        if clipping and supervised is not None and distillation is not None:
            gradients = self._clipped_gradients(tape, supervised, distillation, variables)
        else:
            gradients = self._gradients(tape, objective, variables, self.optimizer)
        # Variables the stage's objective does not reach (e.g. the classifier while
        # initialising, AB's connectors afterwards) get no gradient and do not move.
        gradients = self._replica_share(gradients)
        self.optimizer.apply_gradients([(g, v) for g, v in zip(gradients, variables) if g is not None])
        if self.peer is not None:
            peer_variables = self.peer.trainable_variables
            self.peer_optimizer.apply_gradients(
                zip(self._replica_share(self._gradients(tape, peer_objective, peer_variables, self.peer_optimizer)),
                    peer_variables))
        self.loss_tracker.update_state(objective)
        for name, value in terms.items():
            self.term_trackers[name].update_state(value)
        self.accuracy.update_state(labels, student_taps["logits"])
        self.top5_accuracy.update_state(labels, student_taps["logits"])
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
        """KD-SVD: per variable, the distillation gradient's norm is capped at the supervised
        gradient's norm times sigmoid(epoch), then the two are added."""
        supervised_gradients = self._gradients(tape, supervised, variables, self.optimizer)
        distillation_gradients = self._gradients(tape, distillation, variables, self.optimizer)
        ramp = tf.sigmoid(self.epoch)
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
