"""Layers and shape matching shared by methods that connect student taps to teacher taps
of other shapes (VID's regressors, FT's translator, ReviewKD's fusion blocks)."""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras


def torch_default_conv_initializer() -> keras.initializers.Initializer:
    """torch.nn.Conv2d's default weight init (kaiming_uniform with a = sqrt(5): U(+-1/sqrt(fan_in))),
    used where a method's official code keeps PyTorch's default."""
    return keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform")


def torch_default_bias_initializer(fan_in: int) -> keras.initializers.Initializer:
    bound = fan_in ** -0.5
    return keras.initializers.RandomUniform(-bound, bound)


def conv(channels: int, kernel: int, fan_in_channels: int, use_bias: bool, name: str,
         kernel_initializer: keras.initializers.Initializer | None = None) -> keras.layers.Conv2D:
    """A stride-1, same-padded convolution initialised as PyTorch's default unless told."""
    fan_in = fan_in_channels * kernel * kernel
    return keras.layers.Conv2D(
        channels, kernel, padding="same", use_bias=use_bias, name=name,
        kernel_initializer=kernel_initializer or torch_default_conv_initializer(),
        bias_initializer=torch_default_bias_initializer(fan_in) if use_bias else "zeros")


def adaptive_average_pool(features: tf.Tensor, size: int) -> tf.Tensor:
    """torch's adaptive_avg_pool2d to size x size for a square map whose side is a multiple of `size`."""
    side = features.shape[1]
    if side % size:
        raise ValueError(f"cannot average-pool a {side}x{side} map to {size}x{size}: {side} is not a multiple")
    factor = side // size
    return features if factor == 1 else tf.nn.avg_pool2d(features, factor, factor, "VALID")


def match_spatial(student: tf.Tensor, teacher: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Average-pools the larger of two square maps to the other's size (RepDistiller's rule)."""
    student_side, teacher_side = student.shape[1], teacher.shape[1]
    if student_side > teacher_side:
        return adaptive_average_pool(student, teacher_side), teacher
    if student_side < teacher_side:
        return student, adaptive_average_pool(teacher, student_side)
    return student, teacher
