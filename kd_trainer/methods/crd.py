"""CRD (Tian, Krishnan & Isola, ICLR 2020): contrastive representation distillation.

Student and teacher embeddings (the pooled features) are projected to `feat_dim` and
L2-normalised. Each anchor is scored against one positive and `num_negatives` negatives
drawn from a memory bank of the *other* network's past embeddings, one row per training
example, and a noise-contrastive estimation loss separates the positive from the noise.
Both directions count (student anchor vs teacher bank, teacher anchor vs student bank).
The banks are a momentum average of each example's embeddings, renormalised.

Source: HobbitLong/RepDistiller `crd/criterion.py`, `crd/memory.py` (defaults from its
`train_student.py` and `scripts/run_cifar_distill.sh`: CE 1, CRD 0.8, KD 0; CRD+KD: KD 1).
Deliberate differences, all for a whole-graph training step:
- Negatives are drawn uniformly *with replacement* from the examples of other classes
  (RepDistiller's "exact" mode draws without replacement when it can); the draw is a
  stateless function of the run's seed and a draw counter checkpointed with the banks, so
  a resumed run draws what the uninterrupted one would have.
- The banks, the NCE normalisation constants and the draw counter are variables of the
  method, saved in every epoch checkpoint; the constants are fixed on the first step as in
  the source. Several replicas (MirroredStrategy) are refused: their bank writes would race.
Computed differently, same result: `contrast_scores` (one matmul with the whole bank, each column
weighted by its draw count, when the draws cover much of it) and `nce_loss` (its gradient written
out, logs split for float32).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from kd_trainer.methods import catalog
from kd_trainer.methods.base import DistillationMethod, RunInfo
from kd_trainer.methods.soft_logits import softened_kl

# Added to NCE denominators, as in the source.
NCE_EPSILON = 1e-7
# Negatives are scored by one anchors x bank matmul when the bank has at most this many rows per
# drawn column (contrast_scores); otherwise from the drawn rows alone.
DENSE_SCORING_FACTOR = 8


class Scores(NamedTuple):
    """One direction's dot products: each anchor with its own example's bank row (`positive`, [B])
    and with bank rows drawn as negatives (`negatives`, [B, M]), column m drawn `counts[b, m]`
    times ([B, M]; None: each column once); K draws per anchor in all."""

    positive: tf.Tensor
    negatives: tf.Tensor
    num_negatives: int
    counts: tf.Tensor | None = None


def nce_loss(scores: Scores, temperature: float, normalizer: tf.Tensor, num_examples: int) -> tf.Tensor:
    """NCE loss of P = exp(dot / T) / Z with K negatives, noise n = K/N, c = n + eps:
    -(sum_b log P_pos/(P_pos + c) + sum_b,k log n/(P_neg + c)) / B.

    Each log is split as log(P_pos / c) or log(n / c), minus log1p(P / c) (small P / c keep their
    precision), so that the gradient can be written out: d/d dot = (P / (P + c) - [positive]) / (T B),
    times how often the dot was drawn; one pass over the scores each way instead of a traced chain of
    elementwise ops. Z is a constant of the run (no gradient).
    """
    num_negatives, counts = scores.num_negatives, scores.counts
    noise = num_negatives / float(num_examples)
    offset = noise + NCE_EPSILON
    log_normalizer = tf.math.log(tf.stop_gradient(normalizer))

    @tf.custom_gradient
    def loss_of(positive: tf.Tensor, negatives: tf.Tensor) -> tf.Tensor:
        batch = tf.cast(tf.shape(positive)[0], positive.dtype)
        positive_ratios = tf.exp(positive / temperature - log_normalizer) / offset  # P / c
        negative_ratios = tf.exp(negatives / temperature - log_normalizer) / offset
        negative_logs = tf.math.log1p(negative_ratios)
        if counts is not None:
            negative_logs *= counts
        log_positive = positive / temperature - log_normalizer - math.log(offset)  # log(P_pos / c)
        total = (tf.reduce_sum(log_positive - tf.math.log1p(positive_ratios))
                 + batch * (num_negatives * math.log(noise / offset)) - tf.reduce_sum(negative_logs))

        def gradient(upstream: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            scale = upstream / (temperature * batch)
            negative_gradient = negative_ratios / (1.0 + negative_ratios) * scale
            if counts is not None:
                negative_gradient *= counts
            return (positive_ratios / (1.0 + positive_ratios) - 1.0) * scale, negative_gradient
        return -total / batch, gradient

    return loss_of(scores.positive, scores.negatives)


def mean_exp(scores: Scores, temperature: float) -> tf.Tensor:
    """The mean of exp(dot / T) over every drawn dot, each counted as often as it was drawn."""
    negatives = tf.exp(tf.stop_gradient(scores.negatives) / temperature)
    if scores.counts is not None:
        negatives *= scores.counts
    total = tf.reduce_sum(tf.exp(tf.stop_gradient(scores.positive) / temperature)) + tf.reduce_sum(negatives)
    return total / tf.cast(tf.shape(scores.positive)[0] * (1 + scores.num_negatives), total.dtype)


def scores_by_matmul(num_examples: int, num_negatives: int) -> bool:
    """Whether the bank is small enough next to the draws to score it whole (`contrast_scores`)."""
    return num_examples <= DENSE_SCORING_FACTOR * (1 + num_negatives)


def negative_counts(contrast: tf.Tensor, num_examples: int) -> tf.Tensor:
    """[B, N]: how often each example was drawn as a negative of each anchor (contrast[:, 1:])."""
    return tf.math.bincount(contrast[:, 1:], minlength=num_examples, maxlength=num_examples, dtype=tf.float32,
                            axis=-1)


def contrast_scores(anchor: tf.Tensor, bank: tf.Tensor, contrast: tf.Tensor,
                    counts: tf.Tensor | None = None) -> Scores:
    """The anchors' [B, D] dot products with the rows of a bank [N, D] that `contrast` [B, 1 + K]
    names: column 0 the anchor's own example, then its K negatives.

    With `counts` (negative_counts of `contrast`), the negatives are scored as one matmul of the
    anchors with the whole bank, each column weighted by how often it was drawn: RepDistiller's
    16,384 draws per anchor against 50,000 rows would otherwise gather [B, 1 + K, D] rows (1 GB
    per bank at batch 128), and the drawn dots' gather and its scatter-add gradient cost more than
    the dense elementwise work. The same loss and gradient, summed in another order.
    """
    positive = tf.reduce_sum(anchor * tf.gather(bank, contrast[:, 0]), axis=1)
    num_negatives = contrast.shape[1] - 1
    if counts is not None:
        return Scores(positive, tf.matmul(anchor, bank, transpose_b=True), num_negatives, counts)
    return Scores(positive, tf.einsum("bkd,bd->bk", tf.gather(bank, contrast[:, 1:]), anchor), num_negatives)


def crd_loss(student_anchored: Scores, teacher_anchored: Scores, normalizers: tf.Tensor, temperature: float,
             num_examples: int) -> tf.Tensor:
    """Both NCE terms: the student anchor against teacher-bank rows and the teacher anchor against
    student-bank rows, each direction with its normalisation constant Z."""
    return (nce_loss(student_anchored, temperature, normalizers[0], num_examples)
            + nce_loss(teacher_anchored, temperature, normalizers[1], num_examples))


def sample_contrast_indices(index: tf.Tensor, labels: tf.Tensor, class_sorted: tf.Tensor, class_start: tf.Tensor,
                            class_count: tf.Tensor, num_negatives: int, seed: tf.Tensor) -> tf.Tensor:
    """[B, 1 + K] example indices: each row's own index, then K uniform draws (with
    replacement) among the examples of the other classes.

    `class_sorted` lists the example indices grouped by class; class c occupies positions
    class_start[c] .. class_start[c] + class_count[c] - 1. A draw r in [0, N - n_c) is
    mapped past class c's block, so it never lands in the anchor's class.
    """
    num_examples = tf.shape(class_sorted)[0]
    own_start = tf.gather(class_start, labels)[:, None]
    own_count = tf.gather(class_count, labels)[:, None]
    others = num_examples - own_count
    uniform = tf.random.stateless_uniform([tf.shape(index)[0], num_negatives], seed)
    draws = tf.minimum(tf.cast(uniform * tf.cast(others, tf.float32), tf.int32), others - 1)
    positions = tf.where(draws >= own_start, draws + own_count, draws)
    return tf.concat([index[:, None], tf.gather(class_sorted, positions)], axis=1)


def momentum_update(bank: tf.Variable, index: tf.Tensor, embedding: tf.Tensor, momentum: float) -> None:
    """bank[i] <- normalise(momentum * bank[i] + (1 - momentum) * embedding) for the batch's rows."""
    rows = momentum * tf.gather(bank, index) + (1.0 - momentum) * tf.stop_gradient(embedding)
    bank.scatter_nd_update(index[:, None], tf.math.l2_normalize(rows, axis=1))


def _linear(units: int, fan_in: int, name: str) -> keras.layers.Dense:
    """A dense layer initialised as torch.nn.Linear (weights and bias ~ U(+-1/sqrt(fan_in)))."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.layers.Dense(units, kernel_initializer=keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform"),
                              bias_initializer=keras.initializers.RandomUniform(-bound, bound), name=name)


class CRD(DistillationMethod):
    """total = ce_weight * CE + weight * CRD + kd_weight * KL(T) * T^2 (CRD+KD: kd_weight 1)."""

    name = "crd"
    student_taps = ("embedding", "logits")
    teacher_taps = ("embedding", "logits")
    loss_term_names = ("ce", "crd", "kd")

    Params = catalog.CRDParams

    def prepare(self, run: RunInfo) -> None:
        labels = run.example_labels
        if labels is None or len(labels) == 0:
            raise ValueError("crd: the run must give the label of every training example (RunInfo.example_labels)")
        counts = np.bincount(labels)
        if counts.max() == len(labels):
            raise ValueError(f"crd: all {len(labels)} training examples have class {int(np.argmax(counts))}: "
                             "negatives must come from other classes")
        self.num_examples = len(labels)
        self.seed = run.seed
        self.class_sorted = tf.constant(np.argsort(labels, kind="stable").astype(np.int32))
        self.class_count = tf.constant(counts.astype(np.int32))
        self.class_start = tf.constant((np.cumsum(counts) - counts).astype(np.int32))

    def build(self, student_shapes, teacher_shapes):
        if not hasattr(self, "num_examples"):
            raise ValueError("crd: call prepare(RunInfo(..., example_labels=...)) before building: the memory "
                             "banks have one row per training example")
        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            raise ValueError("crd: its memory banks support one replica; several GPUs (MirroredStrategy) would "
                             "race on their rows")
        p = self.params
        self.student_embed = _linear(p.feat_dim, student_shapes["embedding"][-1], "crd_embed_student")
        self.student_embed.build(student_shapes["embedding"])
        self.teacher_embed = _linear(p.feat_dim, teacher_shapes["embedding"][-1], "crd_embed_teacher")
        self.teacher_embed.build(teacher_shapes["embedding"])
        bound = 1.0 / math.sqrt(p.feat_dim / 3)
        self.student_memory = tf.Variable(tf.random.uniform([self.num_examples, p.feat_dim], -bound, bound),
                                          trainable=False, name="crd_student_memory")
        self.teacher_memory = tf.Variable(tf.random.uniform([self.num_examples, p.feat_dim], -bound, bound),
                                          trainable=False, name="crd_teacher_memory")
        # Z of the student-anchored and teacher-anchored scores; -1 until the first step sets them.
        self.normalizers = tf.Variable([-1.0, -1.0], trainable=False, name="crd_normalizers")
        self.draws = tf.Variable(0, dtype=tf.int64, trainable=False, name="crd_draws")

    def _fixed_normalizers(self, student_anchored: Scores, teacher_anchored: Scores) -> tf.Tensor:
        """Sets Z = mean score * N on the first step (as the source), then keeps it."""
        def first() -> tf.Tensor:
            return tf.stack([mean_exp(scores, self.params.nce_temperature)
                             for scores in (student_anchored, teacher_anchored)]) * float(self.num_examples)
        value = tf.cond(tf.reduce_any(self.normalizers < 0), first, lambda: tf.identity(self.normalizers))
        self.normalizers.assign(value)
        return value

    def loss_terms(self, labels, cross_entropy, student, teacher, stage="main", index=None):
        p = self.params
        seed = tf.stack([tf.constant(self.seed, tf.int64), self.draws])
        self.draws.assign_add(1)
        contrast = sample_contrast_indices(index, labels, self.class_sorted, self.class_start, self.class_count,
                                           p.num_negatives, seed)
        counts = (negative_counts(contrast, self.num_examples)
                  if scores_by_matmul(self.num_examples, p.num_negatives) else None)
        student_embedding = tf.math.l2_normalize(self.student_embed(student["embedding"]), axis=1)
        teacher_embedding = tf.math.l2_normalize(self.teacher_embed(teacher["embedding"]), axis=1)
        student_anchored = contrast_scores(student_embedding, self.teacher_memory, contrast, counts)
        teacher_anchored = contrast_scores(teacher_embedding, self.student_memory, contrast, counts)
        normalizers = self._fixed_normalizers(student_anchored, teacher_anchored)
        loss = crd_loss(student_anchored, teacher_anchored, normalizers, p.nce_temperature, self.num_examples)
        momentum_update(self.student_memory, index, student_embedding, p.momentum)
        momentum_update(self.teacher_memory, index, teacher_embedding, p.momentum)
        kd = softened_kl(teacher["logits"], student["logits"], p.temperature) * p.temperature ** 2
        return {"ce": p.ce_weight * cross_entropy, "crd": p.weight * loss, "kd": p.kd_weight * kd}
