"""KD-EID (Lee & Song; sseung0703/KD_methods_with_TF at HEAD 9fb5414, `nets/Shared.py`
`KD_SVD(..., 'EID')`, `nets/SVP.py` `SVD_eid`): KD-SVD with the decomposition taken by an
eigen-decomposition of the Gram matrix and the seed author's later settings.

Per tap (the three stage outputs): the teacher's first right singular vector (K = 1) and
the student's first four; the student vector with the largest |cosine| to the teacher's,
signed to agree, stands for the student; consecutive taps build the RBF maps
exp(-(v_i - v_j)^2 / 8) and the loss is the sum of squared differences over the batch too
(no batch mean), added to CE; the distillation gradient is clipped per variable to
|grad CE| * sigmoid(epoch) (`Optimizer_w_Distillation` for `KD-*`).

Differences: the source's `SVD_eid` runs `eigh` on the CPU and attaches the closed-form SVD
gradient by hand; here `eigh` of the C x C Gram matrix is differentiated by TensorFlow
(the same gradient for distinct eigenvalues). Vectors are canonically signed, as in
`kd_svd` (the source keeps whatever sign `eigh` returns, which the RBF of consecutive taps
depends on). With K = 1 the teacher's normalised singular value is 1, so no scaling.
"""

from __future__ import annotations

import tensorflow as tf

from kd_trainer.methods import catalog
from kd_trainer.methods.base import DistillationMethod
from kd_trainer.methods.kd_svd import TAPS, align, rbf_map, svd_knowledge


class KDEID(DistillationMethod):
    """CE + weight * sum over consecutive tap pairs of sum_{B, C_i, C_j} (RBF_s - RBF_t)^2."""

    name = "kd_eid"
    student_taps = TAPS
    teacher_taps = TAPS
    loss_term_names = ("ce", "eid")
    clips_distillation_gradient = True

    Params = catalog.KDEIDParams

    def loss_terms(self, labels, cross_entropy, student, teacher, stage="main"):
        p = self.params
        student_vectors, teacher_vectors = [], []
        for tap in TAPS:
            _, teacher_v = svd_knowledge(teacher[tap], p.teacher_k)
            _, student_v = svd_knowledge(student[tap], p.student_k)
            teacher_vectors.append(teacher_v)
            student_vectors.append(align(student_v, teacher_v))
        total = 0.0
        for i in range(len(TAPS) - 1):
            student_map = rbf_map(student_vectors[i], student_vectors[i + 1])
            teacher_map = tf.stop_gradient(rbf_map(teacher_vectors[i], teacher_vectors[i + 1]))
            total += tf.reduce_sum(tf.square(student_map - teacher_map))
        return {"ce": cross_entropy, "eid": p.weight * total}
