"""KD-SVD (Lee et al. 2018): distil the dominant singular directions of consecutive feature maps.

The seed ran `tf.svd` of each [HW, C] map on the CPU and called it the slowest method. The
top-K right singular vectors and singular values of F are the top-K eigenvectors and the
square roots of the eigenvalues of the C x C Gram matrix F^T F, so this module takes one
batched `eigh` of a small matrix instead: of F F^T (HW x HW) when that is the smaller one,
the right vectors then being F^T u / |F^T u|. Only K = 4 of the C vectors are used, so the
backward pass is written for the top K alone (`top_eigenpairs`): O(C^2 K) per matrix where
TensorFlow's generic `eigh` gradient takes O(C^3); the result is the same gradient.

Singular vectors have no intrinsic sign, and the RBF of consecutive taps compares values of
the teacher's vectors at two taps, so the loss depends on the teacher's signs (the seed
took whatever `tf.svd` returned). Here every vector is signed so that its largest-magnitude
entry is positive, which makes the loss a function of the features alone; the student's
vectors are then aligned to the teacher's as in the paper.

The batched `eigh` is over half of the loss's time and stays: the 4th and 5th eigenvalues are
close (lambda_5 / lambda_4 about 0.9), so truncated iterative solvers would need more
iterations than `eigh` costs (docs/benchmarks.md). Around it: only the top-K eigenvector
columns are reversed into descending order, the Gram matrix has a one-matmul gradient, and the
RBF maps are laid out [B, K, C_i, C_j] (a channel axis innermost, not K = 4) with their
gradient written out.

`decomposition="seed_svd"` runs the seed's own decomposition instead (nets/SVP.py:7-30 and
89-127 at eecb346), a bug-compatible variant: `tf.svd` of each [HW, C] map on the CPU, its
non-finite entries zeroed, the singular vectors signed as the solver returns them, the seed's
hand-written gradient, and the loss's non-finite squared differences masked to zero
(nets/Distillation.py:127).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kd_trainer import gradients
from kd_trainer.methods import catalog
from kd_trainer.methods.base import DistillationMethod, GradientFn, StepState, TaskTerms

TAPS = ("stage1", "stage2", "stage3")


def top_eigenpairs(gram: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Symmetric [B, N, N] -> (top-k eigenvalues [B, k], eigenvectors [B, N, k]), descending.

    The gradient is TensorFlow's `eigh` gradient, V (diag(g_lambda) + F o (V^T g_V)) V^T with
    F[j, l] = 1 / (lambda_l - lambda_j) off the diagonal, in which g_V and g_lambda are zero
    outside the top k columns: only those k columns of F o (V^T g_V) are formed. `eigh` returns
    ascending eigenpairs; only the k columns used are reversed (the full [B, N, N] reversal was a
    tenth of the loss's time)."""
    size = gram.shape[-1]
    k = min(k, size)
    # [N, k]: row j of eigh's ascending order is the l-th largest eigenpair.
    same = tf.constant(np.eye(size, k, dtype=bool)[::-1])

    @tf.custom_gradient
    def decompose(matrix: tf.Tensor):
        eigenvalues, eigenvectors = tf.linalg.eigh(matrix)  # ascending
        top_values = tf.reverse(eigenvalues[:, size - k:], axis=[1])
        top_vectors = tf.reverse(eigenvectors[:, :, size - k:], axis=[2])

        def gradient(grad_values: tf.Tensor, grad_vectors: tf.Tensor) -> tf.Tensor:
            gaps = top_values[:, None, :] - eigenvalues[:, :, None]  # [B, N, k]: lambda_l - lambda_j
            inverse_gaps = tf.where(same, tf.zeros_like(gaps), 1.0 / tf.where(same, tf.ones_like(gaps), gaps))
            inner = (inverse_gaps * tf.matmul(eigenvectors, grad_vectors, transpose_a=True)
                     + tf.where(same, grad_values[:, None, :], tf.zeros_like(gaps)))
            grad_matrix = tf.matmul(tf.matmul(eigenvectors, inner), top_vectors, transpose_b=True)
            # eigh reads one triangle; the symmetric part is the gradient for a symmetric input.
            return 0.5 * (grad_matrix + tf.linalg.matrix_transpose(grad_matrix))
        return (top_values, top_vectors), gradient

    return decompose(gram)


def gram_matrix(flat: tf.Tensor, of_rows: bool) -> tf.Tensor:
    """[B, HW, C] -> F F^T ([B, HW, HW], `of_rows`) or F^T F ([B, C, C]). The gradient, (G + G^T) F
    or F (G + G^T), is one matmul where TensorFlow's matmul gradient takes two and their sum."""
    @tf.custom_gradient
    def product(matrices: tf.Tensor):
        def gradient(upstream: tf.Tensor) -> tf.Tensor:
            symmetric = upstream + tf.linalg.matrix_transpose(upstream)
            return tf.matmul(symmetric, matrices) if of_rows else tf.matmul(matrices, symmetric)
        return tf.matmul(matrices, matrices, transpose_a=not of_rows, transpose_b=of_rows), gradient

    return product(flat)


def top_singular(features: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """[B, H, W, C] -> (singular values [B, K], right singular vectors [B, C, K]), descending."""
    flat = tf.reshape(features, [tf.shape(features)[0], -1, features.shape[-1]])
    positions, channels = flat.shape[1], flat.shape[2]
    if positions is not None and k <= positions < channels:
        eigenvalues, left = top_eigenpairs(gram_matrix(flat, of_rows=True), k)
        vectors = tf.math.l2_normalize(tf.matmul(flat, left, transpose_a=True), axis=1)
    else:
        eigenvalues, vectors = top_eigenpairs(gram_matrix(flat, of_rows=False), k)
    return tf.sqrt(tf.maximum(eigenvalues, 1e-12)), vectors


def canonical_sign(vectors: tf.Tensor) -> tf.Tensor:
    """Flips each vector [B, C, K] (over C) so that its largest-|.| entry is positive."""
    largest = tf.gather(vectors, tf.argmax(tf.abs(vectors), axis=1), axis=1, batch_dims=1)  # [B, K, K]
    sign = tf.sign(tf.linalg.diag_part(largest))
    return vectors * tf.stop_gradient(tf.where(sign == 0, tf.ones_like(sign), sign))[:, None, :]


def svd_knowledge(features: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(L2-normalized singular values [B, K], L2-normalized, canonically signed right
    singular vectors [B, C, K])."""
    values, vectors = top_singular(features, k)
    return tf.math.l2_normalize(values, axis=1), canonical_sign(tf.math.l2_normalize(vectors, axis=1))


def removenan(x: tf.Tensor) -> tf.Tensor:
    """The seed's `removenan` (nets/SVP.py:4-5): NaN and +-inf entries become 0."""
    return tf.where(tf.math.is_finite(x), x, tf.zeros_like(x))


def seed_svd_gradient(values: tf.Tensor, left: tf.Tensor, right: tf.Tensor, grad_right: tf.Tensor) -> tf.Tensor:
    """The seed's `gradient_svd` ('Svd_', nets/SVP.py:89-127), term by term, quirks included:
    msym(X) = X + X^T without a half, 1 / (s + 1e-8), non-finite entries of K^T zeroed, and the
    gradients of s and U ignored (right_grad reads dV; left_grad swaps U with V and dU with dV,
    then reads dU, i.e. dV again). Returns the gradient of the [B, HW, C] input. Where HW >= C
    (right_grad) this is twice the exact gradient; where C > HW (left_grad) it is not a multiple
    of it (tests/test_fidelity.py). D diag(a) is written D * a, the same products."""
    squares = tf.square(values)
    eye = tf.eye(values.shape[-1], dtype=values.dtype)
    k = (1.0 - eye) / (squares[:, :, None] - squares[:, None, :] + eye)  # 1 / (s_i^2 - s_j^2)
    kt = removenan(tf.linalg.matrix_transpose(k))

    def msym(x: tf.Tensor) -> tf.Tensor:
        return x + tf.linalg.matrix_transpose(x)

    if right.shape[1] > left.shape[1]:  # C > HW: left_grad, with U, V and dU, dV swapped
        u, v, du = right, left, grad_right
        d = du * (1.0 / (values + 1e-8))[:, None, :]
        us = u * values[:, None, :]
        grad = (tf.matmul(d, v, transpose_b=True)
                + tf.matmul(u * -tf.linalg.diag_part(tf.matmul(u, d, transpose_a=True))[:, None, :], v,
                            transpose_b=True)
                + tf.matmul(2.0 * tf.matmul(us, msym(kt * tf.matmul(
                    v, -tf.matmul(v, tf.matmul(d, us, transpose_a=True)), transpose_a=True))), v, transpose_b=True))
        return tf.linalg.matrix_transpose(grad)
    us = left * values[:, None, :]  # right_grad
    return tf.matmul(2.0 * tf.matmul(us, msym(kt * tf.matmul(right, grad_right, transpose_a=True))), right,
                     transpose_b=True)


@tf.custom_gradient
def seed_svd(matrices: tf.Tensor):
    """[B, HW, C] -> tf.svd's (s [B, m], U [B, HW, m], V [B, C, m]), m = min(HW, C), on the CPU as
    the seed pinned it (nets/SVP.py:17-20), with the seed's gradient; signs as the solver returns them."""
    with tf.device("/CPU:0"):
        values, left, right = tf.linalg.svd(matrices, full_matrices=False)

    def gradient(grad_values: tf.Tensor, grad_left: tf.Tensor, grad_right: tf.Tensor) -> tf.Tensor:
        return seed_svd_gradient(values, left, right, grad_right)
    return (values, left, right), gradient


def seed_svd_knowledge(features: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The seed's SVD (nets/SVP.py:7-30): (L2-normalized top-n singular values [B, n],
    L2-normalized right singular vectors [B, C, n]), n = min(k, HW, C), non-finite entries
    zeroed before the top n are taken, signs as the solver returns them. (The seed also
    normalizes U, which KD-SVD does not use.)"""
    positions, channels = features.shape[1] * features.shape[2], features.shape[3]
    values, _, right = seed_svd(tf.reshape(features, [-1, positions, channels]))
    n = min(k, positions, channels)
    return (tf.math.l2_normalize(removenan(values)[:, :n], axis=1),
            tf.math.l2_normalize(removenan(right)[:, :, :n], axis=1))


def align(student_vectors: tf.Tensor, teacher_vectors: tf.Tensor) -> tf.Tensor:
    """Reorders and flips the student's vectors: slot k takes the student vector with the
    largest |cosine| to teacher vector k, signed so that the cosine is positive."""
    cosine = tf.einsum("bck,bcl->bkl", teacher_vectors, student_vectors)  # [B, K_t, K_s]
    best = tf.argmax(tf.abs(cosine), axis=2)
    chosen = tf.gather(student_vectors, best, axis=2, batch_dims=1)  # [B, C, K]
    sign = tf.sign(tf.gather(cosine, best, axis=2, batch_dims=2))
    return chosen * tf.stop_gradient(tf.where(sign == 0, tf.ones_like(sign), sign))[:, None, :]


def seed_align(student_vectors: tf.Tensor, teacher_vectors: tf.Tensor) -> tf.Tensor:
    """The seed's Align_rsv (nets/SVP.py:82-87), kept to run its bug: M[j, i] = sign(cos) where
    teacher vector i is student vector j's best |cosine| match, 0 elsewhere, and the student's
    vectors become V_s M^T, i.e. slot j takes student vector i, an index of the teacher's."""
    cosine = tf.einsum("bck,bcl->bkl", student_vectors, teacher_vectors)  # [B, K_s, K_t]
    best = tf.equal(tf.abs(cosine), tf.reduce_max(tf.abs(cosine), axis=2, keepdims=True))
    mask = tf.stop_gradient(tf.where(best, tf.sign(cosine), tf.zeros_like(cosine)))
    return tf.matmul(student_vectors, mask, transpose_b=True)


def rbf_map(first: tf.Tensor, second: tf.Tensor) -> tf.Tensor:
    """[B, C_i, K], [B, C_j, K] -> [B, C_i, C_j, K]: exp(-(v_i - v_j)^2 / 8)."""
    return tf.exp(-tf.square(first[:, :, None, :] - second[:, None, :, :]) / 8.0)


def rbf_distance(student_first: tf.Tensor, student_second: tf.Tensor, teacher_first: tf.Tensor,
                 teacher_second: tf.Tensor) -> tf.Tensor:
    """Vectors [B, C_i, K], [B, C_j, K] of two taps -> [B]: sum over (C_i, C_j, K) of
    (RBF_s - RBF_t)^2, RBF = exp(-(v_i - v_j)^2 / 8). The teacher's map is a constant (the
    seed's stop_gradient). The maps are built [B, K, C_i, C_j] and the gradient is written out,
    -1/2 (RBF_s - RBF_t) RBF_s (v_i - v_j) summed over the other tap's channels: together 30%
    less time than TensorFlow's gradient of [B, C_i, C_j, K] maps."""
    def rbf(first: tf.Tensor, second: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        first, second = tf.linalg.matrix_transpose(first), tf.linalg.matrix_transpose(second)
        difference = first[:, :, :, None] - second[:, :, None, :]
        return tf.exp(tf.square(difference) * -0.125), difference

    teacher_map = tf.stop_gradient(rbf(teacher_first, teacher_second)[0])

    @tf.custom_gradient
    def distance(first: tf.Tensor, second: tf.Tensor):
        student_map, difference = rbf(first, second)
        error = student_map - teacher_map

        def gradient(upstream: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            weighted = error * student_map * difference * (-0.5 * upstream)[:, None, None, None]  # [B, K, C_i, C_j]
            return (tf.linalg.matrix_transpose(tf.reduce_sum(weighted, axis=3)),
                    -tf.linalg.matrix_transpose(tf.reduce_sum(weighted, axis=2)))
        return tf.reduce_sum(tf.square(error), axis=[1, 2, 3]), gradient

    return distance(student_first, student_second)


def seed_rbf_distance(student_first: tf.Tensor, student_second: tf.Tensor, teacher_first: tf.Tensor,
                      teacher_second: tf.Tensor) -> tf.Tensor:
    """`rbf_distance` as the seed computes it (nets/Distillation.py:123-128): squared differences
    that are not finite are set to 0 before the sum, differentiated by TensorFlow."""
    squared = tf.square(rbf_map(student_first, student_second)
                        - tf.stop_gradient(rbf_map(teacher_first, teacher_second)))
    return tf.reduce_sum(removenan(squared), axis=[1, 2, 3])


def clipped_task_gradients(method: DistillationMethod, gradient: GradientFn, terms: TaskTerms,
                           step: StepState) -> gradients.Gradients:
    """The seed's `Optimizer_w_Distillation` for `KD-*` methods (op_util.py:76-83): per variable,
    the distillation gradient's norm is capped at the CE gradient's norm (weight decay excluded)
    times sigmoid(epochs into the stage), then the two are added. KD-SVD, KD-EID and MHGD use it
    as their `task_gradients`."""
    if terms.supervised is None or terms.distillation is None:
        return gradient(terms.total)
    supervised_gradients = gradient(terms.supervised)
    distillation_gradients = gradient(terms.distillation)
    ramp = tf.sigmoid(step.epoch - float(step.stage_first_epoch))
    combined = []
    for g_supervised, g_distillation in zip(supervised_gradients, distillation_gradients):
        if g_distillation is not None and g_supervised is not None:
            g_distillation = tf.clip_by_norm(g_distillation, tf.norm(g_supervised) * ramp)
        combined.append(gradients.add(g_supervised, g_distillation))
    return combined


class KDSVD(DistillationMethod):
    """CE + weight * sum over consecutive tap pairs of sum_{C_i, C_j, K} (RBF_s - RBF_t)^2,
    summed over the batch (`reduction="batch_sum"`, the seed's nets/Distillation.py:128) or
    averaged over it (`"batch_mean"`). Vectors are scaled by the teacher's normalized singular values.
    `decomposition` picks how they are found: the Gram matrix's `eigh` or the seed's SVD (module docstring).
    The distillation gradient is clipped per variable to |grad CE| * sigmoid(epoch) (CE
    alone, without weight decay, as in the seed): `clipped_task_gradients`."""

    name = "kd_svd"
    student_taps = TAPS
    teacher_taps = TAPS
    loss_term_names = ("ce", "svd")

    Params = catalog.KDSVDParams
    task_gradients = clipped_task_gradients

    def loss_terms(self, labels, cross_entropy, student, teacher, stage="main"):
        seed_decomposition = self.params.decomposition == "seed_svd"
        knowledge = seed_svd_knowledge if seed_decomposition else svd_knowledge
        distance = seed_rbf_distance if seed_decomposition else rbf_distance
        student_vectors, teacher_vectors = [], []
        for tap in TAPS:
            teacher_values, teacher_v = knowledge(teacher[tap], self.params.k)
            _, student_v = knowledge(student[tap], self.params.k)
            scale = teacher_values[:, None, :]
            teacher_vectors.append(teacher_v * scale)
            aligned = seed_align(student_v, teacher_v) if self.params.alignment == "seed" else align(student_v, teacher_v)
            student_vectors.append(aligned * scale)
        total = 0.0
        for i in range(len(TAPS) - 1):
            per_example = distance(student_vectors[i], student_vectors[i + 1], teacher_vectors[i], teacher_vectors[i + 1])
            total += tf.reduce_sum(per_example) if self.params.reduction == "batch_sum" else tf.reduce_mean(per_example)
        return {"ce": cross_entropy, "svd": self.params.weight * total}
