"""The Keras model that trains a student, with or without a frozen teacher.

Keeping distillation inside `train_step` lets `fit` provide callbacks, progress output and
TensorBoard. The teacher is any callable mapping normalized images to a tap dict (the
`feature_taps` function of a teacher export); it runs in inference mode and is never
differentiated for the update, so only the student and the method's connectors move.
"""

from __future__ import annotations

from typing import Callable, Mapping

import tensorflow as tf
import tf_keras as keras

from kd_trainer.methods.base import DistillationMethod

TeacherFn = Callable[[tf.Tensor], Mapping[str, tf.Tensor]]


def cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


class Distiller(keras.Model):
    """Trains `student` on CE, or on the objective of `method` given a frozen `teacher`.

    Metrics: `loss` (the full objective incl. weight decay when training, CE when
    evaluating), `accuracy`, `top5_accuracy`, and one `<term>` metric per loss term.
    """

    def __init__(self, student: keras.Model, method: DistillationMethod | None = None,
                 teacher: TeacherFn | None = None, **kwargs):
        super().__init__(**kwargs)
        if method is not None and method.needs_teacher and teacher is None:
            raise ValueError(f"method '{method.name}' needs a teacher model (the Trainer's base_model)")
        self.student = student
        self.method = method
        self.teacher = teacher
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.top5_accuracy = keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy")
        term_names = method.loss_term_names if method is not None else ("ce",)
        self.term_trackers = {name: keras.metrics.Mean(name=name) for name in term_names}
        if method is not None:
            teacher_shapes = {}
            if teacher is not None:
                teacher_shapes = {k: v.shape for k, v in teacher(tf.zeros((1, *student.input_shape[1:]))).items()}
            method.build({k: v.shape for k, v in student.output.items()}, teacher_shapes)

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy, self.top5_accuracy, *self.term_trackers.values()]

    def call(self, images, training=False):
        return self.student(images, training=training)["logits"]

    def trainable_for_objective(self) -> list[tf.Variable]:
        extra = list(self.method.trainable_variables) if self.method is not None else []
        return self.student.trainable_variables + extra

    def train_step(self, data):
        images, labels = data
        teacher_taps = {}
        if self.method is not None and self.method.needs_teacher:
            teacher_taps = {k: tf.stop_gradient(v) for k, v in self.teacher(images).items()}
        with tf.GradientTape() as tape:
            student_taps = self.student(images, training=True)
            ce = cross_entropy(labels, student_taps["logits"])
            terms = {"ce": ce} if self.method is None else self.method.loss_terms(labels, ce, student_taps, teacher_taps)
            objective = tf.add_n(list(terms.values()) + self.student.losses)
        variables = self.trainable_for_objective()
        gradients = tape.gradient(objective, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        self.loss_tracker.update_state(objective)
        for name, value in terms.items():
            self.term_trackers[name].update_state(value)
        self.accuracy.update_state(labels, student_taps["logits"])
        self.top5_accuracy.update_state(labels, student_taps["logits"])
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        images, labels = data
        logits = self.student(images, training=False)["logits"]
        self.loss_tracker.update_state(cross_entropy(labels, logits), sample_weight=tf.shape(labels)[0])
        self.accuracy.update_state(labels, logits)
        self.top5_accuracy.update_state(labels, logits)
        return {m.name: m.result() for m in (self.loss_tracker, self.accuracy, self.top5_accuracy)}
