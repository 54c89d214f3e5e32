"""Distillation losses against independent NumPy computations of their formulas."""

import re

import numpy as np
import pytest
import tensorflow as tf

from kd_trainer import methods


def np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_kl(p, q):
    return np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=-1))


@pytest.mark.parametrize("params", [{}, {"temperature": 4.0, "temperature_squared": True},
                                    {"ce_weight": 1.0, "kd_weight": 0.9, "temperature": 1.5}])
def test_soft_logits_matches_numpy(params):
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(2, 8, 100)) * 3
    labels = rng.integers(0, 100, size=8)
    ce = 2.5
    method = methods.create("soft_logits", params)
    terms = method.loss_terms(tf.constant(labels), tf.constant(ce, tf.float64),
                              {"logits": tf.constant(student)}, {"logits": tf.constant(teacher)})
    t = params.get("temperature", 3.0)
    kd = np_kl(np_softmax(teacher / t), np_softmax(student / t)) * (t ** 2 if params.get("temperature_squared") else 1)
    assert set(terms) == set(method.loss_term_names)
    assert float(terms["kd"]) == pytest.approx(params.get("kd_weight", 0.3) * kd, rel=1e-9)
    assert float(terms["ce"]) == pytest.approx(params.get("ce_weight", 0.7) * ce, rel=1e-12)


def test_kd_term_is_zero_when_student_equals_teacher():
    logits = tf.constant(np.random.default_rng(1).normal(size=(4, 100)))
    terms = methods.create("soft_logits").loss_terms(None, tf.constant(0.0, tf.float64), {"logits": logits},
                                                      {"logits": logits})
    assert float(terms["kd"]) == pytest.approx(0.0, abs=1e-12)


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown distillation method 'kd'; valid methods: .*soft_logits"):
        methods.create("kd")


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match=r"method 'soft_logits': unknown parameter\(s\) \['tau'\]"):
        methods.create("soft_logits", {"tau": 2})
    with pytest.raises(ValueError, match="parameter 'temperature' must be float, got 'hot'"):
        methods.create("soft_logits", {"temperature": "hot"})
    assert methods.create("soft_logits", {"temperature": 4}).params.temperature == 4.0


@pytest.mark.parametrize("method, params, message", [
    ("soft_logits", {"temperature": 0.0}, "parameter 'temperature' must be in [0.01, 1000], got 0.0"),
    ("soft_logits", {"kd_weight": -0.3}, "parameter 'kd_weight' must be in [0, 1e+06], got -0.3"),
    ("soft_logits", {"ce_weight": float("nan")}, "parameter 'ce_weight' must be finite"),
    ("fitnet", {"init_epochs": -1}, "parameter 'init_epochs' must be in [0, 1000], got -1"),
    ("kd_svd", {"k": 0}, "parameter 'k' must be in [1, 1024], got 0"),
])
def test_out_of_range_parameters_are_named(method, params, message):
    with pytest.raises(ValueError, match=rf"method '{method}': {re.escape(message)}"):
        methods.create(method, params)
