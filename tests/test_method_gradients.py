"""Gradients of the losses whose backward pass is written by hand (KD-SVD's top-K eigenpairs,
Gram matrix and RBF distance, which KD-EID and MHGD reuse; RKD's Huber and angle Gram) against
central differences of the float64 NumPy references in test_methods_golden.py and
test_methods_part2.py."""

import numpy as np
import pytest
import tensorflow as tf

from kd_trainer import methods
from kd_trainer.methods.kd_svd import top_eigenpairs
from method_harness import directional_difference, numeric_gradient
from test_methods_golden import CE, low_rank_features, np_kd_svd, np_rkd, np_rkd_angle_potential
from test_methods_part2 import KD_EID_SHAPES, mhgd_inputs, np_kd_eid, np_mhgd, separated_features

LABELS = tf.zeros([3], tf.int32)


def loss_and_gradient(method, student: dict, teacher: dict, labels) -> tuple[float, dict]:
    student_tf = {k: tf.constant(v) for k, v in student.items()}
    with tf.GradientTape() as tape:
        tape.watch(student_tf)
        terms = method.loss_terms(labels, tf.constant(CE, tf.float64), student_tf,
                                  {k: tf.constant(v) for k, v in teacher.items()})
        total = tf.add_n([v for k, v in terms.items() if k != "ce"])
    return float(total), {k: g.numpy() for k, g in tape.gradient(total, student_tf).items()}


def test_kd_svd_gradient_matches_numpy_differences():
    """Taps cover both Gram paths: C x C (stage1, and stage2 with C = 8 > K, so the gradient
    has components outside the top-K eigenvectors) and HW x HW (stage3: HW = 4 < C = 16)."""
    rng = np.random.default_rng(21)
    shapes = {"stage1": ((8, 8), 4), "stage2": ((4, 4), 8), "stage3": ((2, 2), 16)}
    student = {tap: low_rank_features(rng, 3, hw, c) for tap, (hw, c) in shapes.items()}
    teacher = {tap: low_rank_features(rng, 3, hw, c) for tap, (hw, c) in shapes.items()}
    value, gradient = loss_and_gradient(methods.create("kd_svd"), student, teacher, LABELS)
    np.testing.assert_allclose(value, np_kd_svd(student, teacher, 4, 1.0), rtol=1e-8)
    check_random_directions(gradient, lambda s: np_kd_svd(s, teacher, 4, 1.0), student, rng, 4, 1e-6, 1e-5)


def check_random_directions(gradient: dict, reference, student: dict, rng, count: int, eps: float,
                            rtol: float) -> None:
    """The gradient along `count` random directions against central differences of the reference."""
    point = {k: v.astype(np.float64) for k, v in student.items()}
    for _ in range(count):
        direction = {k: rng.normal(size=v.shape) for k, v in point.items()}
        expected = directional_difference(reference, point, direction, eps)
        got = sum(np.sum(gradient[k] * direction[k]) for k in point)
        np.testing.assert_allclose(got, expected, rtol=rtol)
        assert abs(expected) > 1e-6


def test_kd_eid_gradient_matches_numpy_differences():
    rng = np.random.default_rng(13)
    student = {k: separated_features(rng, 2, side, c) for k, (side, c) in KD_EID_SHAPES.items()}
    teacher = {k: separated_features(rng, 2, side, c) for k, (side, c) in KD_EID_SHAPES.items()}
    _, gradient = loss_and_gradient(methods.create("kd_eid"), student, teacher, LABELS)
    check_random_directions(gradient, lambda s: np_kd_eid(s, teacher), student, rng, 3, 1e-6, 1e-6)


def test_mhgd_gradient_matches_numpy_differences():
    """float32, as the attention network's weights are, against the float64 reference."""
    rng = np.random.default_rng(14)
    student, teacher, method = mhgd_inputs(rng)
    _, gradient = loss_and_gradient(method, student, teacher, LABELS)
    check_random_directions(gradient, lambda s: np_mhgd(s, teacher, method), student, rng, 3, 1e-5, 2e-3)


@pytest.mark.parametrize("size,k", [(6, 2), (5, 5)])
def test_top_eigenpairs_gradient_matches_numpy_differences(size, k):
    """Any upstream gradient on the top-k eigenvalues and (sign-fixed) eigenvectors."""
    rng = np.random.default_rng(22)
    half = rng.normal(size=(2, size, size))
    matrix = half @ np.swapaxes(half, 1, 2)
    value_weights, vector_weights = rng.normal(size=(2, k)), rng.normal(size=(2, size, k))

    def np_objective(m):
        eigenvalues, eigenvectors = np.linalg.eigh(m)
        values, vectors = eigenvalues[:, ::-1][:, :k], eigenvectors[:, :, ::-1][:, :, :k]
        vectors = vectors * np.sign(vectors[:, :1, :])  # the objective must not depend on signs
        return np.sum(value_weights * values) + np.sum(vector_weights * vectors)

    tf_matrix = tf.constant(matrix)
    with tf.GradientTape() as tape:
        tape.watch(tf_matrix)
        values, vectors = top_eigenpairs(tf_matrix, k)
        vectors = vectors * tf.stop_gradient(tf.sign(vectors[:, :1, :]))
        objective = tf.reduce_sum(value_weights * values) + tf.reduce_sum(vector_weights * vectors)
    gradient = tape.gradient(objective, tf_matrix).numpy()
    np.testing.assert_allclose(float(objective), np_objective(matrix), rtol=1e-10)
    for _ in range(3):
        direction = rng.normal(size=matrix.shape)
        direction = direction + np.swapaxes(direction, 1, 2)  # eigh's input is symmetric
        expected = directional_difference(np_objective, matrix, direction, 1e-6)
        np.testing.assert_allclose(np.sum(gradient * direction), expected, rtol=1e-6)


def test_rkd_gradient_matches_numpy_differences():
    rng = np.random.default_rng(36)
    student, teacher = {"logits": rng.normal(size=(5, 6))}, {"logits": rng.normal(size=(5, 6))}
    # Both pieces of the Huber loss are exercised: some angle differences beyond delta = 1.
    normalized = [v / np.linalg.norm(v, axis=1, keepdims=True) for v in (student["logits"], teacher["logits"])]
    difference = np.abs(np_rkd_angle_potential(normalized[0]) - np_rkd_angle_potential(normalized[1]))
    assert (difference > 1).any() and ((difference > 0) & (difference < 1)).any()

    def reference(s):
        return sum(np_rkd(s["logits"], teacher["logits"], 100.0, 200.0))

    # np_rkd normalises distances over the off-diagonal pairs (the paper; the default is the seed's).
    rkd = methods.create("rkd", {"distance_normalization": "off_diagonal"})
    value, gradient = loss_and_gradient(rkd, student, teacher, tf.zeros([5], tf.int32))
    np.testing.assert_allclose(value, reference(student), rtol=1e-8)
    expected = numeric_gradient(lambda logits: reference({"logits": logits}), student["logits"])
    np.testing.assert_allclose(gradient["logits"], expected, rtol=1e-5, atol=1e-7)
