"""Logit standardization (Sun et al., CVPR 2024): z-score each sample's logits before the
softened softmax, so the student matches the teacher's logit relations rather than their
range and scale. Not a method of its own: the `logit_standardization` parameter of every
method that compares softened predictions (soft_logits, dkd, dist) applies it.
"""

from __future__ import annotations

import tensorflow as tf

# sunshangquan/logit-standardization-KD `mdistiller/distillers/KD.py`: (z - mean) / (1e-7 + std).
STD_EPSILON = 1e-7


def standardize(logits: tf.Tensor) -> tf.Tensor:
    """(z - mean(z)) / (1e-7 + std(z)) over the classes of each sample; std with Bessel's
    correction (n - 1), as torch's `Tensor.std` in the source."""
    classes = tf.cast(tf.shape(logits)[-1], logits.dtype)
    centred = logits - tf.reduce_mean(logits, axis=-1, keepdims=True)
    std = tf.sqrt(tf.reduce_sum(tf.square(centred), axis=-1, keepdims=True) / (classes - 1))
    return centred / (STD_EPSILON + std)


def softened(logits: tf.Tensor, temperature: float, standardized: bool) -> tf.Tensor:
    """The logits a softened softmax reads: z / T, or standardize(z) / T (T is then the
    paper's base temperature)."""
    return (standardize(logits) if standardized else logits) / temperature
