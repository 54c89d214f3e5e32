"""Distillation losses against independent NumPy computations of their formulas."""

import numpy as np
import pytest
import tensorflow as tf

from kd_trainer import methods
from method_harness import np_kl, np_softmax


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
    with pytest.raises(ValueError, match="method 'soft_logits': parameter 'temperature': expected a number, got 'hot'"):
        methods.create("soft_logits", {"temperature": "hot"})
    assert methods.create("soft_logits", {"temperature": 4}).params.temperature == 4.0



def test_the_few_shot_student_is_soft_logits_under_its_own_name():
    method = methods.create("soft_logits_fewshot", {"temperature": 4.0})
    assert type(method) is type(methods.create("soft_logits"))
    assert method.name == "soft_logits_fewshot" and method.params.temperature == 4.0
    assert method.trains_on == methods.catalog.FEW_SHOT_EXAMPLES
    assert methods.create("soft_logits").trains_on == methods.catalog.EXAMPLES
    with pytest.raises(ValueError, match="^method 'soft_logits_fewshot': parameter 'temperature'"):
        methods.create("soft_logits_fewshot", {"temperature": 0.0})


def test_a_catalog_entry_names_a_known_kind_of_training_data():
    with pytest.raises(ValueError, match="method 'x': trains_on must be one of examples, indexed_examples, "
                                         "few_shot_examples, impressions, got 'pixels'"):
        methods.MethodEntry("x", "kd_trainer.methods.soft_logits:SoftLogits", trains_on="pixels")


def test_a_partner_needs_its_optimizer_and_its_architecture():
    from kd_trainer.config import TrainerConfig
    from kd_trainer.run_fn import build_distiller as run_fn_distiller
    from method_harness import build_distiller

    harness = build_distiller("dml", compile=False)
    with pytest.raises(ValueError, match="a Distiller with a partner network needs a partner_optimizer"):
        harness.distiller.compile(optimizer="sgd")
    config = TrainerConfig(model="resnet8", epochs=1, role="student", method="dml")  # no teacher_model
    with pytest.raises(ValueError, match=r"method 'dml' needs teacher_model \(the architecture of its partner"):
        run_fn_distiller(config, methods.create("dml"), None, "float32")


def test_a_method_outside_the_catalog_trains_on_examples():
    from kd_trainer.methods.base import DistillationMethod

    class Uncatalogued(DistillationMethod):
        name = "uncatalogued"
        loss_term_names = ("ce",)

    assert Uncatalogued().trains_on == methods.catalog.EXAMPLES
