"""The `seed` preset reproduces the seed's protocol (issue 11, docs/fidelity.md): each changed
term against an independent float64 NumPy computation, or against a step-by-step emulation of
the seed's TF1 graph where the point is the order of updates (DML)."""

import contextlib
import io
import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from kd_trainer import methods, models
from kd_trainer.methods.base import INIT_STAGE, MAIN_STAGE, cross_entropy
from method_harness import build_distiller, np_kl, np_softmax, numeric_gradient
from pipelines import cli, presets
from test_methods_golden import CE, call, np_kd_svd, sign_insensitive_svd_taps

WD = 5e-4


def images_and_labels(seed=0, size=8):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.normal(size=(size, 32, 32, 3)), tf.float32),
            tf.constant(rng.integers(0, 100, size=size), tf.int32))


def decayed_variables(model_or_losses, variables):
    """The variables that the weight-decay terms reach (their gradient is not None)."""
    with tf.GradientTape() as tape:
        decay = tf.add_n(model_or_losses())
    return [v for v, g in zip(variables, tape.gradient(decay, variables)) if g is not None]


# --------------------------------------------------------------------------- initialisation

@pytest.mark.parametrize("layer, factor, fan", [
    ("stage3_block1_conv2", 2.0, 3 * 3 * 256),  # conv: variance scaling 2.0 on fan-out
    ("logits", 1.0, 256),  # dense: 1.0 on fan-in
])
def test_initializer_is_the_seeds_truncated_normal(layer, factor, fan):
    """tf.contrib's variance_scaling_initializer(uniform=False): a normal of stddev
    sqrt(1.3 * factor / n) cut at 2 stddev (nets/ResNet.py:11, 63)."""
    keras.utils.set_random_seed(1)
    kernel = models.build_model("seed_resnet8").get_layer(layer).kernel.numpy().astype(np.float64).ravel()
    sigma = np.sqrt(1.3 * factor / fan)
    assert np.abs(kernel).max() <= 2 * sigma
    assert np.abs(kernel).max() > 1.9 * sigma  # the full range is used: truncated, not narrower
    # Standard deviation of a unit normal truncated at +-2 (closed form, not Keras' constant).
    z = np.linspace(-2, 2, 400_001)
    density = np.exp(-z ** 2 / 2)
    truncated_std = np.sqrt(np.trapz(z ** 2 * density, z) / np.trapz(density, z))
    assert kernel.std() == pytest.approx(sigma * truncated_std, rel=4 / np.sqrt(kernel.size) + 2e-3)


# --------------------------------------------------------------------------- weight-decay scope

def test_seed_resnet8_decays_every_trainable_variable():
    model = models.build_model("seed_resnet8", WD, weight_decay_scope="all")
    assert len(model.trainable_variables) == 32  # 10 conv kernels, 10 BN (gamma, beta), dense kernel + bias
    assert len(decayed_variables(lambda: model.losses, model.trainable_variables)) == 32
    expected = WD / 2 * sum(np.sum(v.numpy().astype(np.float64) ** 2) for v in model.trainable_variables)
    assert float(tf.add_n(model.losses)) == pytest.approx(expected, rel=1e-5)
    # The count: the `kernels` scope leaves BN gamma/beta and the dense bias undecayed.
    kernels_only = models.build_model("seed_resnet8", WD, weight_decay_scope="kernels")
    decayed = {v.name for v in decayed_variables(lambda: kernels_only.losses, kernels_only.trainable_variables)}
    undecayed = sum(int(np.prod(v.shape)) for v in kernels_only.trainable_variables if v.name not in decayed)
    assert undecayed == 2852


def test_quick_student_decays_its_kernels_only():
    student = presets.resolve("quick").student
    assert student.weight_decay_scope == "kernels"
    model = models.build_model(student.model, student.weight_decay, weight_decay_scope=student.weight_decay_scope)
    decayed = decayed_variables(lambda: model.losses, model.trainable_variables)
    # resnet8: stem + 2 + 3 + 3 conv kernels (stages 2 and 3 project their shortcut) + the dense kernel.
    assert len(decayed) == 10 and len(model.trainable_variables) == 29
    assert all(v.name.endswith("kernel:0") for v in decayed)


def test_unknown_weight_decay_scope_is_refused():
    with pytest.raises(ValueError, match="unknown weight_decay_scope 'bias'; valid: all, kernels"):
        models.build_model("resnet8", WD, weight_decay_scope="bias")


# --------------------------------------------------------------------------- what one step applies

def plain_sgd_distiller(method_name, stage, weight_decay=WD, params=None, teacher_name="resnet8"):
    """A Distiller whose optimizer is SGD without momentum and lr 1: a step subtracts the gradient."""
    harness = build_distiller(method_name, params, stage, teacher=teacher_name, weight_decay=weight_decay,
                              weight_decay_scope="all", optimizer=keras.optimizers.SGD(1.0))
    return harness.distiller, harness.student, harness.teacher, harness.method


def task_terms(distiller, images, labels):
    """The stage's loss terms on this batch with the current weights (a separate forward pass)."""
    student_taps = distiller._student_taps(images, labels)
    teacher_taps = distiller._teacher_taps(images, labels)
    ce = cross_entropy(labels, student_taps["logits"])
    return distiller.method.loss_terms(labels, ce, student_taps, teacher_taps, stage=distiller.stage)


@pytest.mark.parametrize("name", ["fitnet", "ab"])
def test_initialisation_stage_decays_the_variables_the_distillation_loss_reaches(name):
    """op_util.py:47-55: while initialising, gradient = distillation + weight decay for the
    variables the distillation loss reaches (AB's connectors included), nothing for the others."""
    distiller, student, _, method = plain_sgd_distiller(name, INIT_STAGE, weight_decay=0.05)
    images, labels = images_and_labels()
    variables = distiller.trainable_student_variables()
    with tf.GradientTape() as tape:
        distillation = tf.add_n(list(task_terms(distiller, images, labels).values()))
    task_gradients = tape.gradient(distillation, variables)
    before = [v.numpy().astype(np.float64) for v in variables]
    distiller.train_on_batch(images, labels)
    reached = 0
    for variable, old, gradient in zip(variables, before, task_gradients):
        step = old - variable.numpy()
        if gradient is None:
            np.testing.assert_array_equal(step, 0.0, err_msg=variable.name)
            continue
        reached += 1
        # The decay's gradient wd * w (float64), with the task gradient of the same weights.
        np.testing.assert_allclose(step, gradient.numpy() + 0.05 * old, rtol=2e-3, atol=2e-6, err_msg=variable.name)
    classifier = {v.name for v in student.get_layer("logits").trainable_variables}
    assert reached == len(variables) - len(classifier)
    if name == "ab":
        assert len(method.weight_decay_losses()) == 9  # 3 connectors: kernel, BN gamma, BN beta


def test_kd_svd_clip_norm_is_the_ce_gradients_alone():
    """op_util.py:72-81: gradient = g_CE + wd * w + clip(g_SVD, |g_CE| * sigmoid(epoch)); the
    weight decay is added after clipping and does not enter the clip norm."""
    weight_decay = 0.2  # large, so that |g_CE + wd * w| and |g_CE| clearly differ
    # A large SVD weight, so that the clip binds wherever the SVD term reaches.
    distiller, _, _, _ = plain_sgd_distiller("kd_svd", MAIN_STAGE, weight_decay=weight_decay, params={"weight": 1e4})
    distiller.epoch.assign(1.0)
    images, labels = images_and_labels(3)
    variables = distiller.trainable_student_variables()
    with tf.GradientTape(persistent=True) as tape:
        terms = task_terms(distiller, images, labels)
    g_ce = [g.numpy().astype(np.float64) for g in tape.gradient(terms["ce"], variables)]
    # The classifier is out of the SVD term's reach (no gradient: nothing to clip).
    g_svd = [np.zeros(v.shape) if g is None else g.numpy().astype(np.float64)
             for g, v in zip(tape.gradient(terms["svd"], variables), variables)]
    before = [v.numpy().astype(np.float64) for v in variables]
    distiller.train_on_batch(images, labels)
    ramp = 1 / (1 + np.exp(-1.0))

    def clipped(g, cap):
        norm = np.linalg.norm(g)
        return g if norm <= cap else g * cap / norm

    discriminating = 0
    for variable, old, ce, svd in zip(variables, before, g_ce, g_svd):
        seed = ce + weight_decay * old + clipped(svd, np.linalg.norm(ce) * ramp)
        old_rule = ce + weight_decay * old + clipped(svd, np.linalg.norm(ce + weight_decay * old) * ramp)
        np.testing.assert_allclose(old - variable.numpy(), seed, rtol=2e-3, atol=1e-6, err_msg=variable.name)
        discriminating += not np.allclose(seed, old_rule, rtol=2e-2, atol=1e-6)
    assert discriminating > len(variables) // 2  # the old clip norm would fail this test


# --------------------------------------------------------------------------- KD-SVD reduction

def test_kd_svd_sums_over_the_batch_as_the_seed():
    """nets/Distillation.py:128: tf.reduce_sum over everything, the batch included (the old
    batch mean is 1/4 of it on this batch of 4)."""
    rng = np.random.default_rng(13)
    student, teacher = sign_insensitive_svd_taps(rng), sign_insensitive_svd_taps(rng)
    expected = np_kd_svd(student, teacher, 4, 1.0, reduction="batch_sum")
    got = call(methods.create("kd_svd"), student, teacher)
    np.testing.assert_allclose(got["svd"], expected, rtol=1e-8)
    assert not np.isclose(got["svd"], np_kd_svd(student, teacher, 4, 1.0, reduction="batch_mean"), rtol=0.5)
    mean = call(methods.create("kd_svd", {"reduction": "batch_mean"}), student, teacher)
    np.testing.assert_allclose(mean["svd"], expected / 4, rtol=1e-8)
    assert got["ce"] == CE


# --------------------------------------------------------------------------- RKD normalisation

def np_seed_distance_potential(v):
    """nets/Distillation.py:167-173: every entry of the B x B distance matrix, the diagonal
    floored at sqrt(1e-12), divided by (their mean + 1e-8)."""
    n = len(v)
    d = np.array([[np.linalg.norm(v[i] - v[j]) if i != j else 1e-6 for j in range(n)] for i in range(n)])
    return d / (d.mean() + 1e-8)


def np_huber(x, y):
    e = np.abs(x - y)
    return np.mean(np.where(e <= 1.0, 0.5 * e ** 2, e - 0.5))


def test_rkd_distance_potential_is_normalised_as_the_seeds():
    rng = np.random.default_rng(21)
    student, teacher = rng.normal(size=(2, 5, 12))
    s = student / np.linalg.norm(student, axis=1, keepdims=True)
    t = teacher / np.linalg.norm(teacher, axis=1, keepdims=True)
    expected = 100.0 * np_huber(np_seed_distance_potential(s), np_seed_distance_potential(t))
    got = call(methods.create("rkd"), {"logits": student}, {"logits": teacher}, batch=5)
    np.testing.assert_allclose(got["rkd_distance"], expected, rtol=1e-8)
    paper = call(methods.create("rkd", {"distance_normalization": "off_diagonal"}), {"logits": student},
                 {"logits": teacher}, batch=5)
    assert not np.isclose(paper["rkd_distance"], expected, rtol=1e-3)


# --------------------------------------------------------------------------- DML update order

def np_symmetric_kl(first, second):
    p, q = np_softmax(first.astype(np.float64)), np_softmax(second.astype(np.float64))
    return (np_kl(p, q) + np_kl(q, p)) / 2


def emulate_seed_dml(student, peer, images, labels, learning_rate):
    """The seed's two session calls on one batch (train_w_distill.py:120-129, op_util.py:91-119),
    with plain SGD: call 1 runs the peer's train op (CE + wd + D, the peer's BN updates);
    call 2 recomputes both forward passes, so the student's D sees the updated peer, and runs
    the student's train op (the peer's BN statistics are not updated by it)."""
    student_statistics = [v.numpy() for v in student.non_trainable_variables]
    with tf.GradientTape() as tape:
        student_logits = student(images, training=True)["logits"]
        peer_logits = peer(images, training=True)["logits"]
        mutual = methods.create("dml").loss_terms(labels, 0.0, {"logits": student_logits}, {"logits": peer_logits})
        peer_loss = cross_entropy(labels, peer_logits) + tf.add_n(peer.losses) + mutual["mutual"]
    for variable, gradient in zip(peer.trainable_variables, tape.gradient(peer_loss, peer.trainable_variables)):
        variable.assign_sub(learning_rate * gradient)
    for variable, value in zip(student.non_trainable_variables, student_statistics):
        variable.assign(value)  # call 1 runs the peer's update ops only
    statistics = [v.numpy() for v in peer.non_trainable_variables]
    with tf.GradientTape() as tape:
        student_logits = student(images, training=True)["logits"]
        updated_peer_logits = peer(images, training=True)["logits"]
        mutual = methods.create("dml").loss_terms(labels, 0.0, {"logits": student_logits},
                                                  {"logits": updated_peer_logits})
        student_loss = cross_entropy(labels, student_logits) + tf.add_n(student.losses) + mutual["mutual"]
    for variable, gradient in zip(student.trainable_variables,
                                  tape.gradient(student_loss, student.trainable_variables)):
        variable.assign_sub(learning_rate * gradient)
    for variable, value in zip(peer.non_trainable_variables, statistics):
        variable.assign(value)
    return student_logits.numpy(), updated_peer_logits.numpy()


def dml_distiller(update_order, learning_rate):
    """DML between two resnet8 with plain SGD; the peer is the method's partner."""
    harness = build_distiller("dml", {"update_order": update_order}, weight_decay=WD,
                              optimizer=keras.optimizers.SGD(learning_rate),
                              partner_optimizer=keras.optimizers.SGD(learning_rate))
    return harness.distiller, harness.student, harness.partner_network


def copy_of(model):
    clone = models.build_model("resnet8", WD)
    clone.set_weights(model.get_weights())
    return clone


def test_dml_peer_steps_first_and_the_student_sees_the_updated_peer():
    learning_rate = 0.5
    images, labels = images_and_labels(5, size=16)
    distiller, student, peer = dml_distiller("sequential", learning_rate)
    seed_student, seed_peer = copy_of(student), copy_of(peer)
    student_logits, updated_peer_logits = emulate_seed_dml(seed_student, seed_peer, images, labels, learning_rate)
    logs = distiller.train_on_batch(images, labels, return_dict=True)
    for ours, seeds in ((student, seed_student), (peer, seed_peer)):
        for got, want in zip(ours.weights, seeds.weights):  # trainable and BN statistics
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6, err_msg=got.name)
    # The student's mutual term: D against the updated peer (float64 NumPy on the seed's logits).
    np.testing.assert_allclose(logs["mutual"], np_symmetric_kl(updated_peer_logits, student_logits), rtol=1e-4)

    # Both from one forward pass gives another student: the order matters on this batch.
    simultaneous, student_2, _ = dml_distiller("simultaneous", learning_rate)
    simultaneous.train_on_batch(images, labels)
    assert any(not np.allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)
               for a, b in zip(student_2.trainable_variables, seed_student.trainable_variables))


# --------------------------------------------------------------------------- presets and bad input

def test_seed_preset_shows_the_seeds_conventions():
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert cli.main(["presets", "seed"]) == 0
    seed = json.loads(output.getvalue())
    assert seed["student"]["weight_decay_scope"] == seed["teacher"]["weight_decay_scope"] == "all"
    assert seed["method_params"]["kd_svd"]["reduction"] == "batch_sum"
    assert seed["method_params"]["dml"]["update_order"] == "sequential"
    assert seed["method_params"]["rkd"]["distance_normalization"] == "all_entries"
    quick = presets.resolve("quick")
    assert quick.student.weight_decay_scope == "kernels"
    assert quick.method_params["rkd"]["distance_normalization"] == "off_diagonal"


@pytest.mark.parametrize("override, message", [
    ("student.weight_decay_scope=bias", r"weight_decay_scope must be one of all, kernels, got 'bias'"),
    ("teacher.weight_decay_scope=none", r"weight_decay_scope must be one of all, kernels, got 'none'"),
    ("method_params.kd_svd.reduction=mean", r"parameter 'reduction' must be one of batch_sum, batch_mean, got 'mean'"),
    ("method_params.kd_svd.decomposition=bogus",
     r"parameter 'decomposition' must be one of gram_eigh, seed_svd, got 'bogus'"),
    ("method_params.dml.update_order=parallel",
     r"parameter 'update_order' must be one of sequential, simultaneous, got 'parallel'"),
    ("method_params.rkd.distance_normalization=paper",
     r"parameter 'distance_normalization' must be one of all_entries, off_diagonal, got 'paper'"),
])
def test_unknown_convention_names_fail_at_set_time(override, message):
    with pytest.raises(presets.PresetError, match=message):
        presets.resolve("seed", [override])


# --------------------------------------------------------------------------- bug-compatible variants

def np_seed_align(vs, vt):
    """nets/SVP.py:82-87 per sample: M[j, i] = sign(cos(vs_j, vt_i)) where teacher vector i is
    student vector j's best |cos| match; the result is vs @ M^T."""
    out = np.zeros_like(vs)
    for b in range(len(vs)):
        cosine = vs[b].T @ vt[b]  # [K_s, K_t]
        mask = np.zeros_like(cosine)
        for j in range(cosine.shape[0]):
            i = int(np.argmax(np.abs(cosine[j])))
            mask[j, i] = np.sign(cosine[j, i])
        out[b] = vs[b] @ mask.T
    return out


def test_kd_svd_seed_alignment_matches_numpy():
    from kd_trainer.methods.kd_svd import align, seed_align

    rng = np.random.default_rng(31)
    vt = np.linalg.qr(rng.normal(size=(3, 16, 4)))[0]
    # Student vectors: the teacher's, permuted (a 3-cycle), flipped and perturbed.
    vs = vt[:, :, [1, 2, 0, 3]] * np.array([1.0, -1.0, 1.0, -1.0]) + 0.05 * rng.normal(size=(3, 16, 4))
    vs = vs / np.linalg.norm(vs, axis=1, keepdims=True)
    got = seed_align(tf.constant(vs), tf.constant(vt)).numpy()
    np.testing.assert_allclose(got, np_seed_align(vs, vt), rtol=1e-12)
    # The fix (slot k: the student vector closest to teacher vector k) differs on a permutation.
    assert not np.allclose(got, align(tf.constant(vs), tf.constant(vt)).numpy())
    kd_svd = methods.create("kd_svd", {"alignment": "seed"})
    assert kd_svd.params.alignment == "seed"


def np_seed_gradient_svd(s, u, v, ds, du, dv):
    """nets/SVP.py:89-121 (`gradient_svd`, registered as 'Svd_') for one sample in float64,
    statement by statement: K^T with its non-finite entries zeroed, msym(X) = X + X^T, and the
    branch on the sizes of dU (HW) and dV (C). `ds` is not read, as in the seed."""
    m = len(s)
    big_s, s_2, eye = np.diag(s), s ** 2, np.eye(m)
    k = (1 - eye) / (s_2[:, None] - s_2[None, :] + eye)
    kt = k.T.copy()
    kt[~np.isfinite(kt)] = 0.0

    def msym(x):
        return x + x.T

    if dv.shape[0] > du.shape[0]:  # left_grad
        u, v, du, dv = v, u, dv, du
        d = du @ np.diag(1 / (s + 1e-8))
        us = u @ big_s
        grad = (d @ v.T + u @ np.diag(np.diag(-u.T @ d)) @ v.T
                + (2 * us @ msym(kt * (v.T @ -(v @ (d.T @ us))))) @ v.T)
        return grad.T
    us = u @ big_s  # right_grad
    return (2 * us @ msym(kt * (v.T @ dv))) @ v.T


@pytest.mark.parametrize("positions, channels", [(4, 7), (7, 4), (5, 5)])  # left_grad (C > HW), right_grad
def test_kd_svd_seed_svd_gradient_is_the_seeds(positions, channels):
    from kd_trainer.methods.kd_svd import seed_svd

    rng = np.random.default_rng(41)
    x = tf.constant(rng.normal(size=(3, positions, channels)))
    m = min(positions, channels)
    weights = [rng.normal(size=shape) for shape in ((3, m), (3, positions, m), (3, channels, m))]
    with tf.GradientTape() as tape:
        tape.watch(x)
        outputs = seed_svd(x)
        objective = tf.add_n([tf.reduce_sum(w * o) for w, o in zip(weights, outputs)])
    got = tape.gradient(objective, x).numpy()
    s, u, v = (o.numpy() for o in outputs)
    expected = np.stack([np_seed_gradient_svd(s[b], u[b], v[b], *(w[b] for w in weights)) for b in range(3)])
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert np.abs(expected).max() > 1e-3


@pytest.mark.parametrize("positions, channels, twice", [(7, 4, True), (4, 7, False)])
def test_kd_svd_seed_svd_gradient_against_the_exact_one(positions, channels, twice):
    """What docs/fidelity.md says of the seed's gradient: where HW >= C (right_grad) it is twice
    the exact gradient (msym lacks a 1/2); where C > HW (left_grad) it is not a multiple of it.
    The objective, sum_l v_l^T M v_l over the top 3 right singular vectors, does not depend on signs."""
    from kd_trainer.methods.kd_svd import seed_svd

    rng = np.random.default_rng(43)
    x = rng.normal(size=(positions, channels))
    half = rng.normal(size=(channels, channels))
    m = half + half.T

    def objective(matrix):
        v = np.linalg.svd(matrix, full_matrices=False)[2][:3].T
        return np.sum(v * (m @ v))

    exact = numeric_gradient(objective, x)
    x_tf = tf.constant(x[None])
    with tf.GradientTape() as tape:
        tape.watch(x_tf)
        v = seed_svd(x_tf)[2][0, :, :3]
        value = tf.reduce_sum(v * tf.matmul(tf.constant(m), v))
    got = tape.gradient(value, x_tf).numpy()[0]
    if twice:
        np.testing.assert_allclose(got, 2 * exact, rtol=1e-6, atol=1e-8)
    else:
        projection = np.sum(got * exact) / np.sum(exact * exact)
        assert np.linalg.norm(got - projection * exact) > 0.1 * np.linalg.norm(got)


@pytest.mark.parametrize("shape", [(3, 2, 5), (2, 2, 6)])  # HW > C, HW < C
def test_kd_svd_seed_svd_forward_is_the_svd(shape):
    """Top-n normalized singular values and right singular vectors, n = min(k, HW, C), equal to
    NumPy's up to the sign of each vector (which is the solver's)."""
    from kd_trainer.methods.kd_svd import seed_svd_knowledge

    rng = np.random.default_rng(42)
    features = rng.normal(size=(3, *shape))
    values, vectors = (t.numpy() for t in seed_svd_knowledge(tf.constant(features), 5))
    n = min(5, shape[0] * shape[1], shape[2])
    assert values.shape == (3, n) and vectors.shape == (3, shape[2], n)
    for b in range(3):
        _, s, vt = np.linalg.svd(features[b].reshape(-1, shape[2]), full_matrices=False)
        np.testing.assert_allclose(values[b], s[:n] / np.linalg.norm(s[:n]), rtol=1e-10)
        cosine = np.sum(vectors[b] * vt[:n].T, axis=0)
        np.testing.assert_allclose(np.abs(cosine), 1.0, rtol=1e-10)
        np.testing.assert_allclose(vectors[b], vt[:n].T * np.sign(cosine), atol=1e-10)


def test_kd_svd_seed_svd_loss_matches_numpy_and_masks_non_finite_terms():
    """On taps where the loss does not depend on the vectors' signs the seed's decomposition
    gives the same loss as the formula; its squared RBF differences that are not finite count 0."""
    from kd_trainer.methods.kd_svd import rbf_distance, seed_rbf_distance

    rng = np.random.default_rng(13)
    student, teacher = sign_insensitive_svd_taps(rng), sign_insensitive_svd_taps(rng)
    got = call(methods.create("kd_svd", {"decomposition": "seed_svd"}), student, teacher)
    np.testing.assert_allclose(got["svd"], np_kd_svd(student, teacher, 4, 1.0), rtol=1e-8)

    vectors = [tf.constant(rng.normal(size=(2, c, 3))) for c in (4, 5, 4, 5)]
    broken = tf.tensor_scatter_nd_update(vectors[0], [[0, 1, 2]], [np.nan])
    clean = seed_rbf_distance(*vectors).numpy()
    masked = seed_rbf_distance(broken, *vectors[1:]).numpy()
    first, second, t_first, t_second = (v.numpy() for v in vectors)
    rbf = np.exp(-(first[0][:, None, :] - second[0][None, :, :]) ** 2 / 8)
    t_rbf = np.exp(-(t_first[0][:, None, :] - t_second[0][None, :, :]) ** 2 / 8)
    np.testing.assert_allclose(masked[0], clean[0] - np.sum((rbf[1, :, 2] - t_rbf[1, :, 2]) ** 2), rtol=1e-10)
    np.testing.assert_allclose(masked[1], clean[1], rtol=1e-12)
    assert np.isnan(rbf_distance(broken, *vectors[1:]).numpy()[0])  # the default does not mask


def test_one_crop_per_batch_uses_one_offset_for_every_image():
    from kd_trainer import data

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(32, 32, 32, 3), dtype=np.uint8)
    augmented = data.augment_batch(tf.constant(images), tf.constant([1, 2], tf.int64), one_crop_per_batch=True).numpy()
    offsets, flips = set(), 0
    for i in range(len(images)):
        for flipped in (False, True):
            source = np.pad(images[i, :, ::-1] if flipped else images[i], [(4, 4), (4, 4), (0, 0)], mode="reflect")
            found = [(dy, dx) for dy in range(9) for dx in range(9)
                     if np.array_equal(source[dy:dy + 32, dx:dx + 32], augmented[i])]
            if found:
                offsets.add(found[0])
                flips += flipped
                break
    assert len(offsets) == 1 and 4 < flips < 28  # one crop offset, flips still per image


def test_never_reset_momentum_carries_the_velocities():
    from kd_trainer.run_fn import _carry_momentum

    variables = [tf.Variable([1.0, 2.0]), tf.Variable([[3.0]])]
    first = keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True)
    first.build(variables)
    first.apply_gradients(zip([tf.constant([0.5, -1.0]), tf.constant([[2.0]])], variables))
    second = keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True)
    second.build(variables)
    _carry_momentum(first, second)
    for velocity, gradient in zip(second.momentums, ([0.5, -1.0], [[2.0]])):
        np.testing.assert_allclose(velocity.numpy(), -0.1 * np.array(gradient), rtol=1e-6)


def test_bug_compatible_fields_are_preset_fields():
    preset = presets.resolve("seed", ["student.one_crop_per_batch=true", "student.reset_momentum_between_stages=false",
                                      "method_params.kd_svd.alignment=seed", "method_params.ab.preact=false",
                                      "method_params.kd_svd.decomposition=seed_svd"])
    config = preset.trainer_config("student", method="kd_svd")
    assert config.one_crop_per_batch and not config.reset_momentum_between_stages
    assert config.method_params["alignment"] == "seed" and config.method_params["decomposition"] == "seed_svd"
    assert methods.create("kd_svd").params.decomposition == "gram_eigh"
    with pytest.raises(presets.PresetError, match="must be one of per_teacher_vector, seed"):
        presets.resolve("seed", ["method_params.kd_svd.alignment=tf_svd"])


# The seed standardised RGB images with the training set's statistics in BGR order
# (train_w_distill.py:207), on the 0-255 scale.
SEED_BGR_MEAN = np.array([112.4776, 124.1058, 129.3773])
SEED_BGR_STD = np.array([70.4587, 65.4312, 68.2094])


def test_seed_bgr_normalization_is_the_seeds_preprocessing():
    from kd_trainer import data

    images = np.random.default_rng(5).integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    expected = (images.astype(np.float64) - SEED_BGR_MEAN) / SEED_BGR_STD
    got = data.normalize(tf.constant(images), "seed_bgr").numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(data.denormalize(got, "seed_bgr").numpy(), images, atol=1e-3)
    # The fix standardises the red channel with the red statistics, not the blue ones.
    rgb = data.normalize(tf.constant(images)).numpy()
    np.testing.assert_allclose(rgb[..., 0], (images[..., 0] / 255.0 - 0.5071) / 0.2673, rtol=1e-5, atol=1e-5)
    assert not np.allclose(rgb, got, atol=0.1)


def test_an_export_serves_and_records_its_normalization(tmp_path):
    from components.cifar_example_gen import to_example
    from kd_trainer import data, export
    from kd_trainer.contract import LOGITS_KEY, SERVING_SIGNATURE

    model = models.build_model("resnet8", WD)
    export.save(model, str(tmp_path), "seed_bgr")
    loaded = tf.saved_model.load(str(tmp_path))
    assert export.input_normalization(loaded) == "seed_bgr"
    images = np.random.default_rng(6).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    examples = tf.constant([to_example(image, 1, 1, f"{i}.png") for i, image in enumerate(images)])
    served = loaded.signatures[SERVING_SIGNATURE](examples=examples)[LOGITS_KEY].numpy()
    expected = model((images.astype(np.float32) - SEED_BGR_MEAN.astype(np.float32))
                     / SEED_BGR_STD.astype(np.float32), training=False)["logits"].numpy()
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(served, model(data.normalize(images), training=False)["logits"].numpy(), atol=1e-3)


def test_seed_bgr_normalization_is_a_data_field():
    preset = presets.resolve("seed", ["data.normalization=seed_bgr"])
    for role in ("teacher", "baseline"):
        assert preset.trainer_config(role).input_normalization == "seed_bgr"
    assert preset.trainer_config("student", method="at").input_normalization == "seed_bgr"
    assert presets.resolve("seed").data.normalization == "cifar100_rgb"
    with pytest.raises(presets.PresetError, match="data.normalization must be one of cifar100_rgb, seed_bgr, got 'bgr'"):
        presets.resolve("seed", ["data.normalization=bgr"])
