"""What particular steps move, beyond the contract every method keeps (test_method_contract.py):
AB's connectors only while initialising, FitNet's regressors, the clipping hook of KD-SVD,
KD-EID and MHGD; the stages the methods declare."""

import numpy as np
import pytest
import tensorflow as tf

from kd_trainer import methods
from kd_trainer.methods.base import INIT_STAGE, MAIN_STAGE, StepState, TaskTerms
from kd_trainer.methods.kd_svd import clipped_task_gradients
from method_harness import batch_for, build_distiller, moved, snapshot, start_stage


def test_ab_connectors_train_only_while_initialising():
    harness = build_distiller("ab", stage=INIT_STAGE)
    distiller, connectors = harness.distiller, harness.method.trainable_variables
    assert len(connectors) == 9  # 3 taps x (1x1 kernel, BN gamma, BN beta)
    before = snapshot(connectors)
    distiller.train_on_batch(*batch_for(harness.method))
    assert all(moved(before, connectors))
    start_stage(harness, MAIN_STAGE, first_epoch=40)
    before = snapshot(connectors)
    distiller.train_on_batch(*batch_for(harness.method, seed=1))
    assert not any(moved(before, connectors))


def test_fitnet_regressor_is_trained_when_widths_differ():
    harness = build_distiller("fitnet", stage=INIT_STAGE, teacher="resnet8x4")
    method = harness.method
    assert set(method.regressors) == {"stage1", "stage2", "stage3"}
    before = snapshot(method.trainable_variables)
    harness.distiller.train_on_batch(*batch_for(method))
    assert all(moved(before, method.trainable_variables))


@pytest.mark.parametrize("name", ["kd_svd", "kd_eid", "mhgd"])
def test_the_seeds_kd_methods_clip_their_distillation_gradient(name):
    assert methods.method_class(name).task_gradients is clipped_task_gradients


@pytest.mark.parametrize("epoch, stage_first_epoch", [(2.0, 0), (42.0, 40)])
def test_kd_svd_clips_distillation_gradient_per_variable(epoch, stage_first_epoch):
    """Per variable, |g_distillation| is capped at |g_CE| * sigmoid(epochs into the stage)."""
    small, large = tf.Variable([3.0, 4.0]), tf.Variable([1.0, -2.0, 2.0])
    with tf.GradientTape(persistent=True) as tape:
        supervised = 0.5 * tf.reduce_sum(small * small) + 0.1 * tf.reduce_sum(large)
        distillation = 10.0 * tf.reduce_sum(small) + 0.01 * tf.reduce_sum(large * large)
    gradients = clipped_task_gradients(methods.create("kd_svd"), lambda target: tape.gradient(target, [small, large]),
                                       TaskTerms(supervised, distillation, supervised + distillation),
                                       StepState(tf.Variable(epoch), stage_first_epoch))
    ramp = 1 / (1 + np.exp(-2.0))
    expected = []
    for g_sup, g_dist in (([3.0, 4.0], [10.0, 10.0]), ([0.1] * 3, [0.02, -0.04, 0.04])):
        g_sup, g_dist = np.array(g_sup), np.array(g_dist)
        cap = np.linalg.norm(g_sup) * ramp
        if np.linalg.norm(g_dist) > cap:
            g_dist = g_dist * cap / np.linalg.norm(g_dist)
        expected.append(g_sup + g_dist)
    assert not np.allclose(expected[0], [13.0, 14.0])  # the clip binds on the first variable
    for got, want in zip(gradients, expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


def test_clipping_needs_both_parts_of_the_objective():
    """A stage without CE or without distillation terms: the plain gradient of the total."""
    variable = tf.Variable([3.0, 4.0])
    with tf.GradientTape(persistent=True) as tape:
        distillation = 10.0 * tf.reduce_sum(variable)
    gradients = clipped_task_gradients(methods.create("kd_svd"), lambda target: tape.gradient(target, [variable]),
                                       TaskTerms(None, distillation, distillation), StepState(tf.Variable(0.0), 0))
    np.testing.assert_allclose(gradients[0].numpy(), [10.0, 10.0])


def test_methods_declare_consistent_stages():
    for name in methods.CATALOG:
        two_stage = INIT_STAGE in methods.method_class(name).stages
        method = methods.create(name, {"init_epochs": 3} if two_stage else None)
        stages = method.stage_epochs(7)
        assert list(stages)[-1] == MAIN_STAGE and stages[MAIN_STAGE] == 7
        if INIT_STAGE in stages:
            assert stages[INIT_STAGE] == 3


def test_arithmetic_optimizer_is_off_only_while_input_gradients_train():
    from kd_trainer.run_fn import _graph_options_for

    def arithmetic():
        return tf.config.optimizer.get_experimental_options().get("arithmetic_optimization", True)

    with _graph_options_for(methods.create("jacobian")):
        assert arithmetic() is False
    assert arithmetic() is True
    with _graph_options_for(methods.create("at")):
        assert arithmetic() is True
