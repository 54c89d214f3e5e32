"""What each training step moves: the student and connectors, never the frozen teacher;
both networks in DML; stages switch at the right epoch; KD-SVD's gradient clipping."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from kd_trainer import methods, models
from kd_trainer.distiller import Distiller
from kd_trainer.methods.base import INIT_STAGE, MAIN_STAGE


def batch(seed=0, size=8):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.normal(size=(size, 32, 32, 3)), tf.float32),
            tf.constant(rng.integers(0, 100, size=size), tf.int32))


def snapshot(variables):
    return [v.numpy().copy() for v in variables]


def moved(before, variables):
    return [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables)]


def make_distiller(method_name, params=None, stage=MAIN_STAGE):
    keras.utils.set_random_seed(0)
    student = models.build_model("resnet8")
    teacher_model = models.build_model("resnet8")
    method = methods.create(method_name, params)
    peer = models.build_model("resnet8") if method.trains_peer else None
    teacher = (lambda images: teacher_model(images, training=False)) if method.needs_teacher else None
    distiller = Distiller(student, method=method, teacher=teacher, peer=peer)
    distiller.stage = stage
    optimizer = lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True)  # noqa: E731
    # Eager steps: these tests check which variables move, not speed, and tracing costs more.
    distiller.compile(optimizer=optimizer(), peer_optimizer=optimizer() if peer is not None else None,
                      run_eagerly=True)
    return distiller, student, teacher_model, method, peer


@pytest.mark.parametrize("name, stage", [
    ("soft_logits", MAIN_STAGE), ("at", MAIN_STAGE), ("rkd", MAIN_STAGE), ("kd_svd", MAIN_STAGE),
    ("jacobian", MAIN_STAGE), ("fitnet", INIT_STAGE), ("fsp", INIT_STAGE), ("ab", INIT_STAGE), ("ab", MAIN_STAGE),
])
def test_student_moves_teacher_never(name, stage):
    distiller, student, teacher, method, _ = make_distiller(name, stage=stage)
    teacher_before, student_before = snapshot(teacher.variables), snapshot(student.trainable_variables)
    logs = distiller.train_on_batch(*batch(), return_dict=True)
    assert np.isfinite(logs["loss"])
    assert not any(moved(teacher_before, teacher.variables)), "the frozen teacher changed"
    assert any(moved(student_before, student.trainable_variables))


@pytest.mark.parametrize("name", ["fitnet", "fsp", "ab"])
def test_initialisation_stage_leaves_the_classifier_alone(name):
    distiller, student, _, _, _ = make_distiller(name, stage=INIT_STAGE)
    classifier = student.get_layer("logits").trainable_variables
    features = student.get_layer("stage1_block1_conv1").trainable_variables
    classifier_before, features_before = snapshot(classifier), snapshot(features)
    distiller.train_on_batch(*batch())
    assert not any(moved(classifier_before, classifier))
    assert all(moved(features_before, features))


def test_ab_connectors_train_only_while_initialising():
    distiller, _, _, method, _ = make_distiller("ab", stage=INIT_STAGE)
    connectors = method.trainable_variables
    assert len(connectors) == 9  # 3 taps x (1x1 kernel, BN gamma, BN beta)
    before = snapshot(connectors)
    distiller.train_on_batch(*batch())
    assert all(moved(before, connectors))
    distiller.stage = MAIN_STAGE
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=True)
    before = snapshot(connectors)
    distiller.train_on_batch(*batch(1))
    assert not any(moved(before, connectors))


def test_fitnet_regressor_is_trained_when_widths_differ():
    method = methods.create("fitnet")
    student = models.build_model("resnet8")
    teacher_model = models.build_model("resnet8x4")
    distiller = Distiller(student, method=method, teacher=lambda x: teacher_model(x, training=False))
    distiller.stage = INIT_STAGE
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=True)
    assert set(method.regressors) == {"stage1", "stage2", "stage3"}
    before = snapshot(method.trainable_variables)
    distiller.train_on_batch(*batch())
    assert all(moved(before, method.trainable_variables))


def test_dml_moves_both_networks():
    distiller, student, _, _, peer = make_distiller("dml")
    student_before, peer_before = snapshot(student.trainable_variables), snapshot(peer.trainable_variables)
    distiller.train_on_batch(*batch())
    assert all(moved(student_before, student.trainable_variables))
    assert all(moved(peer_before, peer.trainable_variables))


def test_kd_svd_clips_distillation_gradient_per_variable():
    distiller, _, _, _, _ = make_distiller("kd_svd")
    distiller.epoch.assign(2.0)
    small, large = tf.Variable([3.0, 4.0]), tf.Variable([1.0, -2.0, 2.0])
    with tf.GradientTape(persistent=True) as tape:
        supervised = 0.5 * tf.reduce_sum(small * small) + 0.1 * tf.reduce_sum(large)
        distillation = 10.0 * tf.reduce_sum(small) + 0.01 * tf.reduce_sum(large * large)
    gradients = distiller._clipped_gradients(tape, supervised, distillation, [small, large])
    ramp = 1 / (1 + np.exp(-2.0))
    expected = []
    for g_sup, g_dist in (([3.0, 4.0], [10.0, 10.0]), ([0.1] * 3, [0.02, -0.04, 0.04])):
        g_sup, g_dist = np.array(g_sup), np.array(g_dist)
        cap = np.linalg.norm(g_sup) * ramp
        if np.linalg.norm(g_dist) > cap:
            g_dist = g_dist * cap / np.linalg.norm(g_dist)
        expected.append(g_sup + g_dist)
    for got, want in zip(gradients, expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


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
