"""Deep mutual learning (Zhang et al. 2018): a teacher-sized peer trains from scratch with the student.

Each step both networks minimise CE + weight decay + D, D = (KL(p_peer||p_s) + KL(p_s||p_peer)) / 2
at temperature T (seed: 1), and each optimizer moves only its own network. The frozen
teacher (base_model) is not used; the peer has the teacher's architecture and is this
method's `Partner`: the order of the two updates lives here, not in the training loop.

`update_order="sequential"` (the seed's two session calls per batch, train_w_distill.py:120-129,
and the paper's Algorithm 1): the peer steps first, then the student's D is computed against
the updated peer's outputs on the same batch. `"simultaneous"`: both step from one forward pass.
"""

from __future__ import annotations

import tensorflow as tf

from kd_trainer import gradients
from kd_trainer.methods import catalog
from kd_trainer.methods.base import DistillationMethod, Partner, as_float32, cross_entropy
from kd_trainer.methods.soft_logits import softened_kl


def symmetric_kl(first_logits: tf.Tensor, second_logits: tf.Tensor, temperature: float) -> tf.Tensor:
    return (softened_kl(first_logits, second_logits, temperature)
            + softened_kl(second_logits, first_logits, temperature)) / 2


class Peer(Partner):
    """The peer's SGD step on CE + weight decay + D (its weight decay: the network's own losses)."""

    def __init__(self, network, method: DeepMutualLearning):
        super().__init__(network)
        self.mutual = method.mutual_term

    def _apply(self, tape: tf.GradientTape, objective: tf.Tensor) -> tf.Tensor:
        variables = self.network.trainable_variables
        decay, peer_gradients = gradients.with_weight_decay(
            gradients.of(tape, objective, variables, self.optimizer), variables, lambda: self.network.losses)
        gradients.apply(self.optimizer, peer_gradients, variables)
        return objective + decay


class PeerFirst(Peer):
    """Sequential: the peer steps first against the student's current outputs (the seed's first
    session call, train_w_distill.py:120-124); the student then sees the updated peer."""

    def taps(self, images, labels, student_taps, tape, stage):
        with tape.stop_recording():
            student_logits = tf.stop_gradient(student_taps["logits"])
            with tf.GradientTape() as peer_tape:
                peer_logits = self.network(images, training=True)["logits"]
                peer_task = cross_entropy(labels, peer_logits) + self.mutual(peer_logits, student_logits)
            objective = self._apply(peer_tape, peer_task)
            return self._taps_keeping_statistics(images), objective

    def _taps_keeping_statistics(self, images) -> dict[str, tf.Tensor]:
        """The updated peer's training-mode outputs, for the student's step (the seed's second
        session call). That call does not run the peer's BN updates, so the moving statistics
        this forward pass writes are put back."""
        statistics = self.network.non_trainable_variables
        saved = [tf.identity(variable) for variable in statistics]
        taps = as_float32(self.network(images, training=True))
        with tf.control_dependencies(list(taps.values())):
            for variable, value in zip(statistics, saved):
                variable.assign(value)
        return {name: tf.stop_gradient(value) for name, value in taps.items()}

    def update(self, tape, labels, taps, distillation, stage):
        return None


class PeerAlongside(Peer):
    """Simultaneous: the peer's outputs enter the student's tape, and the peer steps on the same D."""

    def taps(self, images, labels, student_taps, tape, stage):
        return as_float32(self.network(images, training=True)), None

    def update(self, tape, labels, taps, distillation, stage):
        with tape:  # the peer's objective joins the student's (persistent) tape
            peer_task = cross_entropy(labels, taps["logits"]) + distillation
        return self._apply(tape, peer_task)


class DeepMutualLearning(DistillationMethod):
    name = "dml"
    loss_term_names = ("ce", "mutual")

    Params = catalog.DeepMutualLearningParams

    def partner(self, build_teacher_network):
        network = build_teacher_network()
        return PeerFirst(network, self) if self.params.update_order == "sequential" else PeerAlongside(network, self)

    def mutual_term(self, first_logits: tf.Tensor, second_logits: tf.Tensor) -> tf.Tensor:
        """weight * D; D is symmetric, so the order of the two networks does not matter."""
        return self.params.weight * symmetric_kl(first_logits, second_logits, self.params.temperature)

    def loss_terms(self, labels, cross_entropy, student, teacher, stage="main"):
        """`teacher` holds the peer's (trainable) outputs; the same D enters both objectives."""
        return {"ce": cross_entropy, "mutual": self.mutual_term(teacher["logits"], student["logits"])}
