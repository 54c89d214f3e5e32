"""DKD, DIST, logit standardization, PKT, SP, NST and CC against independent float64 NumPy
computations of their formulas (values, and gradients by central finite differences), the
invariances that follow from their definitions, and a short training signal on tiny data.

The NumPy references are written from the papers' formulas and the official code's
constants (docs/methods.md), mostly with explicit loops, and never call the TensorFlow code.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from kd_trainer import methods, models
from kd_trainer.methods.base import RunInfo
from method_harness import batch_for, build_distiller, np_softmax, numeric_gradient

RTOL = 1e-8
CE = 2.5
CLASSES = 10


# --------------------------------------------------------------------------- NumPy references

def np_standardize(z):
    """Per row: (z - mean) / (1e-7 + sample standard deviation)."""
    return (z - z.mean(axis=1, keepdims=True)) / (1e-7 + z.std(axis=1, ddof=1, keepdims=True))


def np_kl_rows(p, q):
    return np.mean([np.sum(p_i * np.log(p_i / q_i)) for p_i, q_i in zip(p, q)])


def np_kd(student, teacher, temperature, standardized):
    if standardized:
        student, teacher = np_standardize(student), np_standardize(teacher)
    return np_kl_rows(np_softmax(teacher / temperature), np_softmax(student / temperature))


def np_dkd(student, teacher, labels, temperature, standardized=False):
    """(TCKD, NCKD) * T^2: binary (target / rest) KL, and KL over the other classes only."""
    if standardized:
        student, teacher = np_standardize(student), np_standardize(teacher)
    tckd, nckd = [], []
    for s, t, y in zip(student, teacher, labels):
        p_s, p_t = np_softmax(s / temperature), np_softmax(t / temperature)
        b_s = np.array([p_s[y], sum(p_s[j] for j in range(len(s)) if j != y)])
        b_t = np.array([p_t[y], sum(p_t[j] for j in range(len(t)) if j != y)])
        tckd.append(np.sum(b_t * np.log(b_t / b_s)))
        q_s, q_t = np_softmax(np.delete(s, y) / temperature), np_softmax(np.delete(t, y) / temperature)
        nckd.append(np.sum(q_t * np.log(q_t / q_s)))
    return np.mean(tckd) * temperature ** 2, np.mean(nckd) * temperature ** 2


def np_pearson(a, b, eps=1e-8):
    a, b = a - a.mean(), b - b.mean()
    return np.dot(a, b) / (math.sqrt(np.dot(a, a)) * math.sqrt(np.dot(b, b)) + eps)


def np_dist(student, teacher, temperature, standardized=False):
    """(inter, intra) * T^2: 1 - mean Pearson correlation per sample, and per class."""
    if standardized:
        student, teacher = np_standardize(student), np_standardize(teacher)
    p_s, p_t = np_softmax(student / temperature), np_softmax(teacher / temperature)
    inter = 1 - np.mean([np_pearson(p_s[i], p_t[i]) for i in range(len(p_s))])
    intra = 1 - np.mean([np_pearson(p_s[:, c], p_t[:, c]) for c in range(p_s.shape[1])])
    return inter * temperature ** 2, intra * temperature ** 2


def np_pkt(student, teacher, eps=1e-7):
    def conditional(v):
        batch = len(v)
        unit = [v[i] / (math.sqrt(np.dot(v[i], v[i])) + eps) for i in range(batch)]
        k = np.array([[(np.dot(unit[i], unit[j]) + 1) / 2 for j in range(batch)] for i in range(batch)])
        return k / k.sum(axis=1, keepdims=True)
    p_s, p_t = conditional(student), conditional(teacher)
    return np.mean(p_t * np.log((p_t + eps) / (p_s + eps)))


def np_sp(student, teacher):
    def similarity(f):
        flat = f.reshape(len(f), -1)
        g = np.array([[np.dot(a, b) for b in flat] for a in flat])
        return g / np.maximum(np.sqrt((g ** 2).sum(axis=1, keepdims=True)), 1e-12)
    batch = len(student)
    return np.sum((similarity(teacher) - similarity(student)) ** 2) / batch ** 2


def np_avg_pool(f, factor):
    b, h, w, c = f.shape
    return f.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def np_nst(student, teacher):
    """MMD^2 with k(x, y) = (x . y)^2 between L2-normalised per-channel spatial maps."""
    if student.shape[1] > teacher.shape[1]:
        student = np_avg_pool(student, student.shape[1] // teacher.shape[1])
    elif teacher.shape[1] > student.shape[1]:
        teacher = np_avg_pool(teacher, teacher.shape[1] // student.shape[1])

    def patterns(f):  # [B, C, HW]
        flat = f.reshape(f.shape[0], -1, f.shape[3]).transpose(0, 2, 1)
        return flat / np.maximum(np.linalg.norm(flat, axis=2, keepdims=True), 1e-12)

    def mean_kernel(a, b):
        return np.mean([np.dot(a[n, i], b[n, j]) ** 2
                        for n in range(a.shape[0]) for i in range(a.shape[1]) for j in range(b.shape[1])])

    s, t = patterns(student), patterns(teacher)
    return mean_kernel(t, t) + mean_kernel(s, s) - 2 * mean_kernel(s, t)


def np_cc_taylor(e_s, e_t, gamma, order):
    def correlation(e):
        unit = e / np.linalg.norm(e, axis=1, keepdims=True)
        return np.array([[sum(math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * np.dot(a, b) ** p
                              for p in range(order + 1)) for b in unit] for a in unit])
    return np.mean((correlation(e_t) - correlation(e_s)) ** 2)


def np_cc_repdistiller(e_s, e_t):
    d = np.abs(e_s - e_t)
    return np.mean([np.dot(d[i], d[i + 1]) for i in range(len(d) - 1)])


# --------------------------------------------------------------------------- helpers

def logits_pair(seed, batch=6, classes=CLASSES, scale=3.0):
    rng = np.random.default_rng(seed)
    student, teacher = rng.normal(size=(2, batch, classes)) * scale
    return student, teacher, rng.integers(0, classes, size=batch)


def terms_of(method, student_taps, teacher_taps, labels=None):
    student_taps = {k: tf.constant(v) for k, v in student_taps.items()}
    teacher_taps = {k: tf.constant(v) for k, v in teacher_taps.items()}
    labels = tf.constant(labels if labels is not None else np.zeros(len(next(iter(student_taps.values())))))
    terms = method.loss_terms(tf.cast(labels, tf.int32), tf.constant(CE, tf.float64), student_taps, teacher_taps)
    assert set(terms) == set(method.loss_term_names)
    return {k: float(v) for k, v in terms.items()}


def distillation_gradient(method, student_taps, teacher_taps, tap, labels=None):
    """d (sum of the non-CE terms) / d student[tap], by TensorFlow."""
    student_tf = {k: tf.constant(v) for k, v in student_taps.items()}
    teacher_tf = {k: tf.constant(v) for k, v in teacher_taps.items()}
    labels = tf.constant(np.zeros(len(student_taps[tap])) if labels is None else labels, tf.int32)
    with tf.GradientTape() as tape:
        tape.watch(student_tf[tap])
        terms = method.loss_terms(labels, tf.constant(CE, tf.float64), student_tf, teacher_tf)
        total = tf.add_n([v for k, v in terms.items() if k != "ce"])
    return tape.gradient(total, student_tf[tap]).numpy()


def with_clock(method, epoch=0.0, epochs=240):
    """The method prepared for a run of `epochs`, its loss_terms given the Distiller's `epoch=`
    input (for methods with a warm-up, `uses_epoch`)."""
    method.prepare(RunInfo(main_epochs=epochs))
    if method.uses_epoch:
        method.loss_terms = functools.partial(method.loss_terms, epoch=tf.Variable(float(epoch)))
    return method


# --------------------------------------------------------------------------- logit standardization

def test_standardize_matches_numpy():
    from kd_trainer.methods.logit_standardization import standardize
    logits, _, _ = logits_pair(0)
    np.testing.assert_allclose(standardize(tf.constant(logits)).numpy(), np_standardize(logits), rtol=1e-12)


@pytest.mark.parametrize("params", [
    {"logit_standardization": True},
    {"logit_standardization": True, "temperature": 2.0, "kd_weight": 9.0, "ce_weight": 0.1,
     "temperature_squared": True},  # sunshangquan/logit-standardization-KD's CIFAR-100 KD setting
])
def test_soft_logits_with_logit_standardization_matches_numpy(params):
    student, teacher, labels = logits_pair(1)
    method = methods.create("soft_logits", params)
    t = method.params.temperature
    expected = np_kd(student, teacher, t, True) * (t ** 2 if method.params.temperature_squared else 1)
    got = terms_of(method, {"logits": student}, {"logits": teacher}, labels)
    assert got["kd"] == pytest.approx(method.params.kd_weight * expected, rel=RTOL)
    gradient = numeric_gradient(lambda s: method.params.kd_weight * np_kd(s, teacher, t, True)
                                * (t ** 2 if method.params.temperature_squared else 1), student)
    np.testing.assert_allclose(distillation_gradient(method, {"logits": student}, {"logits": teacher}, "logits"),
                               gradient, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name", ["soft_logits", "dkd", "dist"])
def test_logit_standardization_makes_the_loss_invariant_to_shift_and_scale(name):
    """z-scoring removes each sample's logit mean and scale, on either side independently."""
    student, teacher, labels = logits_pair(2)
    method = with_clock(methods.create(name, {"logit_standardization": True}), epoch=239)
    reference = terms_of(method, {"logits": student}, {"logits": teacher}, labels)
    rng = np.random.default_rng(3)
    shift = rng.normal(size=(len(student), 1)) * 5
    scale = rng.uniform(0.2, 5.0, size=(len(student), 1))
    for s, t in [(student * scale + shift, teacher), (student, teacher * scale - shift),
                 (student * scale + shift, teacher * scale[::-1] + shift[::-1])]:
        got = terms_of(method, {"logits": s}, {"logits": t}, labels)
        for term, value in reference.items():
            assert got[term] == pytest.approx(value, rel=1e-6), term
    # Without standardization the loss does depend on the scale.
    plain = with_clock(methods.create(name), epoch=239)
    unscaled = terms_of(plain, {"logits": student}, {"logits": teacher}, labels)
    scaled = terms_of(plain, {"logits": 3 * student}, {"logits": teacher}, labels)
    assert any(abs(scaled[k] - unscaled[k]) > 1e-3 * abs(unscaled[k]) for k in unscaled if k != "ce")


# --------------------------------------------------------------------------- DKD

@pytest.mark.parametrize("params", [{}, {"temperature": 2.0, "tckd_weight": 9.0, "nckd_weight": 72.0,
                                         "logit_standardization": True, "ce_weight": 0.5}])
def test_dkd_matches_numpy(params):
    student, teacher, labels = logits_pair(4)
    method = with_clock(methods.create("dkd", params), epoch=100)
    p = method.params
    tckd, nckd = np_dkd(student, teacher, labels, p.temperature, p.logit_standardization)
    got = terms_of(method, {"logits": student}, {"logits": teacher}, labels)
    assert got["ce"] == pytest.approx(p.ce_weight * CE, rel=1e-12)
    assert got["tckd"] == pytest.approx(p.tckd_weight * tckd, rel=RTOL)
    assert got["nckd"] == pytest.approx(p.nckd_weight * nckd, rel=RTOL)
    gradient = numeric_gradient(lambda s: np.dot([p.tckd_weight, p.nckd_weight],
                                                 np_dkd(s, teacher, labels, p.temperature, p.logit_standardization)),
                                student)
    np.testing.assert_allclose(distillation_gradient(method, {"logits": student}, {"logits": teacher}, "logits",
                                                     labels), gradient, rtol=1e-5, atol=1e-9)


def test_dkd_defaults_are_mdistillers():
    p = methods.create("dkd").params
    assert (p.ce_weight, p.tckd_weight, p.nckd_weight, p.temperature) == (1.0, 1.0, 8.0, 4.0)
    assert p.warmup_fraction * 240 == pytest.approx(20)


def test_dkd_tckd_plus_weighted_nckd_is_classical_kd():
    """The paper's identity: KD = TCKD + (1 - p_t[target]) NCKD (per sample; checked with B = 1)."""
    student, teacher, labels = logits_pair(5, batch=1)
    tckd, nckd = np_dkd(student, teacher, labels, 4.0)
    method = with_clock(methods.create("dkd", {"tckd_weight": 1.0, "nckd_weight": 1.0}), epoch=100)
    got = terms_of(method, {"logits": student}, {"logits": teacher}, labels)
    assert got["tckd"] == pytest.approx(tckd, rel=RTOL)
    p_target = np_softmax(teacher / 4.0)[0, labels[0]]
    kd = np_kd(student, teacher, 4.0, False) * 16
    assert got["tckd"] + (1 - p_target) * got["nckd"] == pytest.approx(kd, rel=1e-9)


@pytest.mark.parametrize("epochs, epoch, factor", [
    (240, 0, 1 / 20), (240, 9, 10 / 20), (240, 19, 1.0), (240, 200, 1.0),  # mdistiller: min(epoch / 20, 1), from 1
    (24, 0, 0.5), (24, 1, 1.0), (12, 0, 1.0),  # scaled with the run: 20/240 of 24 epochs is 2
])
def test_dkd_warmup_scales_with_the_runs_epochs(epochs, epoch, factor):
    student, teacher, labels = logits_pair(6)
    full = terms_of(with_clock(methods.create("dkd"), epoch=239, epochs=240), {"logits": student},
                    {"logits": teacher}, labels)
    got = terms_of(with_clock(methods.create("dkd"), epoch=epoch, epochs=epochs), {"logits": student},
                   {"logits": teacher}, labels)
    assert got["tckd"] == pytest.approx(factor * full["tckd"], rel=1e-6)
    assert got["nckd"] == pytest.approx(factor * full["nckd"], rel=1e-6)
    assert got["ce"] == full["ce"]


def test_dkd_follows_the_distillers_epoch_variable():
    """The warm-up reads the Distiller's epoch counter in the graph: one traced step, two epochs."""
    # Warm-up: 20/240 of 24 epochs = 2 epochs.
    distiller = build_distiller("dkd", {"ce_weight": 0.0}, main_epochs=24, optimizer=keras.optimizers.SGD(0.0),
                                run_eagerly=False).distiller
    images = tf.zeros((2, *models.INPUT_SHAPE))
    labels = tf.constant([0, 1])
    distiller.epoch.assign(0.0)
    first = distiller.train_on_batch(images, labels, return_dict=True, reset_metrics=True)
    distiller.epoch.assign(5.0)
    later = distiller.train_on_batch(images, labels, return_dict=True, reset_metrics=True)
    assert first["nckd"] == pytest.approx(0.5 * later["nckd"], rel=1e-5)


def test_dkd_without_the_runs_epochs_is_a_clear_error():
    student, teacher, labels = logits_pair(7)
    with pytest.raises(ValueError, match="method 'dkd': the warm-up .* needs the run's epoch count and the current"):
        terms_of(methods.create("dkd"), {"logits": student}, {"logits": teacher}, labels)
    got = terms_of(methods.create("dkd", {"warmup_fraction": 0.0}), {"logits": student}, {"logits": teacher}, labels)
    assert got["nckd"] == pytest.approx(8.0 * np_dkd(student, teacher, labels, 4.0)[1], rel=RTOL)


# --------------------------------------------------------------------------- DIST

@pytest.mark.parametrize("params", [{}, {"temperature": 1.0, "kd_weight": 1.0, "inter_weight": 2.0,
                                         "intra_weight": 0.5}, {"logit_standardization": True}])
def test_dist_matches_numpy(params):
    student, teacher, labels = logits_pair(8)
    method = methods.create("dist", params)
    p = method.params
    inter, intra = np_dist(student, teacher, p.temperature, p.logit_standardization)
    got = terms_of(method, {"logits": student}, {"logits": teacher}, labels)
    assert got["ce"] == pytest.approx(p.ce_weight * CE, rel=1e-12)
    assert got["dist_inter"] == pytest.approx(p.kd_weight * p.inter_weight * inter, rel=RTOL)
    assert got["dist_intra"] == pytest.approx(p.kd_weight * p.intra_weight * intra, rel=RTOL)

    def total(s):
        i, j = np_dist(s, teacher, p.temperature, p.logit_standardization)
        return p.kd_weight * (p.inter_weight * i + p.intra_weight * j)
    np.testing.assert_allclose(distillation_gradient(method, {"logits": student}, {"logits": teacher}, "logits"),
                               numeric_gradient(total, student), rtol=1e-5, atol=1e-9)


def test_dist_defaults_are_the_official_cifar_setting():
    p = methods.create("dist").params
    assert (p.ce_weight, p.kd_weight, p.inter_weight, p.intra_weight, p.temperature) == (1.0, 2.0, 1.0, 1.0, 4.0)


def test_dist_relations_ignore_a_constant_added_to_a_samples_logits():
    student, teacher, labels = logits_pair(9)
    method = methods.create("dist")
    reference = terms_of(method, {"logits": student}, {"logits": teacher}, labels)
    shift = np.random.default_rng(10).normal(size=(len(student), 1)) * 10
    got = terms_of(method, {"logits": student + shift}, {"logits": teacher - shift}, labels)
    assert got["dist_inter"] == pytest.approx(reference["dist_inter"], rel=1e-9)
    assert got["dist_intra"] == pytest.approx(reference["dist_intra"], rel=1e-9)


def test_dist_vanishes_when_student_equals_teacher():
    """Up to the source's 1e-8 in the cosine denominator (T^2 * 1e-8 / ||p - mean p||^2 here)."""
    _, teacher, labels = logits_pair(11)
    got = terms_of(methods.create("dist"), {"logits": teacher}, {"logits": teacher}, labels)
    assert 0 < got["dist_inter"] < 1e-4 and 0 < got["dist_intra"] < 1e-4


# --------------------------------------------------------------------------- PKT, SP, NST

def test_pkt_matches_numpy():
    rng = np.random.default_rng(12)
    student, teacher = np.abs(rng.normal(size=(6, 5))), np.abs(rng.normal(size=(6, 7)))  # widths may differ
    method = methods.create("pkt")
    got = terms_of(method, {"embedding": student}, {"embedding": teacher})
    assert got["pkt"] == pytest.approx(30000.0 * np_pkt(student, teacher), rel=RTOL)
    assert got["ce"] == pytest.approx(CE, rel=1e-12)
    np.testing.assert_allclose(distillation_gradient(method, {"embedding": student}, {"embedding": teacher},
                                                     "embedding"),
                               numeric_gradient(lambda s: 30000.0 * np_pkt(s, teacher), student), rtol=1e-5, atol=1e-7)


def test_pkt_ignores_each_samples_scale():
    rng = np.random.default_rng(13)
    student, teacher = np.abs(rng.normal(size=(2, 6, 5)))
    method = methods.create("pkt")
    reference = terms_of(method, {"embedding": student}, {"embedding": teacher})["pkt"]
    scaled = terms_of(method, {"embedding": student * rng.uniform(0.5, 4, size=(6, 1))}, {"embedding": teacher})
    assert scaled["pkt"] == pytest.approx(reference, rel=1e-6)


@pytest.mark.parametrize("student_shape, teacher_shape", [((2, 2, 3), (2, 2, 3)), ((2, 2, 3), (4, 4, 5))])
def test_sp_matches_numpy(student_shape, teacher_shape):
    rng = np.random.default_rng(14)
    student = np.maximum(rng.normal(size=(5, *student_shape)), 0)
    teacher = np.maximum(rng.normal(size=(5, *teacher_shape)), 0)
    method = methods.create("sp")
    got = terms_of(method, {"stage3": student}, {"stage3": teacher})
    assert got["sp"] == pytest.approx(3000.0 * np_sp(student, teacher), rel=RTOL)
    np.testing.assert_allclose(distillation_gradient(method, {"stage3": student}, {"stage3": teacher}, "stage3"),
                               numeric_gradient(lambda s: 3000.0 * np_sp(s, teacher), student), rtol=1e-5, atol=1e-6)


def test_sp_ignores_a_global_scale_of_the_features():
    rng = np.random.default_rng(15)
    student, teacher = np.abs(rng.normal(size=(2, 5, 2, 2, 3)))
    method = methods.create("sp")
    reference = terms_of(method, {"stage3": student}, {"stage3": teacher})["sp"]
    assert terms_of(method, {"stage3": 7 * student}, {"stage3": teacher})["sp"] == pytest.approx(reference, rel=1e-9)


NST_SHAPES = {"stage1": (4, 4, 2), "stage2": (2, 2, 3), "stage3": (1, 1, 4)}


def nst_taps(rng, shapes, batch=3):
    return {tap: np.maximum(rng.normal(size=(batch, *shape)), 0) + 0.01 for tap, shape in shapes.items()}


@pytest.mark.parametrize("teacher_shapes", [
    NST_SHAPES, {"stage1": (8, 8, 3), "stage2": (4, 4, 2), "stage3": (2, 2, 5)}])  # teacher maps 2x larger
def test_nst_matches_numpy(teacher_shapes):
    rng = np.random.default_rng(16)
    student, teacher = nst_taps(rng, NST_SHAPES), nst_taps(rng, teacher_shapes)
    method = methods.create("nst")
    method.build({k: tf.TensorShape((None, *v)) for k, v in NST_SHAPES.items()},
                  {k: tf.TensorShape((None, *v)) for k, v in teacher_shapes.items()})
    got = terms_of(method, student, teacher)
    expected = sum(np_nst(student[tap], teacher[tap]) for tap in NST_SHAPES)
    assert got["nst"] == pytest.approx(50.0 * expected, rel=RTOL)

    def stage2_only(s):
        return 50.0 * (np_nst(s, teacher["stage2"]) + np_nst(student["stage1"], teacher["stage1"])
                       + np_nst(student["stage3"], teacher["stage3"]))
    np.testing.assert_allclose(distillation_gradient(method, student, teacher, "stage2"),
                               numeric_gradient(stage2_only, student["stage2"]), rtol=1e-5, atol=1e-7)


def test_nst_is_zero_when_student_equals_teacher():
    taps = nst_taps(np.random.default_rng(17), NST_SHAPES)
    assert terms_of(methods.create("nst"), taps, taps)["nst"] == pytest.approx(0.0, abs=1e-10)


def test_nst_rejects_maps_whose_sizes_do_not_divide():
    shapes = {k: tf.TensorShape((None, *v)) for k, v in NST_SHAPES.items()}
    teacher = dict(shapes, stage1=tf.TensorShape((None, 6, 6, 2)))
    with pytest.raises(ValueError, match="method 'nst': tap 'stage1' is 4x4 in the student and 6x6 in the teacher"):
        methods.create("nst").build(shapes, teacher)


# --------------------------------------------------------------------------- CC

def built_cc(params, student_dim=6, teacher_dim=9):
    method = methods.create("cc", params)
    method.build({"embedding": tf.TensorShape((None, student_dim))}, {"embedding": tf.TensorShape((None, teacher_dim))})
    return method


def embed(layer, x):
    kernel, bias = (v.numpy() for v in layer.weights)
    return x @ kernel + bias


@pytest.mark.parametrize("params", [{}, {"gamma": 0.8, "taylor_order": 4, "embedding_dim": 5},
                                    {"kernel": "repdistiller"}])
def test_cc_matches_numpy(params, float64_layers):
    rng = np.random.default_rng(18)
    student, teacher = np.abs(rng.normal(size=(6, 6))), np.abs(rng.normal(size=(6, 9)))
    method = built_cc(params)
    p = method.params

    def reference(s):
        e_s, e_t = embed(method.student_embedding, s), embed(method.teacher_embedding, teacher)
        if p.kernel == "taylor_rbf":
            return p.weight * np_cc_taylor(e_s, e_t, p.gamma, p.taylor_order)
        return p.weight * np_cc_repdistiller(e_s, e_t)
    got = terms_of(method, {"embedding": student}, {"embedding": teacher})
    assert got["cc"] == pytest.approx(reference(student), rel=RTOL)
    assert got["ce"] == pytest.approx(CE, rel=1e-12)
    np.testing.assert_allclose(distillation_gradient(method, {"embedding": student}, {"embedding": teacher},
                                                     "embedding"),
                               numeric_gradient(reference, student), rtol=1e-5, atol=1e-10)


def test_cc_taylor_expansion_converges_to_the_gaussian_rbf():
    from kd_trainer.methods.cc import taylor_rbf_correlation
    rng = np.random.default_rng(19)
    e = rng.normal(size=(5, 4))
    unit = e / np.linalg.norm(e, axis=1, keepdims=True)
    rbf = np.exp(-0.4 * ((unit[:, None] - unit[None]) ** 2).sum(-1))
    np.testing.assert_allclose(taylor_rbf_correlation(tf.constant(e), 0.4, 20).numpy(), rbf, rtol=1e-12)
    # Order 2 (the paper's): the remainder is largest at similarity 1, 1 - exp(-0.8) (1 + 0.8 + 0.32).
    worst = 1 - math.exp(-0.8) * (1 + 0.8 + 0.32)
    error = np.abs(taylor_rbf_correlation(tf.constant(e), 0.4, 2).numpy() - rbf)
    assert error.max() == pytest.approx(worst, rel=1e-9)


def test_cc_embeddings_are_trainable_connectors_initialised_like_torch():
    method = built_cc({}, student_dim=64, teacher_dim=256)
    assert sorted(tuple(v.shape) for v in method.trainable_variables) == [(64, 128), (128,), (128,), (256, 128)]
    kernel = method.teacher_embedding.kernel.numpy()
    assert np.abs(kernel).max() <= 1 / math.sqrt(256) and np.abs(kernel).max() > 0.9 / math.sqrt(256)


def test_cc_rejects_an_unknown_kernel_before_loading_the_method():
    message = "method 'cc': parameter 'kernel' must be one of taylor_rbf, repdistiller, got 'gaussian'"
    with pytest.raises(ValueError, match=message):
        methods.catalog.check_params("cc", {"kernel": "gaussian"})  # what presets and --set run, without TF
    with pytest.raises(ValueError, match=message):
        methods.create("cc", {"kernel": "gaussian"})


# --------------------------------------------------------------------------- training signal

@pytest.mark.parametrize("name, params", [
    ("dkd", {"warmup_fraction": 0.0}), ("dist", {}), ("pkt", {}), ("sp", {}), ("nst", {}),
    ("cc", {"weight": 100.0}),  # at 0.02 the term is ~1e-6 (docs/methods.md), too small to see in 6 steps
    ("soft_logits", {"logit_standardization": True, "temperature": 2.0, "kd_weight": 9.0, "temperature_squared": True}),
])
def test_training_moves_the_student_toward_the_teacher(name, params):
    """SGD steps on the distillation term alone (CE weight 0), on one tiny batch, lower it and
    move the method's connectors."""
    # Eager steps: a handful of steps cost less than tracing the train function.
    harness = build_distiller(name, {**params, "ce_weight": 0.0},
                              optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=False))
    distiller, method = harness.distiller, harness.method
    images, labels = batch_for(method, 8, seed=20)
    connectors_before = [v.numpy().copy() for v in method.trainable_variables]
    distillation = [term for term in method.loss_term_names if term != "ce"]
    history = []
    for _ in range(6):
        logs = distiller.train_on_batch(images, labels, return_dict=True, reset_metrics=True)
        history.append(sum(logs[term] for term in distillation))
    assert np.all(np.isfinite(history))
    assert history[-1] < 0.8 * history[0], history
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(connectors_before, method.trainable_variables))
