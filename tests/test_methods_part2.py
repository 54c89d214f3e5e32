"""CRD, VID, FT, ReviewKD, KD-EID and MHGD: each loss against an independent float64 NumPy
computation of its formula (values and gradients), and the per-example state of CRD.

The NumPy references are written from the papers' and official code's formulas with
explicit loops and never call the TensorFlow code.
"""

import numpy as np
import pytest
import tensorflow as tf

from kd_trainer import methods
from kd_trainer.methods import crd
from kd_trainer.methods.base import RunInfo

RTOL = 1e-8


def numeric_gradient(function, x, step=1e-6):
    """Central differences of a scalar NumPy function at x (float64)."""
    gradient = np.zeros_like(x)
    for position in np.ndindex(*x.shape):
        up, down = x.copy(), x.copy()
        up[position] += step
        down[position] -= step
        gradient[position] = (function(up) - function(down)) / (2 * step)
    return gradient


def tf_value_and_gradient(function, *arrays):
    """Value of a TF function of float64 arrays and its gradients with respect to each."""
    tensors = [tf.constant(a) for a in arrays]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        value = function(*tensors)
    return float(value), [g.numpy() for g in tape.gradient(value, tensors)]


# --------------------------------------------------------------------------- CRD

def np_unit(x):
    return x / np.sqrt(np.sum(x ** 2, axis=-1, keepdims=True))


def np_nce(scores, num_examples):
    """Eq. (18) of CRD with noise 1/N: per row, log of P(D=1) for the positive, P(D=0) for each negative."""
    batch, columns = scores.shape
    k = columns - 1
    noise = k / num_examples
    total = 0.0
    for b in range(batch):
        total += np.log(scores[b, 0] / (scores[b, 0] + noise + crd.NCE_EPSILON))
        for j in range(1, columns):
            total += np.log(noise / (scores[b, j] + noise + crd.NCE_EPSILON))
    return -total / batch


def np_crd(student_embedding, teacher_embedding, student_rows, teacher_rows, normalizers, num_examples, t):
    student_scores = np.exp(np.einsum("bkd,bd->bk", teacher_rows, student_embedding) / t) / normalizers[0]
    teacher_scores = np.exp(np.einsum("bkd,bd->bk", student_rows, teacher_embedding) / t) / normalizers[1]
    return np_nce(student_scores, num_examples) + np_nce(teacher_scores, num_examples)


def test_crd_loss_value_and_gradients_match_numpy():
    rng = np.random.default_rng(0)
    batch, negatives, dim, num_examples, temperature = 3, 5, 4, 50, 0.5
    student, teacher = np_unit(rng.normal(size=(batch, dim))), np_unit(rng.normal(size=(batch, dim)))
    student_rows = np_unit(rng.normal(size=(batch, negatives + 1, dim)))
    teacher_rows = np_unit(rng.normal(size=(batch, negatives + 1, dim)))
    normalizers = np.array([7.0, 11.0])

    def tf_loss(s, t):
        return crd.crd_loss(crd.contrast_scores(s, tf.constant(teacher_rows), temperature),
                            crd.contrast_scores(t, tf.constant(student_rows), temperature),
                            tf.constant(normalizers), num_examples)

    value, (grad_student, grad_teacher) = tf_value_and_gradient(tf_loss, student, teacher)
    expected = np_crd(student, teacher, student_rows, teacher_rows, normalizers, num_examples, temperature)
    np.testing.assert_allclose(value, expected, rtol=RTOL)
    np.testing.assert_allclose(grad_student, numeric_gradient(
        lambda s: np_crd(s, teacher, student_rows, teacher_rows, normalizers, num_examples, temperature), student),
        rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(grad_teacher, numeric_gradient(
        lambda t: np_crd(student, t, student_rows, teacher_rows, normalizers, num_examples, temperature), teacher),
        rtol=1e-5, atol=1e-8)


def test_sampled_negatives_exclude_the_positive_and_its_class():
    labels = np.array([0, 1, 2, 0, 1, 2, 2, 3, 0, 1])
    method = methods.create("crd", {"num_negatives": 2000})
    method.prepare(RunInfo(main_epochs=1, seed=3, example_labels=labels))
    index = tf.constant([0, 4, 6, 7], tf.int32)
    sampled = crd.sample_contrast_indices(index, tf.constant(labels[[0, 4, 6, 7]], tf.int32), method.class_sorted,
                                          method.class_start, method.class_count, 2000,
                                          tf.constant([3, 0], tf.int64)).numpy()
    assert sampled.shape == (4, 2001)
    np.testing.assert_array_equal(sampled[:, 0], index.numpy())
    for row, anchor in zip(sampled, index.numpy()):
        negatives = row[1:]
        assert anchor not in negatives
        assert not np.any(labels[negatives] == labels[anchor])
        # Uniform over every example of the other classes: each one is drawn.
        assert set(negatives) == set(np.flatnonzero(labels != labels[anchor]))


def test_memory_update_is_the_renormalised_momentum_average():
    rng = np.random.default_rng(1)
    bank = np_unit(rng.normal(size=(6, 4)))
    embedding = np_unit(rng.normal(size=(2, 4)))
    variable = tf.Variable(bank)
    crd.momentum_update(variable, tf.constant([4, 1]), tf.constant(embedding), 0.5)
    expected = bank.copy()
    for row, i in enumerate([4, 1]):
        mixed = 0.5 * bank[i] + 0.5 * embedding[row]
        expected[i] = mixed / np.sqrt(np.sum(mixed ** 2))
    np.testing.assert_allclose(variable.numpy(), expected, rtol=RTOL)


def test_crd_terms_match_numpy_and_update_both_banks():
    """The whole method on one batch: projections, NCE with Z fixed on the first step, KD, bank updates."""
    rng = np.random.default_rng(2)
    labels = np.arange(12) % 3
    params = {"feat_dim": 4, "num_negatives": 5, "kd_weight": 1.0}
    method = methods.create("crd", params)
    method.prepare(RunInfo(main_epochs=1, seed=0, example_labels=labels))
    student = {"embedding": rng.normal(size=(3, 6)).astype(np.float32),
               "logits": rng.normal(size=(3, 10)).astype(np.float32)}
    teacher = {"embedding": rng.normal(size=(3, 8)).astype(np.float32),
               "logits": rng.normal(size=(3, 10)).astype(np.float32)}
    method.build({k: tf.TensorShape(v.shape) for k, v in student.items()},
                 {k: tf.TensorShape(v.shape) for k, v in teacher.items()})
    student_bank, teacher_bank = method.student_memory.numpy().copy(), method.teacher_memory.numpy().copy()
    index = np.array([5, 0, 7])
    draws = crd.sample_contrast_indices(tf.constant(index, tf.int32), tf.constant(labels[index], tf.int32),
                                        method.class_sorted, method.class_start, method.class_count, 5,
                                        tf.constant([0, 0], tf.int64)).numpy()
    terms = method.loss_terms(tf.constant(labels[index], tf.int32), tf.constant(2.0),
                              {k: tf.constant(v) for k, v in student.items()},
                              {k: tf.constant(v) for k, v in teacher.items()}, index=tf.constant(index, tf.int32))

    def project(layer, x):
        kernel, bias = (w.numpy().astype(np.float64) for w in layer.weights)
        return np_unit(x.astype(np.float64) @ kernel + bias)

    s_emb, t_emb = project(method.student_embed, student["embedding"]), project(method.teacher_embed,
                                                                                  teacher["embedding"])
    s_rows, t_rows = student_bank[draws].astype(np.float64), teacher_bank[draws].astype(np.float64)
    z = np.array([np.mean(np.exp(np.einsum("bkd,bd->bk", t_rows, s_emb) / 0.07)) * 12,
                  np.mean(np.exp(np.einsum("bkd,bd->bk", s_rows, t_emb) / 0.07)) * 12])
    np.testing.assert_allclose(method.normalizers.numpy(), z, rtol=1e-5)
    p_t, p_s = np.exp(teacher["logits"] / 4.0), np.exp(student["logits"] / 4.0)
    p_t, p_s = p_t / p_t.sum(1, keepdims=True), p_s / p_s.sum(1, keepdims=True)
    kd = np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1)) * 16
    np.testing.assert_allclose(float(terms["crd"]), 0.8 * np_crd(s_emb, t_emb, s_rows, t_rows, z, 12, 0.07),
                               rtol=1e-4)
    np.testing.assert_allclose(float(terms["kd"]), kd, rtol=1e-4)
    np.testing.assert_allclose(float(terms["ce"]), 2.0)
    for bank, before, emb in ((method.student_memory, student_bank, s_emb), (method.teacher_memory, teacher_bank,
                                                                             t_emb)):
        expected = before.copy()
        expected[index] = np_unit(0.5 * before[index] + 0.5 * emb)
        np.testing.assert_allclose(bank.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert int(method.draws.numpy()) == 1


def test_crd_refuses_to_build_without_example_labels():
    method = methods.create("crd")
    with pytest.raises(ValueError, match="crd: call prepare"):
        method.build({"embedding": tf.TensorShape([None, 8])}, {"embedding": tf.TensorShape([None, 8])})


@pytest.mark.parametrize("values, message", [({"momentum": 1.0}, "'momentum' must be in"),
                                             ({"num_negatives": 0}, "'num_negatives' must be > 0")])
def test_crd_parameter_ranges(values, message):
    with pytest.raises(ValueError, match=message):
        methods.catalog.check_params("crd", values)
