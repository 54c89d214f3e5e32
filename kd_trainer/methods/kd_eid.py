"""KD-EID (Lee & Song; sseung0703/KD_methods_with_TF at HEAD 9fb5414, `nets/Shared.py`
`KD_SVD(..., 'EID')`, `nets/SVP.py` `SVD_eid`): KD-SVD with the decomposition taken by an
eigen-decomposition of the Gram matrix and the seed author's later settings.

Per tap (the three stage outputs): the teacher's first `teacher_k` right singular vectors
(default 1) and the student's first `student_k` (default 4; the seed ties them, K and K + 3
with K = 1); for each teacher vector, the student vector with the largest |cosine| to it,
signed to agree, stands for the student (`Align_rsv` at 9fb5414). Teacher vectors and
aligned student vectors are both multiplied, column by column, by the teacher's top
`teacher_k` singular values L2-normalised over those `teacher_k` (`nets/Shared.py:57-59`:
`V_T *= Sigma_T`, `V_S *= Sigma_T`); consecutive taps build the RBF maps
exp(-(v_i - v_j)^2 / 8) of [B, C_i, C_j, K] and the loss is the sum of squared differences
over all of it, the batch too (no batch mean), added to CE; the distillation gradient is
clipped per variable to |grad CE| * sigmoid(epoch) (`Optimizer_w_Distillation` for `KD-*`).
With `teacher_k = 1` the normalised singular value is 1 (to float32 rounding: the loss moves by
~1e-7 relative, measured), so the weighting leaves the default as it was.

Differences: the source's `SVD_eid` decomposes on the CPU (`eigh` of the C x C Gram matrix
or an SVD of the HW x HW one) and attaches KD-SVD's hand-written SVD gradient
(`gradient_svd`, 'Svd_', through `SVD_grad_map`); here `eigh` of the smaller Gram matrix
(`kd_svd.top_singular`) has its exact gradient (for distinct eigenvalues). The two differ:
the seed's is twice the exact one where positions >= channels (its `right_grad`: the seed
networks' stages 1 and 2) and not a multiple of it where channels > positions (`left_grad`:
stage 3, 8x8 positions, 256 channels), as docs/fidelity.md states for KD-SVD. Where HW / C
lies strictly between 2/3 and 3/2 (e.g. 8x8x64, stage 3 of the standard CIFAR ResNets) the
source takes `tf.svd` of the stop-gradient copy of the map, so no distillation gradient
reaches that tap there. KD-EID has no bug-compatible variant of the seed's gradient (for
KD-SVD, `decomposition=seed_svd` is one).
Vectors are canonically signed, as in `kd_svd` (the source keeps whatever sign its solver
returns, which the RBF of consecutive taps depends on).
"""

from __future__ import annotations

import tensorflow as tf

from kd_trainer.methods import catalog
from kd_trainer.methods.base import DistillationMethod
from kd_trainer.methods.kd_svd import TAPS, align, clipped_task_gradients, rbf_map, svd_knowledge


class KDEID(DistillationMethod):
    """CE + weight * sum over consecutive tap pairs of sum_{B, C_i, C_j, K} (RBF_s - RBF_t)^2, the
    vectors scaled by the teacher's normalised singular values (module docstring)."""

    name = "kd_eid"
    student_taps = TAPS
    teacher_taps = TAPS
    loss_term_names = ("ce", "eid")

    Params = catalog.KDEIDParams
    task_gradients = clipped_task_gradients  # the seed's clipping of `KD-*` methods

    def loss_terms(self, labels, cross_entropy, student, teacher, stage="main"):
        p = self.params
        student_vectors, teacher_vectors = [], []
        for tap in TAPS:
            teacher_values, teacher_v = svd_knowledge(teacher[tap], p.teacher_k)
            _, student_v = svd_knowledge(student[tap], p.student_k)
            scale = teacher_values[:, None, :]  # [B, 1, K]: the teacher's normalised singular values
            teacher_vectors.append(teacher_v * scale)
            student_vectors.append(align(student_v, teacher_v) * scale)
        total = 0.0
        for i in range(len(TAPS) - 1):
            student_map = rbf_map(student_vectors[i], student_vectors[i + 1])
            teacher_map = tf.stop_gradient(rbf_map(teacher_vectors[i], teacher_vectors[i + 1]))
            total += tf.reduce_sum(tf.square(student_map - teacher_map))
        return {"ce": cross_entropy, "eid": p.weight * total}
