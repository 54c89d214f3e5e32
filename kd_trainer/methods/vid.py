"""VID (Ahn et al., CVPR 2019): variational information distillation.

Per tap, a regressor (1x1 conv, ReLU, 1x1 conv, ReLU, 1x1 conv, no biases; middle and
output width = the teacher's) predicts the mean of a Gaussian over the teacher's features
from the student's, with a learned per-channel variance softplus(log_scale) + eps; the
loss is the Gaussian negative log-likelihood without its constant,
mean(0.5 * ((mu - t)^2 / var + log var)), summed over the taps.

Source: HobbitLong/RepDistiller `distiller_zoo/VID.py` (init_pred_var 5.0, eps 1e-5) and
`scripts/run_cifar_distill.sh` (CE 1, VID 1, KD 0), on the outputs of the three stages.
The larger of two maps is average-pooled to the smaller's size, as there.
"""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras

from kd_trainer.methods import catalog
from kd_trainer.methods.base import DistillationMethod
from kd_trainer.methods.connectors import conv, match_spatial

TAPS = ("stage1", "stage2", "stage3")


def inverse_softplus(value: float) -> float:
    return math.log(math.expm1(value))


def vid_loss(mean: tf.Tensor, teacher: tf.Tensor, log_scale: tf.Tensor, eps: float) -> tf.Tensor:
    """mean over batch, positions and channels of 0.5 * ((mean - t)^2 / var + log var),
    var = softplus(log_scale) + eps per channel."""
    variance = tf.math.softplus(log_scale) + eps
    return tf.reduce_mean(0.5 * (tf.square(mean - teacher) / variance + tf.math.log(variance)))


class VID(DistillationMethod):
    """total = ce_weight * CE + weight * sum over the 3 taps of the VID loss."""

    name = "vid"
    student_taps = TAPS + ("logits",)
    teacher_taps = TAPS
    loss_term_names = ("ce", "vid")

    Params = catalog.VIDParams

    def build(self, student_shapes, teacher_shapes):
        p = self.params
        self.regressors, self.log_scales = {}, {}
        for tap in TAPS:
            student_channels, channels = student_shapes[tap][-1], teacher_shapes[tap][-1]
            regressor = keras.Sequential([
                conv(channels, 1, student_channels, False, f"vid_{tap}_conv1"), keras.layers.ReLU(),
                conv(channels, 1, channels, False, f"vid_{tap}_conv2"), keras.layers.ReLU(),
                conv(channels, 1, channels, False, f"vid_{tap}_conv3")], name=f"vid_regressor_{tap}")
            regressor.build(student_shapes[tap])
            self.regressors[tap] = regressor
            self.log_scales[tap] = tf.Variable(tf.fill([channels], inverse_softplus(p.init_pred_var - p.eps)),
                                               name=f"vid_log_scale_{tap}")

    def loss_terms(self, labels, cross_entropy, student, teacher, stage="main"):
        p = self.params
        total = 0.0
        for tap in TAPS:
            features, target = match_spatial(student[tap], teacher[tap])
            total += vid_loss(self.regressors[tap](features), target, self.log_scales[tap], p.eps)
        return {"ce": p.ce_weight * cross_entropy, "vid": p.weight * total}
