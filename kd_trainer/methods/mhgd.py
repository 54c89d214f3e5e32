"""MHGD (Lee & Song, BMVC 2019): graph-based distillation by a multi-head attention network.

Per tap (the three stage outputs) each network is summarised by its dominant right singular
vector (the teacher's first, the best-aligned of the student's first four, as in KD-EID).
For consecutive taps (i-1, i) a multi-head attention network relates the two vectors of
every pair of examples in the batch: 8 heads of [B, B] attention logits from a "sender"
(tap i) and a "receiver" (tap i-1) projection (dense, no bias, + BN). A first stage on the
teacher alone trains it so that an estimator can rebuild the teacher's tap-i vector from
its tap-(i-1) vectors through the softmax attention (random head dropout), with weight
decay 5e-4 * sum w^2 on its weights; then, fixed and in inference mode, it gives the
graphs tanh(G_T) and tanh(G_S), and the student learns
sum over heads and examples of KL(softmax(tanh G_S) || softmax(tanh G_T)), with CE and the
distillation gradient clipped per variable to |grad CE| * sigmoid(main-stage epoch).

Source: sseung0703/KD_methods_with_TF at HEAD 9fb5414 (`nets/Relation.py` MHGD,
Attention_head, Estimator, drop_head, kld_loss; `op_util.py` Optimizer_w_MHGD;
`train_w_distill.py`: 40 initialisation epochs). Layers follow its arg scopes: dense
layers without bias (the estimator's last with a zero-initialised bias), variance-scaling
fan-out init, BN with decay 0.9 and epsilon 1e-5 (ReLU in the estimator). Differences:
the decomposition as in `kd_eid`: canonical signs, and the exact gradient of `eigh` where the
source's `SVD_eid` attaches KD-SVD's hand-written SVD gradient, which is twice the exact one
where positions >= channels, not a multiple of it where channels > positions, and absent
where HW / C lies strictly between 2/3 and 3/2 (docs/fidelity.md); the head dropout noise is
a stateless draw keyed on the run's seed and a checkpointed counter.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from kd_trainer.methods import catalog
from kd_trainer.methods.base import MAIN_STAGE, TEACHER_STAGE, DistillationMethod, RunInfo
from kd_trainer.methods.kd_svd import TAPS, align, clipped_task_gradients, svd_knowledge

BN_DECAY = 0.9
BN_EPSILON = 1e-5


class Dense(tf.Module):
    """x @ W (+ b), W initialised as the source's variance scaling (factor 2, fan-out)."""

    def __init__(self, units_in: int, units_out: int, bias: bool, name: str):
        super().__init__(name=name)
        initializer = keras.initializers.VarianceScaling(2.0, "fan_out", "truncated_normal")
        self.kernel = tf.Variable(initializer([units_in, units_out]), name="kernel")
        self.bias = tf.Variable(tf.zeros([units_out]), name="bias") if bias else None

    def __call__(self, x: tf.Tensor, frozen: bool) -> tf.Tensor:
        kernel = tf.stop_gradient(self.kernel) if frozen else self.kernel
        y = tf.matmul(x, kernel)
        if self.bias is not None:
            y += tf.stop_gradient(self.bias) if frozen else self.bias
        return y


class BatchNorm(tf.Module):
    """Batch normalisation over the batch axis of [B, F]: batch statistics (and moving-average
    updates) while training, the moving statistics when frozen."""

    def __init__(self, features: int, name: str):
        super().__init__(name=name)
        self.gamma = tf.Variable(tf.ones([features]), name="gamma")
        self.beta = tf.Variable(tf.zeros([features]), name="beta")
        self.moving_mean = tf.Variable(tf.zeros([features]), trainable=False, name="moving_mean")
        self.moving_variance = tf.Variable(tf.ones([features]), trainable=False, name="moving_variance")

    def __call__(self, x: tf.Tensor, frozen: bool) -> tf.Tensor:
        if frozen:
            return tf.stop_gradient(self.gamma) * (x - self.moving_mean) / tf.sqrt(
                self.moving_variance + BN_EPSILON) + tf.stop_gradient(self.beta)
        mean, variance = tf.nn.moments(x, axes=[0])
        self.moving_mean.assign(BN_DECAY * self.moving_mean + (1 - BN_DECAY) * tf.stop_gradient(mean))
        self.moving_variance.assign(BN_DECAY * self.moving_variance + (1 - BN_DECAY) * tf.stop_gradient(variance))
        return self.gamma * (x - mean) / tf.sqrt(variance + BN_EPSILON) + self.beta


class AttentionHead(tf.Module):
    """[B, D_i], [B, D_{i-1}] -> [H, B, B] attention logits between every pair of examples."""

    def __init__(self, sender_dim: int, receiver_dim: int, width: int, heads: int, name: str):
        super().__init__(name=name)
        self.width, self.heads = width, heads
        self.sender, self.sender_bn = Dense(sender_dim, width * heads, False, "sender"), BatchNorm(width * heads, "sbn")
        self.receiver = Dense(receiver_dim, width * heads, False, "receiver")
        self.receiver_bn = BatchNorm(width * heads, "rbn")

    def __call__(self, keys: tf.Tensor, queries: tf.Tensor, frozen: bool) -> tf.Tensor:
        shape = [-1, self.width, self.heads]
        sender = tf.transpose(tf.reshape(self.sender_bn(self.sender(keys, frozen), frozen), shape), [2, 0, 1])
        receiver = tf.transpose(tf.reshape(self.receiver_bn(self.receiver(queries, frozen), frozen), shape), [2, 1, 0])
        return tf.matmul(sender, receiver)


class Estimator(tf.Module):
    """Rebuilds tap i's unit vectors from tap (i-1)'s through the softmax attention (teacher stage only)."""

    def __init__(self, input_dim: int, output_dim: int, heads: int, name: str):
        super().__init__(name=name)
        self.width, self.heads = (input_dim + output_dim) // 2, heads
        self.embed, self.embed_bn = Dense(input_dim, self.width, False, "fc0"), BatchNorm(self.width, "bn0")
        self.output = Dense(self.width * heads, output_dim, True, "fc1")

    def __call__(self, vectors: tf.Tensor, attention: tf.Tensor, head_mask: tf.Tensor) -> tf.Tensor:
        batch = tf.shape(vectors)[0]
        weights = tf.reshape(tf.nn.softmax(attention) * head_mask, [self.heads * batch, batch])
        x = tf.nn.relu(self.embed_bn(self.embed(vectors, False), False))
        x = tf.reshape(tf.matmul(weights, x), [self.heads, batch, self.width])
        x = tf.reshape(tf.transpose(x, [1, 0, 2]), [batch, self.heads * self.width])
        return tf.math.l2_normalize(self.output(x, False), axis=-1)


def head_dropout_mask(noise: tf.Tensor) -> tf.Tensor:
    """Keeps head h for example b where its noise exceeds the mean over heads ([H, B, 1])."""
    return tf.cast(noise - tf.reduce_mean(noise, axis=0, keepdims=True) > 0, noise.dtype)


def graph_kl(student_graph: tf.Tensor, teacher_graph: tf.Tensor) -> tf.Tensor:
    """sum over heads and rows of KL(softmax(student) || softmax(teacher)) (the source's kld_loss)."""
    log_student = tf.nn.log_softmax(student_graph)
    return tf.reduce_sum(tf.exp(log_student) * (log_student - tf.nn.log_softmax(teacher_graph)))


class MHGD(DistillationMethod):
    """teacher_init: estimator loss + 5e-4 sum w^2 (the attention network only); main: CE + weight * graph KL."""

    name = "mhgd"
    student_taps = TAPS
    teacher_taps = TAPS
    loss_term_names = ("mha", "mha_decay", "ce", "mhgd")
    stages = (TEACHER_STAGE, MAIN_STAGE)
    teacher_stages = (TEACHER_STAGE,)

    Params = catalog.MHGDParams
    task_gradients = clipped_task_gradients  # the seed's clipping of `KD-*` methods

    def prepare(self, run: RunInfo) -> None:
        self.seed = run.seed

    def build(self, student_shapes, teacher_shapes):
        if not hasattr(self, "seed"):
            raise ValueError("mhgd: call prepare(RunInfo(...)) before building: the head dropout is keyed on the "
                             "run's seed")
        p = self.params
        for tap in TAPS:
            if student_shapes[tap][-1] != teacher_shapes[tap][-1]:
                raise ValueError(f"mhgd: tap '{tap}' has {student_shapes[tap][-1]} channels in the student and "
                                 f"{teacher_shapes[tap][-1]} in the teacher; the attention network relates vectors "
                                 "of equal width (as in the source)")
        dims = [teacher_shapes[tap][-1] for tap in TAPS]
        self.attention_heads = [AttentionHead(dims[i], dims[i - 1], (dims[i] + dims[i - 1]) // 2, p.num_heads,
                                              f"mhgd_attention{i}") for i in range(1, len(TAPS))]
        self.estimators = [Estimator(dims[i - 1], dims[i], p.num_heads, f"mhgd_estimator{i}")
                           for i in range(1, len(TAPS))]
        self.draws = tf.Variable(0, dtype=tf.int64, trainable=False, name="mhgd_draws")

    def _vectors(self, taps, reference=None) -> list[tf.Tensor]:
        """Per tap [B, C]: the teacher's first right singular vector, or (with the teacher's as
        `reference`) the student's aligned one."""
        vectors = []
        for index, tap in enumerate(TAPS):
            if reference is None:
                _, v = svd_knowledge(taps[tap], self.params.teacher_k)
            else:
                _, v = svd_knowledge(taps[tap], self.params.student_k)
                v = align(v, reference[index][:, :, None])
            vectors.append(v[:, :, 0])
        return vectors

    def loss_terms(self, labels, cross_entropy, student, teacher, stage="main"):
        p = self.params
        teacher_vectors = self._vectors(teacher)
        if stage == TEACHER_STAGE:
            seed = tf.stack([tf.constant(self.seed, tf.int64), self.draws])
            self.draws.assign_add(1)
            loss = 0.0
            for i, (head, estimator) in enumerate(zip(self.attention_heads, self.estimators), start=1):
                attention = head(teacher_vectors[i], teacher_vectors[i - 1], frozen=False)
                noise = tf.random.stateless_normal([p.num_heads, tf.shape(attention)[1], 1],
                                                   tf.random.experimental.stateless_fold_in(seed, i))
                estimate = estimator(teacher_vectors[i - 1], attention, head_dropout_mask(noise))
                loss += tf.reduce_mean(1.0 - tf.reduce_sum(estimate * teacher_vectors[i], axis=-1))
            decay = tf.add_n([tf.reduce_sum(tf.square(v)) for v in self.trainable_variables])
            return {"mha": loss, "mha_decay": p.mha_weight_decay * decay}
        student_vectors = self._vectors(student, reference=teacher_vectors)
        total = 0.0
        for i, head in enumerate(self.attention_heads, start=1):
            teacher_graph = tf.tanh(head(teacher_vectors[i], teacher_vectors[i - 1], frozen=True))
            student_graph = tf.tanh(head(student_vectors[i], student_vectors[i - 1], frozen=True))
            total += graph_kl(student_graph, teacher_graph)
        return {"ce": cross_entropy, "mhgd": p.weight * total}
