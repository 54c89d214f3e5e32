"""FT (Kim, Park & Kwak, NeurIPS 2018): factor transfer.

A paraphraser (3 conv encoder, 3 transposed-conv decoder, LeakyReLU 0.1, no BN) is first
trained alone to reconstruct the teacher's last-stage features (MSE), in a stage of its own
on the teacher; the student does not run then. Afterwards it stays fixed and its encoder
gives the teacher's "factors"; a translator (3 convs with BN, LeakyReLU 0.1) maps the
student's last-stage features to factors, and the loss is the mean absolute difference of
the two factors' attention-style summaries: per sample, the channel mean of F^2,
flattened and L2-normalised.

Source: HobbitLong/RepDistiller `distiller_zoo/FT.py`, `models/util.py` (Paraphraser,
Translator, rate k = 0.5), `helper/pretrain.py` (paraphraser stage: 30 epochs at lr 0.01)
and `scripts/run_cifar_distill.sh` (CE 1, FT 200, KD 0). Difference: the paraphraser's
stage has no weight decay (RepDistiller's SGD uses 5e-4 there), as every initialisation
stage here; its learning rate is constant for the stage, as there.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from kd_trainer.methods import catalog
from kd_trainer.methods.base import MAIN_STAGE, TEACHER_STAGE, DistillationMethod
from kd_trainer.methods.connectors import conv, match_spatial, torch_default_bias_initializer, \
    torch_default_conv_initializer

TAP = "stage3"
LEAKY_SLOPE = 0.1


def factor_summary(factor: tf.Tensor) -> tf.Tensor:
    """[B, H, W, C] -> [B, H*W]: channel mean of F^2, flattened, unit L2 norm per sample."""
    summary = tf.reduce_mean(tf.square(factor), axis=-1)
    return tf.math.l2_normalize(tf.reshape(summary, [tf.shape(summary)[0], -1]), axis=1)


def factor_loss(student_factor: tf.Tensor, teacher_factor: tf.Tensor) -> tf.Tensor:
    """mean |summary(F_s) - summary(F_t)| over batch and positions."""
    student_factor, teacher_factor = match_spatial(student_factor, teacher_factor)
    return tf.reduce_mean(tf.abs(factor_summary(student_factor) - factor_summary(teacher_factor)))


def _leaky() -> keras.layers.Layer:
    return keras.layers.LeakyReLU(LEAKY_SLOPE)


def _transposed(channels: int, name: str) -> keras.layers.Conv2DTranspose:
    """A stride-1, same-padded 3x3 transposed convolution (torch ConvTranspose2d(3, 1, 1)); torch
    takes its init's fan-in from the output channels, as Keras does for this kernel layout."""
    return keras.layers.Conv2DTranspose(channels, 3, padding="same", name=name,
                                        kernel_initializer=torch_default_conv_initializer(),
                                        bias_initializer=torch_default_bias_initializer(channels * 9))


class FactorTransfer(DistillationMethod):
    """Stage `teacher_init`: paraphraser reconstruction MSE; main: ce_weight * CE + weight * FT."""

    name = "ft"
    student_taps = (TAP, "logits")
    teacher_taps = (TAP,)
    loss_term_names = ("reconstruction", "ce", "ft")
    stages = (TEACHER_STAGE, MAIN_STAGE)
    teacher_stages = (TEACHER_STAGE,)

    Params = catalog.FTParams

    def stage_learning_rate(self, stage, configured):
        return self.params.paraphraser_learning_rate if stage == TEACHER_STAGE else configured

    def build(self, student_shapes, teacher_shapes):
        teacher_channels, student_channels = teacher_shapes[TAP][-1], student_shapes[TAP][-1]
        factor_channels = int(teacher_channels * self.params.rate)
        self.paraphraser_encoder = keras.Sequential([
            conv(teacher_channels, 3, teacher_channels, True, "ft_paraphraser_conv1"), _leaky(),
            conv(factor_channels, 3, teacher_channels, True, "ft_paraphraser_conv2"), _leaky(),
            conv(factor_channels, 3, factor_channels, True, "ft_paraphraser_conv3"), _leaky()],
            name="ft_paraphraser_encoder")
        self.paraphraser_decoder = keras.Sequential([
            _transposed(factor_channels, "ft_paraphraser_deconv1"), _leaky(),
            _transposed(teacher_channels, "ft_paraphraser_deconv2"), _leaky(),
            _transposed(teacher_channels, "ft_paraphraser_deconv3"), _leaky()],
            name="ft_paraphraser_decoder")
        self.translator = keras.Sequential([
            conv(student_channels, 3, student_channels, True, "ft_translator_conv1"),
            keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9), _leaky(),
            conv(factor_channels, 3, student_channels, True, "ft_translator_conv2"),
            keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9), _leaky(),
            conv(factor_channels, 3, factor_channels, True, "ft_translator_conv3"),
            keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9), _leaky()], name="ft_translator")
        self.paraphraser_encoder.build(teacher_shapes[TAP])
        self.paraphraser_decoder.build(self.paraphraser_encoder.compute_output_shape(teacher_shapes[TAP]))
        self.translator.build(student_shapes[TAP])

    def loss_terms(self, labels, cross_entropy, student, teacher, stage="main"):
        p = self.params
        if stage == TEACHER_STAGE:
            reconstruction = self.paraphraser_decoder(self.paraphraser_encoder(teacher[TAP]))
            return {"reconstruction": tf.reduce_mean(tf.square(reconstruction - teacher[TAP]))}
        # The paraphraser is fixed after its stage: no gradient reaches it.
        teacher_factor = tf.stop_gradient(self.paraphraser_encoder(teacher[TAP]))
        student_factor = self.translator(student[TAP], training=True)
        return {"ce": p.ce_weight * cross_entropy, "ft": p.weight * factor_loss(student_factor, teacher_factor)}
