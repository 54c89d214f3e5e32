"""ReviewKD (Chen, Liu, Zhao & Jia, CVPR 2021): knowledge review.

The student's stage outputs and pooled embedding are fused from the deepest to the
shallowest by attention-based fusion blocks (ABF): each maps its level to a common width
(1x1 conv + BN), mixes it with the upsampled fused result of the level below through two
sigmoid attention maps, and projects the mix to the teacher's width (3x3 conv + BN). The
hierarchical context loss (HCL) compares each level with the teacher's pre-activation
stage output (the pooled embedding for the last level): MSE at full resolution plus MSE
of 4x4, 2x2 and 1x1 average pools weighted 1/2, 1/4, 1/8, normalised by the weights' sum.
The term is scaled by a linear warm-up (methods/warmup.py).

Source: megvii-research/mdistiller `mdistiller/distillers/ReviewKD.py` and the REVIEWKD
node of `mdistiller/engine/cfg.py` (CE 1, ReviewKD 1, warm-up 20 of 240 epochs, middle
width min(512, the embedding's width), student post-ReLU features). The warm-up counts
the run's epochs from 1, scaled to the run's length (20 x epochs / 240).
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from kd_trainer.methods import catalog
from kd_trainer.methods.base import DistillationMethod, RunInfo
from kd_trainer.methods.connectors import adaptive_average_pool, conv
from kd_trainer.methods.warmup import linear_warmup, scaled_warmup_epochs

STAGES = ("stage1", "stage2", "stage3")
MAX_MIDDLE_CHANNELS = 512
CONTEXT_SIZES = (4, 2, 1)


def hierarchical_context_loss(student_levels: list[tf.Tensor], teacher_levels: list[tf.Tensor]) -> tf.Tensor:
    """Sum over levels of (MSE + sum_l w_l MSE(pool_l)) / (1 + sum_l w_l), w = 1/2, 1/4, 1/8 for
    the pooled sizes 4, 2, 1 smaller than the level's side."""
    total = 0.0
    for student, teacher in zip(student_levels, teacher_levels):
        loss = tf.reduce_mean(tf.square(student - teacher))
        weight, weights = 1.0, 1.0
        for size in CONTEXT_SIZES:
            if size >= student.shape[1]:
                continue
            weight /= 2.0
            loss += weight * tf.reduce_mean(tf.square(adaptive_average_pool(student, size)
                                                      - adaptive_average_pool(teacher, size)))
            weights += weight
        total += loss / weights
    return total


def upsample_nearest(features: tf.Tensor, side: int) -> tf.Tensor:
    """Nearest-neighbour upsampling of a square map by an integer factor (torch's interpolate)."""
    factor = side // features.shape[1]
    if factor * features.shape[1] != side:
        raise ValueError(f"cannot upsample a {features.shape[1]}x{features.shape[1]} map to {side}x{side}")
    return tf.repeat(tf.repeat(features, factor, axis=1), factor, axis=2)


def _kaiming_uniform_a1() -> keras.initializers.Initializer:
    """torch kaiming_uniform_(a=1): U(+-sqrt(3 / fan_in)), as mdistiller initialises ABF's convs."""
    return keras.initializers.VarianceScaling(1.0, "fan_in", "uniform")


class AttentionFusion(tf.Module):
    """ABF: one level's features (and the fused result from below) -> (output, fused)."""

    def __init__(self, in_channels: int, middle_channels: int, out_channels: int, fuse: bool, name: str):
        super().__init__(name=name)
        self.reduce = conv(middle_channels, 1, in_channels, False, f"{name}_conv1", _kaiming_uniform_a1())
        self.reduce_bn = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn1")
        self.project = conv(out_channels, 3, middle_channels, False, f"{name}_conv2", _kaiming_uniform_a1())
        self.project_bn = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn2")
        self.attention = conv(2, 1, 2 * middle_channels, True, f"{name}_attention") if fuse else None
        # Built now, so the optimizer and checkpoints see every variable before the first step.
        self.reduce.build([None, None, None, in_channels])
        self.reduce_bn.build([None, None, None, middle_channels])
        self.project.build([None, None, None, middle_channels])
        self.project_bn.build([None, None, None, out_channels])
        if self.attention is not None:
            self.attention.build([None, None, None, 2 * middle_channels])

    def __call__(self, features: tf.Tensor, below: tf.Tensor | None, out_side: int) -> tuple[tf.Tensor, tf.Tensor]:
        x = self.reduce_bn(self.reduce(features), training=True)
        if self.attention is not None:
            below = upsample_nearest(below, x.shape[1])
            weights = tf.sigmoid(self.attention(tf.concat([x, below], axis=-1)))
            x = x * weights[..., :1] + below * weights[..., 1:]
        if x.shape[1] != out_side:
            x = upsample_nearest(x, out_side)
        return self.project_bn(self.project(x), training=True), x


class ReviewKD(DistillationMethod):
    """total = ce_weight * CE + weight * warm-up(epoch) * HCL(fused student levels, teacher levels)."""

    name = "reviewkd"
    student_taps = STAGES + tuple(f"{s}_preact" for s in STAGES) + ("embedding", "logits")
    teacher_taps = tuple(f"{s}_preact" for s in STAGES) + ("embedding",)
    loss_term_names = ("ce", "reviewkd")
    uses_epoch = True

    Params = catalog.ReviewKDParams

    def prepare(self, run: RunInfo) -> None:
        self.warmup_epochs = scaled_warmup_epochs(self.params.warmup_epochs, run.main_epochs)

    def _student_levels(self, student) -> list[tf.Tensor]:
        suffix = "_preact" if self.params.student_preact else ""
        embedding = student["embedding"]
        return [student[s + suffix] for s in STAGES] + [tf.reshape(embedding, [-1, 1, 1, embedding.shape[-1]])]

    @staticmethod
    def _teacher_levels(teacher) -> list[tf.Tensor]:
        embedding = teacher["embedding"]
        return [teacher[f"{s}_preact"] for s in STAGES] + [tf.reshape(embedding, [-1, 1, 1, embedding.shape[-1]])]

    def build(self, student_shapes, teacher_shapes):
        if not hasattr(self, "warmup_epochs"):
            raise ValueError("reviewkd: call prepare(RunInfo(main_epochs=...)) before building: the warm-up "
                             "is scaled to the run's length")
        suffix = "_preact" if self.params.student_preact else ""
        in_channels = [student_shapes[s + suffix][-1] for s in STAGES] + [student_shapes["embedding"][-1]]
        out_channels = [teacher_shapes[f"{s}_preact"][-1] for s in STAGES] + [teacher_shapes["embedding"][-1]]
        self.out_sides = [teacher_shapes[f"{s}_preact"][1] for s in STAGES] + [1]
        middle = min(MAX_MIDDLE_CHANNELS, in_channels[-1])
        # Shallow to deep; only the deepest (the embedding) has nothing below to fuse.
        self.fusions = [AttentionFusion(c_in, middle, c_out, level < len(in_channels) - 1, f"reviewkd_abf{level + 1}")
                        for level, (c_in, c_out) in enumerate(zip(in_channels, out_channels))]

    def loss_terms(self, labels, cross_entropy, student, teacher, stage="main", epoch=None):
        p = self.params
        levels = self._student_levels(student)
        outputs = [None] * len(levels)
        fused = None
        for level in reversed(range(len(levels))):
            outputs[level], fused = self.fusions[level](levels[level], fused, self.out_sides[level])
        hcl = hierarchical_context_loss(outputs, self._teacher_levels(teacher))
        warmup = linear_warmup(tf.cast(epoch, hcl.dtype), self.warmup_epochs)
        return {"ce": p.ce_weight * cross_entropy, "reviewkd": p.weight * warmup * hcl}
