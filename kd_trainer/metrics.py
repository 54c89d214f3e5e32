"""Expected calibration error as a Keras metric that TFMA can compute in Beam.

TFMA 0.47 has no multi-class ECE, so the Evaluator loads this class by module name.
Its state is three per-bin sums (examples, confidence, correct predictions): TFMA merges
Keras metric states across Beam workers by adding their variables, which is exact for sums.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402


@keras.utils.register_keras_serializable(package="kd_trainer")
class ExpectedCalibrationError(keras.metrics.Metric):
    """Top-label ECE (Guo et al. 2017): sum over confidence bins of |accuracy - confidence|,
    weighted by the share of examples in the bin. Bins split [0, 1] into `num_bins` equal
    intervals, closed on the right: confidence c falls in bin ceil(c * num_bins) - 1.

    Expects sparse integer labels and class probabilities (not logits).
    """

    def __init__(self, num_bins: int = 15, name: str = "expected_calibration_error", dtype=None, **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        if num_bins < 1:
            raise ValueError(f"ExpectedCalibrationError: num_bins must be >= 1, got {num_bins}")
        self.num_bins = num_bins
        self.bin_count = self.add_weight(name="bin_count", shape=(num_bins,), initializer="zeros")
        self.bin_confidence = self.add_weight(name="bin_confidence", shape=(num_bins,), initializer="zeros")
        self.bin_correct = self.add_weight(name="bin_correct", shape=(num_bins,), initializer="zeros")

    def update_state(self, y_true, y_pred, sample_weight=None):
        probabilities = tf.convert_to_tensor(y_pred, dtype=self.dtype)
        labels = tf.cast(tf.reshape(y_true, [-1]), tf.int64)
        probabilities = tf.reshape(probabilities, [tf.shape(labels)[0], -1])
        confidence = tf.reduce_max(probabilities, axis=-1)
        correct = tf.cast(tf.equal(tf.argmax(probabilities, axis=-1), labels), self.dtype)
        bins = tf.clip_by_value(tf.cast(tf.math.ceil(confidence * self.num_bins), tf.int32) - 1, 0, self.num_bins - 1)
        weight = tf.ones_like(confidence) if sample_weight is None else tf.reshape(
            tf.cast(sample_weight, self.dtype), [-1])
        self.bin_count.assign_add(tf.math.unsorted_segment_sum(weight, bins, self.num_bins))
        self.bin_confidence.assign_add(tf.math.unsorted_segment_sum(weight * confidence, bins, self.num_bins))
        self.bin_correct.assign_add(tf.math.unsorted_segment_sum(weight * correct, bins, self.num_bins))

    def result(self):
        gaps = tf.abs(self.bin_correct - self.bin_confidence)  # n_b * |acc_b - conf_b|
        return tf.math.divide_no_nan(tf.reduce_sum(gaps), tf.reduce_sum(self.bin_count))

    def reset_state(self):
        for variable in (self.bin_count, self.bin_confidence, self.bin_correct):
            variable.assign(tf.zeros_like(variable))

    def get_config(self):
        return {**super().get_config(), "num_bins": self.num_bins}
