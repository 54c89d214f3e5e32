"""Golden tests: each distillation loss against an independent NumPy computation of its formula.

The NumPy references below are written from the formulas (docs in shared/reference/methods.md),
mostly with explicit loops, and never call the TensorFlow code. Inputs are small float64
tensors so that the comparisons can be tight.
"""

import itertools

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from kd_trainer import methods
from kd_trainer.distiller import with_input_gradient
from kd_trainer.methods.activation_boundary import activation_boundary_loss
from kd_trainer.methods.attention import attention_map
from method_harness import np_kl, np_softmax

RTOL = 1e-8
CE = 2.5
STAGES = ("stage1", "stage2", "stage3")
# Post-ReLU stage outputs of a small network: halving resolution, doubling width.
TAP_SHAPES = {"stage1": (8, 8, 4), "stage2": (4, 4, 8), "stage3": (2, 2, 16)}


# --------------------------------------------------------------------------- NumPy references

def np_hint(s, t):
    """FitNet: mean((s - t)^2) over every element."""
    return np.mean((s - t) ** 2)


def np_attention_map(f):
    """[B, H, W, C] -> [B, H*W]: per sample, mean over channels of F^2, flattened, unit L2 norm."""
    q = np.stack([np.mean(sample ** 2, axis=-1).ravel() for sample in f])
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def np_at(student, teacher, beta):
    """Sum over the 3 taps of beta / 2 * mean over batch and positions of (Q_s - Q_t)^2."""
    return sum(beta / 2 * np.mean((np_attention_map(student[k]) - np_attention_map(teacher[k])) ** 2)
               for k in STAGES)


def np_max_pool_2x2(f):
    b, h, w, c = f.shape
    return f.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def np_fsp_matrix(fa, fb):
    """G = F_a^T F_b / (H_b W_b) per sample, F_a 2x2 max-pooled while larger than F_b."""
    while fa.shape[1] > fb.shape[1]:
        fa = np_max_pool_2x2(fa)
    b, hb, wb, _ = fb.shape
    return np.stack([fa[i].reshape(hb * wb, -1).T @ fb[i].reshape(hb * wb, -1) for i in range(b)]) / (hb * wb)


def np_fsp(student, teacher, weight):
    total = 0.0
    for a, b in [("stage1", "stage2"), ("stage2", "stage3")]:
        diff = np_fsp_matrix(teacher[a], teacher[b]) - np_fsp_matrix(student[a], student[b])
        total += np.mean([np.sum(d ** 2) / 2 for d in diff])
    return weight * total


def np_huber_mean(x, y):
    e = np.abs(x - y)
    return np.mean(np.where(e < 1.0, 0.5 * e ** 2, e - 0.5))


def np_rkd_distance_potential(v):
    n = len(v)
    d = np.array([[np.linalg.norm(v[i] - v[j]) for j in range(n)] for i in range(n)])
    return d / d[d > 0].mean()


def np_rkd_angle_potential(v):
    """[B, B, B]: entry (j, i, k) = cos between v_i - v_j and v_k - v_j (0 for a zero difference)."""
    n = len(v)
    a = np.zeros((n, n, n))
    for j, i, k in itertools.product(range(n), repeat=3):
        x, y = v[i] - v[j], v[k] - v[j]
        nx, ny = np.linalg.norm(x), np.linalg.norm(y)
        if nx > 0 and ny > 0:
            a[j, i, k] = x @ y / (nx * ny)
    return a


def np_rkd(s, t, distance_weight, angle_weight, normalize=True):
    if normalize:
        s = s / np.linalg.norm(s, axis=1, keepdims=True)
        t = t / np.linalg.norm(t, axis=1, keepdims=True)
    return (distance_weight * np_huber_mean(np_rkd_distance_potential(s), np_rkd_distance_potential(t)),
            angle_weight * np_huber_mean(np_rkd_angle_potential(s), np_rkd_angle_potential(t)))


def np_ab_loss(r, t, m):
    """(r+m)^2 [r > -m and t <= 0] + (r-m)^2 [r <= m and t > 0], summed per sample, batch mean."""
    elementwise = ((r + m) ** 2 * ((r > -m) & (t <= 0)) + (r - m) ** 2 * ((r <= m) & (t > 0)))
    return np.mean(elementwise.reshape(len(r), -1).sum(axis=1))


def np_batch_norm_train(x, epsilon):
    """BatchNormalization in training mode with gamma = 1, beta = 0: batch statistics over (B, H, W)."""
    mean = x.mean(axis=(0, 1, 2))
    var = ((x - mean) ** 2).mean(axis=(0, 1, 2))
    return (x - mean) / np.sqrt(var + epsilon)


def np_svd_knowledge(f, k):
    """Per sample: (top-k singular values, unit L2 over K; right singular vectors [C, K], unit L2 over C)."""
    values, vectors = [], []
    for sample in f:
        _, s, vt = np.linalg.svd(sample.reshape(-1, sample.shape[-1]), full_matrices=False)
        s, v = s[:k], vt[:k].T
        v = v / np.linalg.norm(v, axis=0, keepdims=True)
        # Sign convention: each vector's largest-magnitude entry is positive.
        v = v * np.sign(v[np.argmax(np.abs(v), axis=0), np.arange(v.shape[1])])
        values.append(s / np.linalg.norm(s))
        vectors.append(v)
    return np.array(values), np.array(vectors)


def np_align(vs, vt):
    """Per sample and teacher vector k: the student vector of largest |cos|, flipped to cos > 0."""
    out = np.zeros_like(vt)
    for b in range(len(vt)):
        for k in range(vt.shape[2]):
            cos = [vt[b, :, k] @ vs[b, :, l] for l in range(vs.shape[2])]
            best = int(np.argmax(np.abs(cos)))
            out[b, :, k] = np.sign(cos[best]) * vs[b, :, best]
    return out


def np_rbf(vi, vj):
    """[C_i, K], [C_j, K] -> [C_i, C_j, K]: exp(-(v_i[c1, k] - v_j[c2, k])^2 / 8)."""
    return np.exp(-(vi[:, None, :] - vj[None, :, :]) ** 2 / 8)


def np_kd_svd(student, teacher, k, weight, teacher_signs=None, student_signs=None, reduction="batch_sum"):
    """KD-SVD term, summed (the seed) or averaged over the batch. `teacher_signs` / `student_signs`
    ([3, B, K] of +-1) flip the singular vectors returned by np.linalg.svd, whose signs are arbitrary."""
    s_vectors, t_vectors = [], []
    for n, tap in enumerate(STAGES):
        t_values, vt = np_svd_knowledge(teacher[tap], k)
        _, vs = np_svd_knowledge(student[tap], k)
        if teacher_signs is not None:
            vt = vt * teacher_signs[n][:, None, :]
        if student_signs is not None:
            vs = vs * student_signs[n][:, None, :]
        t_vectors.append(vt * t_values[:, None, :])
        s_vectors.append(np_align(vs, vt) * t_values[:, None, :])
    total = 0.0
    for i in range(len(STAGES) - 1):
        per_sample = [np.sum((np_rbf(s_vectors[i][b], s_vectors[i + 1][b])
                              - np_rbf(t_vectors[i][b], t_vectors[i + 1][b])) ** 2)
                      for b in range(len(s_vectors[i]))]
        total += np.sum(per_sample) if reduction == "batch_sum" else np.mean(per_sample)
    return weight * total


def np_jacobian(js, jt):
    """Batch mean of || J_s / ||J_s|| - J_t / ||J_t|| ||^2, J flattened per sample."""
    js, jt = js.reshape(len(js), -1), jt.reshape(len(jt), -1)
    js = js / np.linalg.norm(js, axis=1, keepdims=True)
    jt = jt / np.linalg.norm(jt, axis=1, keepdims=True)
    return np.mean(np.sum((js - jt) ** 2, axis=1))


# --------------------------------------------------------------------------- helpers

def random_taps(rng, batch=4, shapes=TAP_SHAPES, suffix="", relu=True):
    taps = {}
    for name, shape in shapes.items():
        x = rng.normal(size=(batch, *shape))
        taps[name + suffix] = np.maximum(x, 0) if relu else x
    return taps


def to_tf(taps):
    return {name: tf.constant(value) for name, value in taps.items()}


def tensor_shapes(taps):
    return {name: tf.TensorShape(value.shape) for name, value in taps.items()}


def call(method, student, teacher, stage="main", batch=4):
    labels = tf.constant(np.arange(batch) % 10, tf.int32)
    terms = method.loss_terms(labels, tf.constant(CE, tf.float64), to_tf(student), to_tf(teacher), stage=stage)
    return {name: float(value) for name, value in terms.items()}


def assert_terms(got, expected, rtol=RTOL):
    assert set(got) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=rtol, atol=0, err_msg=name)


# --------------------------------------------------------------------------- FitNet

@pytest.mark.parametrize("params", [None, {"weight": 0.5}])
def test_fitnet_init_stage_is_weighted_hint_sum(params):
    rng = np.random.default_rng(1)
    student, teacher = random_taps(rng), random_taps(rng)
    method = methods.create("fitnet", params)
    method.build(tensor_shapes(student), tensor_shapes(teacher))
    weight = (params or {}).get("weight", 1.0)
    expected = weight * sum(np_hint(student[k], teacher[k]) for k in STAGES)
    assert_terms(call(method, student, teacher, stage="init"), {"hint": expected})


def test_fitnet_main_stage_is_ce_only():
    rng = np.random.default_rng(2)
    student, teacher = random_taps(rng), random_taps(rng)
    method = methods.create("fitnet")
    method.build(tensor_shapes(student), tensor_shapes(teacher))
    assert_terms(call(method, student, teacher, stage="main"), {"ce": CE})


# --------------------------------------------------------------------------- AT

def test_attention_map_matches_numpy():
    f = np.random.default_rng(3).normal(size=(5, 4, 3, 6))
    got = attention_map(tf.constant(f)).numpy()
    assert got.shape == (5, 12)
    np.testing.assert_allclose(got, np_attention_map(f), rtol=RTOL, atol=0)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("params", [None, {"beta": 250.0}])
def test_at_matches_numpy(params):
    rng = np.random.default_rng(4)
    student, teacher = random_taps(rng), random_taps(rng)
    beta = (params or {}).get("beta", 1e3)
    got = call(methods.create("at", params), student, teacher)
    assert_terms(got, {"ce": CE, "at": np_at(student, teacher, beta)})


# --------------------------------------------------------------------------- FSP

@pytest.mark.parametrize("params", [None, {"weight": 0.1}])
def test_fsp_init_stage_matches_numpy(params):
    rng = np.random.default_rng(5)
    student, teacher = random_taps(rng), random_taps(rng)
    weight = (params or {}).get("weight", 1e-3)
    got = call(methods.create("fsp", params), student, teacher, stage="init")
    assert_terms(got, {"fsp": np_fsp(student, teacher, weight)})


def test_fsp_pools_until_resolutions_match():
    """A 8x8 tap paired with a 2x2 tap is max-pooled twice."""
    rng = np.random.default_rng(6)
    shapes = {"stage1": (8, 8, 3), "stage2": (2, 2, 5), "stage3": (2, 2, 4)}
    student, teacher = random_taps(rng, shapes=shapes), random_taps(rng, shapes=shapes)
    got = call(methods.create("fsp"), student, teacher, stage="init")
    assert_terms(got, {"fsp": np_fsp(student, teacher, 1e-3)})


def test_fsp_main_stage_is_ce_only():
    rng = np.random.default_rng(7)
    student, teacher = random_taps(rng), random_taps(rng)
    assert_terms(call(methods.create("fsp"), student, teacher, stage="main"), {"ce": CE})


# --------------------------------------------------------------------------- RKD

@pytest.mark.parametrize("params, tap, dim", [
    (None, "logits", 20),
    ({"tap": "embedding", "distance_weight": 25.0, "angle_weight": 50.0}, "embedding", 12),
    ({"normalize": False}, "logits", 10),
])
def test_rkd_matches_numpy(params, tap, dim):
    rng = np.random.default_rng(8)
    batch = 5
    # Different scales for student and teacher, so that both Huber branches occur when not normalized.
    student = {tap: rng.normal(size=(batch, dim)) * 3}
    teacher = {tap: rng.normal(size=(batch, dim))}
    p = {"distance_weight": 100.0, "angle_weight": 200.0, "normalize": True, **(params or {})}
    p.pop("tap", None)
    distance, angle = np_rkd(student[tap], teacher[tap], **p)
    # The paper's normalisation; the seed's is tested in test_fidelity.py.
    got = call(methods.create("rkd", {**(params or {}), "distance_normalization": "off_diagonal"}),
               student, teacher, batch=batch)
    assert_terms(got, {"ce": CE, "rkd_distance": distance, "rkd_angle": angle})


def test_rkd_handles_duplicate_samples():
    """Two identical rows: a zero distance that the mean must skip and zero angle differences."""
    rng = np.random.default_rng(9)
    student, teacher = rng.normal(size=(2, 5, 10))
    student[3] = student[1]
    distance, angle = np_rkd(student, teacher, 100.0, 200.0)
    got = call(methods.create("rkd", {"distance_normalization": "off_diagonal"}), {"logits": student},
               {"logits": teacher}, batch=5)
    assert_terms(got, {"ce": CE, "rkd_distance": distance, "rkd_angle": angle})


# --------------------------------------------------------------------------- AB

def test_activation_boundary_loss_matches_numpy():
    rng = np.random.default_rng(10)
    margin = 1.0
    r = rng.normal(size=(6, 3, 3, 5)) * 1.5
    t = rng.normal(size=(6, 3, 3, 5))
    # Values at and around both margins, under both teacher signs, and teacher exactly 0 (off).
    near = np.array([-1.0 - 1e-6, -1.0, -1.0 + 1e-6, 1.0 - 1e-6, 1.0, 1.0 + 1e-6, 0.0, -0.5, 0.5])
    r[0, 0, 0, :] = near[:5]
    r[1, 0, 0, :] = near[4:]
    r[2, 0, 0, :] = near[:5]
    t[0, 0, 0, :] = -1.0
    t[1, 0, 0, :] = 0.0
    t[2, 0, 0, :] = 1.0
    got = float(activation_boundary_loss(tf.constant(r), tf.constant(t), margin))
    np.testing.assert_allclose(got, np_ab_loss(r, t, margin), rtol=RTOL, atol=0)
    # Another margin, so that the margin is not hard-wired.
    got = float(activation_boundary_loss(tf.constant(r), tf.constant(t), 0.5))
    np.testing.assert_allclose(got, np_ab_loss(r, t, 0.5), rtol=RTOL, atol=0)


def test_activation_boundary_loss_is_zero_beyond_the_margins():
    r = np.array([[-2.0, -1.0, 1.0, 3.0]])
    t = np.array([[-1.0, 0.0, 0.5, 2.0]])  # off, off (t = 0), on, on
    assert float(activation_boundary_loss(tf.constant(r), tf.constant(t), 1.0)) == 0.0
    assert np_ab_loss(r, t, 1.0) == 0.0


def test_ab_main_stage_is_weighted_ce_plus_soft_logits():
    rng = np.random.default_rng(11)
    student = {"logits": rng.normal(size=(4, 15)) * 3}
    teacher = {"logits": rng.normal(size=(4, 15)) * 3}
    kd = np_kl(np_softmax(teacher["logits"] / 3), np_softmax(student["logits"] / 3))
    got = call(methods.create("ab"), student, teacher, stage="main")
    assert_terms(got, {"ce": 0.7 * CE, "kd": 0.3 * kd})


def test_ab_init_stage_through_connectors_matches_numpy(float64_layers):
    rng = np.random.default_rng(12)
    student = random_taps(rng, suffix="_preact", relu=False)
    teacher = random_taps(rng, shapes={"stage1": (8, 8, 6), "stage2": (4, 4, 10), "stage3": (2, 2, 12)},
                          suffix="_preact", relu=False)
    method = methods.create("ab")
    method.build(tensor_shapes(student), tensor_shapes(teacher))
    expected = 0.0
    for n, stage in enumerate(STAGES):
        tap = stage + "_preact"
        conv, batch_norm = method.connectors[stage].layers
        kernel = rng.normal(size=(student[tap].shape[-1], teacher[tap].shape[-1]))
        conv.kernel.assign(kernel[None, None])
        response = np_batch_norm_train(student[tap] @ kernel, batch_norm.epsilon)
        expected += 2 ** n * np_ab_loss(response, teacher[tap], 1.0)
    got = call(method, student, teacher, stage="init")
    assert_terms(got, {"ab": 3e-3 * expected})


# --------------------------------------------------------------------------- KD-SVD

def low_rank_features(rng, batch, hw, c, right_vectors=None):
    """[B, H, W, C] whose per-sample [HW, C] matrices have singular values 16, 8, 4, ... (well
    separated, so the top singular vectors are unique up to sign). `right_vectors(rng)` returns
    an orthonormal [C, r] basis for them (random by default)."""
    h, w = hw
    out = []
    for _ in range(batch):
        v = right_vectors(rng) if right_vectors else np.linalg.qr(rng.normal(size=(c, min(h * w, c))))[0]
        r = v.shape[1]
        u = np.linalg.qr(rng.normal(size=(h * w, r)))[0]
        out.append((u * (16.0 * 0.5 ** np.arange(r))) @ v.T)
    return np.stack(out).reshape(batch, h, w, c)


def antisymmetric_basis(c, r):
    """Orthonormal [C, r] vectors with v[c + C/2] = -v[c]: flipping one is a channel permutation."""
    def basis(rng):
        x = np.linalg.qr(rng.normal(size=(c // 2, r)))[0]
        return np.concatenate([x, -x]) / np.sqrt(2)
    return basis


def sign_insensitive_svd_taps(rng, batch=4):
    """Taps whose KD-SVD loss does not depend on the arbitrary signs of the teacher's singular
    vectors: on stages 1 and 3 every singular vector is antisymmetric under the channel pairing
    c <-> c + C/2, so a sign flip there permutes the RBF map's rows (stage 1) or columns (stage 3)
    identically for student and teacher; a flip on stage 2 equals flipping all three stages
    (which leaves every RBF map unchanged) followed by flips on stages 1 and 3."""
    return {"stage1": low_rank_features(rng, batch, (8, 8), 8, antisymmetric_basis(8, 4)),
            "stage2": low_rank_features(rng, batch, (4, 4), 8),
            "stage3": low_rank_features(rng, batch, (2, 2), 16, antisymmetric_basis(16, 4))}


def test_kd_svd_reference_is_sign_insensitive_on_these_taps():
    """Checks the premise of the next test: on these taps any signs of the teacher's and the
    student's singular vectors give the same reference loss."""
    rng = np.random.default_rng(13)
    student, teacher = sign_insensitive_svd_taps(rng), sign_insensitive_svd_taps(rng)
    base = np_kd_svd(student, teacher, 4, 1.0)
    for _ in range(5):
        t_signs, s_signs = rng.choice([-1.0, 1.0], size=(2, 3, 4, 4))
        np.testing.assert_allclose(np_kd_svd(student, teacher, 4, 1.0, t_signs, s_signs), base, rtol=1e-12)


@pytest.mark.parametrize("params", [None, {"weight": 0.5}])
def test_kd_svd_matches_numpy(params):
    rng = np.random.default_rng(13)
    student, teacher = sign_insensitive_svd_taps(rng), sign_insensitive_svd_taps(rng)
    weight = (params or {}).get("weight", 1.0)
    got = call(methods.create("kd_svd", params), student, teacher)
    assert_terms(got, {"ce": CE, "svd": np_kd_svd(student, teacher, 4, weight)})


def test_kd_svd_matches_numpy_on_generic_taps():
    """On generic taps the loss depends on the signs of the teacher's singular vectors (the RBF
    uses v_i - v_j across taps); with the canonical sign (largest entry positive) it is a
    function of the features, and the implementation equals the formula exactly."""
    rng = np.random.default_rng(14)
    shapes = {"stage1": ((8, 8), 4), "stage2": ((4, 4), 8), "stage3": ((2, 2), 16)}
    student = {tap: low_rank_features(rng, 3, hw, c) for tap, (hw, c) in shapes.items()}
    teacher = {tap: low_rank_features(rng, 3, hw, c) for tap, (hw, c) in shapes.items()}
    got = call(methods.create("kd_svd"), student, teacher, batch=3)
    assert_terms(got, {"ce": CE, "svd": np_kd_svd(student, teacher, 4, 1.0)})
    flipped = np.ones((3, 3, 4))
    flipped[0, :, 1] = -1.0
    assert abs(np_kd_svd(student, teacher, 4, 1.0, teacher_signs=flipped) - np_kd_svd(student, teacher, 4, 1.0)) > 1e-6


# --------------------------------------------------------------------------- Jacobian matching

@pytest.mark.parametrize("params", [None, {"at_beta": 10.0, "weight": 2.0}])
def test_jacobian_matches_numpy(params):
    rng = np.random.default_rng(15)
    student, teacher = random_taps(rng), random_taps(rng)
    student["input_gradient"] = rng.normal(size=(4, 8, 8, 3)) * 0.1
    teacher["input_gradient"] = rng.normal(size=(4, 8, 8, 3)) * 5.0
    p = {"at_beta": 1e3, "weight": 1.0, **(params or {})}
    got = call(methods.create("jacobian", params), student, teacher)
    assert_terms(got, {"ce": CE, "at": np_at(student, teacher, p["at_beta"]),
                       "jacobian": p["weight"] * np_jacobian(student["input_gradient"], teacher["input_gradient"])})


def test_with_input_gradient_matches_finite_differences():
    rng = np.random.default_rng(16)
    images = keras.Input(shape=(4, 4, 3), dtype="float64")
    hidden = keras.layers.Conv2D(5, 3, padding="same", activation="tanh", dtype="float64")(images)
    logits = keras.layers.Dense(7, dtype="float64")(keras.layers.Flatten(dtype="float64")(hidden))
    network = keras.Model(images, {"logits": logits})
    network.set_weights([rng.normal(size=w.shape) * 0.5 for w in network.get_weights()])

    x = rng.normal(size=(4, 4, 4, 3))
    labels = np.array([0, 3, 6, 3])
    taps = with_input_gradient(network, tf.constant(x), tf.constant(labels, tf.int32))
    assert set(taps) == {"logits", "input_gradient"}

    def true_logits(inputs):
        return network(tf.constant(inputs))["logits"].numpy()[np.arange(4), labels]

    # No cross-sample coupling (no batch norm): perturb the same pixel of every image at once.
    eps = 1e-5
    expected = np.zeros_like(x)
    for index in np.ndindex(*x.shape[1:]):
        step = np.zeros_like(x)
        step[(slice(None), *index)] = eps
        expected[(slice(None), *index)] = (true_logits(x + step) - true_logits(x - step)) / (2 * eps)
    np.testing.assert_allclose(taps["input_gradient"].numpy(), expected, rtol=0, atol=1e-6)
    assert np.abs(expected).max() > 0.1


# --------------------------------------------------------------------------- DML

@pytest.mark.parametrize("params", [None, {"temperature": 2.0}, {"temperature": 2.0, "weight": 0.5}])
def test_dml_matches_numpy(params):
    rng = np.random.default_rng(17)
    student = {"logits": rng.normal(size=(6, 20)) * 3}
    peer = {"logits": rng.normal(size=(6, 20)) * 3}
    p = {"temperature": 1.0, "weight": 1.0, **(params or {})}
    ps, pt = np_softmax(student["logits"] / p["temperature"]), np_softmax(peer["logits"] / p["temperature"])
    got = call(methods.create("dml", params), student, peer, batch=6)
    assert_terms(got, {"ce": CE, "mutual": p["weight"] * (np_kl(pt, ps) + np_kl(ps, pt)) / 2})


def test_fitnet_main_stage_variant_is_ce_plus_weighted_hint_on_chosen_taps():
    """RepDistiller's FitNet (`hint_stage="main"`): one stage, CE + weight * hint of the chosen taps."""
    rng = np.random.default_rng(21)
    student, teacher = random_taps(rng), random_taps(rng)
    method = methods.create("fitnet", {"hint_stage": "main", "taps": "stage2", "weight": 100.0})
    method.build(tensor_shapes(student), tensor_shapes(teacher))
    assert method.stage_epochs(7) == {"main": 7}
    assert_terms(call(method, student, teacher, stage="main"),
                 {"ce": CE, "hint": 100.0 * np_hint(student["stage2"], teacher["stage2"])})


@pytest.mark.parametrize("params, message", [
    ({"hint_stage": "both"}, "'hint_stage' must be one of init, main, got 'both'"),
    ({"taps": "stage2,stage9"}, "'taps' must be distinct names")])
def test_fitnet_variant_parameters_are_checked(params, message):
    with pytest.raises(ValueError, match=message):
        methods.catalog.check_params("fitnet", params)
