"""Deep mutual learning (Zhang et al. 2018): a teacher-sized peer trains from scratch with the student.

Each step both networks minimise CE + weight decay + D, D = (KL(p_peer||p_s) + KL(p_s||p_peer)) / 2
at temperature T (seed: 1), and each optimizer moves only its own network. The frozen
teacher (base_model) is not used; the peer has the teacher's architecture.

`update_order="sequential"` (the seed's two session calls per batch, train_w_distill.py:120-129,
and the paper's Algorithm 1): the peer steps first, then the student's D is computed against
the updated peer's outputs on the same batch. `"simultaneous"`: both step from one forward pass.
"""

from __future__ import annotations

import tensorflow as tf

from kd_trainer.methods import catalog
from kd_trainer.methods.base import DistillationMethod
from kd_trainer.methods.soft_logits import softened_kl


def symmetric_kl(first_logits: tf.Tensor, second_logits: tf.Tensor, temperature: float) -> tf.Tensor:
    return (softened_kl(first_logits, second_logits, temperature)
            + softened_kl(second_logits, first_logits, temperature)) / 2


class DeepMutualLearning(DistillationMethod):
    name = "dml"
    loss_term_names = ("ce", "mutual")
    trains_peer = True

    Params = catalog.DeepMutualLearningParams

    @property
    def peer_steps_first(self) -> bool:
        return self.params.update_order == "sequential"

    def loss_terms(self, labels, cross_entropy, student, teacher, stage="main"):
        """`teacher` holds the peer's (trainable) outputs; the same D enters both objectives."""
        return {"ce": cross_entropy,
                "mutual": self.params.weight * symmetric_kl(teacher["logits"], student["logits"],
                                                            self.params.temperature)}
