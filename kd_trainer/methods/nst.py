"""Neuron selectivity transfer (Huang & Wang 2017): match the distributions of the teacher's
and the student's per-channel spatial activation patterns, by maximum mean discrepancy with
a squared polynomial kernel."""

from __future__ import annotations

import tensorflow as tf

from kd_trainer.methods import catalog
from kd_trainer.methods.base import DistillationMethod

TAPS = ("stage1", "stage2", "stage3")  # RepDistiller: feat[1:-1], the stage outputs after their ReLU
# torch.nn.functional.normalize divides by max(||x||, 1e-12).
NORM_FLOOR = 1e-12


def _channel_patterns(features: tf.Tensor) -> tf.Tensor:
    """[B, C, H*W]: each channel's spatial map, flattened and L2-normalised."""
    shape = tf.shape(features)
    flat = tf.transpose(tf.reshape(features, [shape[0], shape[1] * shape[2], shape[3]]), [0, 2, 1])
    norms = tf.sqrt(tf.reduce_sum(tf.square(flat), axis=2, keepdims=True))
    return flat / tf.maximum(norms, NORM_FLOOR)


def _mean_poly_kernel(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Mean over the batch and all channel pairs of (a_i . b_j)^2."""
    return tf.reduce_mean(tf.square(tf.matmul(a, b, transpose_b=True)))


def nst_loss(student: tf.Tensor, teacher: tf.Tensor) -> tf.Tensor:
    """MMD^2 = mean k(t, t) + mean k(s, s) - 2 mean k(s, t) with k(x, y) = (x . y)^2; the
    larger map is first average-pooled to the smaller one's resolution."""
    student, teacher = _same_resolution(student, teacher)
    s, t = _channel_patterns(student), _channel_patterns(teacher)
    return (tf.stop_gradient(_mean_poly_kernel(t, t)) + _mean_poly_kernel(s, s) - 2.0 * _mean_poly_kernel(s, t))


def _same_resolution(student: tf.Tensor, teacher: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Average-pools the larger map by the integer factor between the sizes (checked in `build`)."""
    student_size, teacher_size = student.shape[1], teacher.shape[1]
    if student_size > teacher_size:
        factor = student_size // teacher_size
        student = tf.nn.avg_pool2d(student, factor, factor, "VALID")
    elif teacher_size > student_size:
        factor = teacher_size // student_size
        teacher = tf.nn.avg_pool2d(teacher, factor, factor, "VALID")
    return student, teacher


class NST(DistillationMethod):
    """ce_weight * CE + weight * sum over the 3 stage outputs of NST (RepDistiller: 1 / 50)."""

    name = "nst"
    student_taps = TAPS
    teacher_taps = TAPS
    loss_term_names = ("ce", "nst")

    Params = catalog.NSTParams

    def build(self, student_shapes, teacher_shapes):
        for tap in TAPS:
            s, t = tuple(student_shapes[tap][1:3]), tuple(teacher_shapes[tap][1:3])
            larger, smaller = max(s[0], t[0]), min(s[0], t[0])
            if s[0] != s[1] or t[0] != t[1] or larger % smaller:
                raise ValueError(f"method 'nst': tap '{tap}' is {s[0]}x{s[1]} in the student and {t[0]}x{t[1]} in "
                                 "the teacher; expected square maps whose sizes divide each other")

    def loss_terms(self, labels, cross_entropy, student, teacher, stage="main"):
        p = self.params
        total = tf.add_n([nst_loss(student[tap], teacher[tap]) for tap in TAPS])
        return {"ce": p.ce_weight * cross_entropy, "nst": p.weight * total}
