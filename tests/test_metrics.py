"""Expected calibration error against an independent NumPy computation."""

import numpy as np
import pytest

from kd_trainer.metrics import ExpectedCalibrationError
from method_harness import np_softmax


def numpy_ece(probabilities: np.ndarray, labels: np.ndarray, num_bins: int) -> float:
    """ECE of Guo et al. 2017 with right-closed equal-width bins, written from the definition."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    total = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        members = (confidence > low) & (confidence <= high)
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return total


def random_predictions(rng, count, classes=100):
    logits = rng.normal(size=(count, classes)) * rng.uniform(0.5, 6.0, size=(count, 1))
    return np_softmax(logits).astype(np.float32), rng.integers(0, classes, size=count)


@pytest.mark.parametrize("num_bins", [1, 10, 15])
def test_matches_numpy(num_bins):
    rng = np.random.default_rng(num_bins)
    probabilities, labels = random_predictions(rng, 500)
    labels[:200] = probabilities[:200].argmax(axis=1)  # a mix of right and wrong predictions
    metric = ExpectedCalibrationError(num_bins=num_bins)
    metric.update_state(labels, probabilities)
    assert float(metric.result()) == pytest.approx(numpy_ece(probabilities, labels, num_bins), abs=1e-6)


def test_states_merge_by_addition_as_tfma_does():
    """TFMA combines a Keras metric across Beam bundles by adding its variables."""
    rng = np.random.default_rng(0)
    probabilities, labels = random_predictions(rng, 300)
    parts = [ExpectedCalibrationError(), ExpectedCalibrationError()]
    parts[0].update_state(labels[:120], probabilities[:120])
    parts[1].update_state(labels[120:], probabilities[120:])
    merged = ExpectedCalibrationError()
    for variable, *pieces in zip(merged.variables, parts[0].variables, parts[1].variables):
        variable.assign(sum(piece.numpy() for piece in pieces))
    assert float(merged.result()) == pytest.approx(numpy_ece(probabilities, labels, 15), abs=1e-6)


def test_a_perfectly_confident_right_model_is_calibrated():
    probabilities = np.eye(100, dtype=np.float32)[:10]
    metric = ExpectedCalibrationError()
    metric.update_state(np.arange(10), probabilities)
    assert float(metric.result()) == 0.0
    metric.update_state(np.arange(1, 11), probabilities)  # now half of the sure predictions are wrong
    assert float(metric.result()) == pytest.approx(0.5)


def test_round_trips_through_its_config():
    restored = ExpectedCalibrationError.from_config(ExpectedCalibrationError(num_bins=7).get_config())
    assert restored.num_bins == 7


def test_rejects_zero_bins():
    with pytest.raises(ValueError, match="num_bins must be >= 1"):
        ExpectedCalibrationError(num_bins=0)
