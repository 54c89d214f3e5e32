"""Correlation congruence (Peng et al., ICCV 2019): besides each sample, transfer the
correlations between the samples of a batch, measured on learned embeddings with a
Gaussian RBF kernel approximated by its Taylor expansion."""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras

from kd_trainer.methods import catalog
from kd_trainer.methods.base import DistillationMethod

TAP = "embedding"  # RepDistiller: feat[-1], the pooled features


def taylor_rbf_correlation(embeddings: tf.Tensor, gamma: float, order: int) -> tf.Tensor:
    """[B, B]: exp(-gamma ||f_i - f_j||^2) on L2-normalised f, by its Taylor expansion in
    f_i . f_j: sum_{p=0}^{order} exp(-2 gamma) (2 gamma)^p / p! (f_i . f_j)^p."""
    unit = tf.math.l2_normalize(embeddings, axis=1)
    similarity = tf.matmul(unit, unit, transpose_b=True)
    return tf.add_n([math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * similarity ** p
                     for p in range(order + 1)])


def taylor_rbf_loss(student: tf.Tensor, teacher: tf.Tensor, gamma: float, order: int) -> tf.Tensor:
    """Mean squared difference of the two correlation matrices (the paper's ||C_t - C_s||^2 / B^2)."""
    return tf.reduce_mean(tf.square(taylor_rbf_correlation(teacher, gamma, order)
                                    - taylor_rbf_correlation(student, gamma, order)))


def repdistiller_loss(student: tf.Tensor, teacher: tf.Tensor) -> tf.Tensor:
    """RepDistiller `distiller_zoo/CC.py` (code the authors shared): with d = |e_s - e_t|, the
    batch mean over consecutive samples of sum_k d_i,k d_{i+1},k."""
    delta = tf.abs(student - teacher)
    return tf.reduce_mean(tf.reduce_sum(delta[:-1] * delta[1:], axis=1))


def _linear_embedding(inputs: int, outputs: int, name: str) -> keras.layers.Dense:
    """torch.nn.Linear with its default initialisation: weights and bias ~ U(+-1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(inputs)
    layer = keras.layers.Dense(outputs, kernel_initializer=keras.initializers.RandomUniform(-bound, bound),
                               bias_initializer=keras.initializers.RandomUniform(-bound, bound), name=name)
    layer.build((None, inputs))
    return layer


class CorrelationCongruence(DistillationMethod):
    """ce_weight * CE + weight * CC between linear embeddings (to embedding_dim) of the student's
    and the teacher's pooled features; both embeddings are trainable connectors (RepDistiller's
    embed_s and embed_t). RepDistiller: 1 / 0.02, 128 dimensions; kernel gamma 0.4, order 2."""

    name = "cc"
    student_taps = (TAP,)
    teacher_taps = (TAP,)
    loss_term_names = ("ce", "cc")

    Params = catalog.CCParams

    def build(self, student_shapes, teacher_shapes):
        self.student_embedding = _linear_embedding(int(student_shapes[TAP][-1]), self.params.embedding_dim,
                                                   "cc_student_embedding")
        self.teacher_embedding = _linear_embedding(int(teacher_shapes[TAP][-1]), self.params.embedding_dim,
                                                   "cc_teacher_embedding")

    def loss_terms(self, labels, cross_entropy, student, teacher, stage="main"):
        p = self.params
        e_s, e_t = self.student_embedding(student[TAP]), self.teacher_embedding(teacher[TAP])
        if p.kernel == "taylor_rbf":
            cc = taylor_rbf_loss(e_s, e_t, p.gamma, p.taylor_order)
        else:
            cc = repdistiller_loss(e_s, e_t)
        return {"ce": p.ce_weight * cross_entropy, "cc": p.weight * cc}
