"""Names, shapes and taps of the networks, importable without TensorFlow (kd_trainer/models.py
builds them). Configuration checks read these, so commands that do not train never load TF.

Every network has the same taps, so every method runs on every pair whose shapes fit it:
  stage{1,2,3}_preact, stage{1,2,3}  three stages' feature maps (docs/models.md says, per family,
                                     which tensors these are), embedding (pooled), logits.
"""

from __future__ import annotations

import dataclasses

NUM_CLASSES = 100
INPUT_SHAPE = (32, 32, 3)
# How the networks see an image (kd_trainer/data.py: normalize): per-channel (mean, std) of RGB
# images on the 0-1 scale, by name. "cifar100_rgb": the training set's statistics. "seed_bgr":
# the seed's bug (train_w_distill.py:207 at eecb346): the same statistics in BGR order, 112.4776,
# 124.1058, 129.3773 / 70.4587, 65.4312, 68.2094 on the 0-255 scale, applied to RGB images.
DEFAULT_INPUT_NORMALIZATION = "cifar100_rgb"
INPUT_NORMALIZATIONS = {
    DEFAULT_INPUT_NORMALIZATION: ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "seed_bgr": (tuple(v / 255.0 for v in (112.4776, 124.1058, 129.3773)),
                 tuple(v / 255.0 for v in (70.4587, 65.4312, 68.2094))),
}


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
    """Post-activation basic-block CIFAR ResNet (He et al. 2016), 6n+2 layers."""

    stem_channels: int
    stage_channels: tuple[int, int, int]
    blocks_per_stage: int

    @property
    def depth(self) -> int:
        return 6 * self.blocks_per_stage + 2

    def tap_shapes(self) -> dict[str, tuple[int, ...]]:
        return _shapes(zip((32, 16, 8), self.stage_channels), self.stage_channels[-1])


@dataclasses.dataclass(frozen=True)
class WideResNetSpec:
    """Pre-activation wide ResNet WRN-d-k (Zagoruyko & Komodakis 2016), as RepDistiller's models/wrn.py."""

    depth: int
    widen_factor: int

    @property
    def blocks_per_stage(self) -> int:
        return (self.depth - 4) // 6

    @property
    def stage_channels(self) -> tuple[int, int, int]:
        return (16 * self.widen_factor, 32 * self.widen_factor, 64 * self.widen_factor)

    def tap_shapes(self) -> dict[str, tuple[int, ...]]:
        return _shapes(zip((32, 16, 8), self.stage_channels), self.stage_channels[-1])


@dataclasses.dataclass(frozen=True)
class VGGSpec:
    """VGG with BatchNorm and one linear classifier, as RepDistiller's models/vgg.py: five conv
    blocks (channels per conv), max-pooling between the first four, global average pooling."""

    blocks: tuple[tuple[int, ...], ...]

    @property
    def depth(self) -> int:
        return sum(len(block) for block in self.blocks) + 3  # + the classifier, counted as in VGG's names

    def tap_shapes(self) -> dict[str, tuple[int, ...]]:
        # Taps: the outputs of blocks 1-3 (16x16, 8x8, 4x4); block 4 (4x4, no pooling at 32 px) feeds the pool.
        return _shapes(zip((16, 8, 4), (block[-1] for block in self.blocks[1:4])), self.blocks[-1][-1])


@dataclasses.dataclass(frozen=True)
class MobileNetV2Spec:
    """MobileNetV2 for 32x32 inputs, as RepDistiller's models/mobilenetv2.py (`mobile_half`: expansion 6,
    width 0.5): a stride-2 stem, seven inverted-residual groups (expansion, channels, blocks, stride),
    a 1x1 conv to 1280 channels, global average pooling."""

    expansion: int
    width: float
    groups: tuple[tuple[int, int, int, int], ...] = ((1, 16, 1, 1), (0, 24, 2, 1), (0, 32, 3, 2), (0, 64, 4, 2),
                                                      (0, 96, 3, 1), (0, 160, 3, 2), (0, 320, 1, 1))
    last_channels: int = 1280
    # Groups whose outputs are the taps (RepDistiller's f1, f2, f3: 16x16, 8x8, 4x4).
    tap_groups: tuple[int, int, int] = (1, 2, 4)

    def group_settings(self) -> list[tuple[int, int, int, int]]:
        """(expansion, channels, blocks, stride) per group; expansion 0 in `groups` means `expansion`."""
        return [(t or self.expansion, int(c * self.width), n, s) for t, c, n, s in self.groups]

    def tap_shapes(self) -> dict[str, tuple[int, ...]]:
        size, sizes = 16, []
        for _, channels, _, stride in self.group_settings():
            size //= stride
            sizes.append((size, channels))
        return _shapes((sizes[g] for g in self.tap_groups), self.last_channels)


def _shapes(stages, embedding_channels: int) -> dict[str, tuple[int, ...]]:
    """Tap shapes (without the batch) from (spatial size, channels) of the three stages."""
    shapes = {}
    for stage, (size, channels) in enumerate(stages, start=1):
        shapes[f"stage{stage}_preact"] = shapes[f"stage{stage}"] = (size, size, channels)
    return {**shapes, "embedding": (embedding_channels,), "logits": (NUM_CLASSES,)}


NetworkSpec = ResNetSpec | WideResNetSpec | VGGSpec | MobileNetV2Spec

_STANDARD = {f"resnet{6 * n + 2}": ResNetSpec(16, (16, 32, 64), n) for n in (1, 2, 3, 5, 7, 9, 18)}
_WIDE = {"resnet8x4": ResNetSpec(32, (64, 128, 256), 1), "resnet32x4": ResNetSpec(32, (64, 128, 256), 5)}
MODEL_SPECS: dict[str, NetworkSpec] = {
    **_STANDARD,
    **_WIDE,
    # The seed's "doubled" ResNet8/32 are RepDistiller's resnet8x4/resnet32x4 (tests/test_models.py).
    "seed_resnet8": _WIDE["resnet8x4"],
    "seed_resnet32": _WIDE["resnet32x4"],
    "wrn_16_2": WideResNetSpec(16, 2),
    "wrn_40_1": WideResNetSpec(40, 1),
    "wrn_40_2": WideResNetSpec(40, 2),
    "vgg8": VGGSpec(((64,), (128,), (256,), (512,), (512,))),
    "vgg13": VGGSpec(((64, 64), (128, 128), (256, 256), (512, 512), (512, 512))),
    "mobile_half": MobileNetV2Spec(expansion=6, width=0.5),
}
# Students that RepDistiller trains at learning rate 0.01 instead of 0.05 (train_student.py).
MOBILE_MODELS = ("mobile_half",)
# Which trainable variables weight decay reaches (TrainingConfig.weight_decay_scope):
#   all      every trainable variable: conv and dense kernels, BN gamma/beta, the dense bias (the seed)
#   kernels  conv and dense kernels only (no decay on BN parameters and biases)
WEIGHT_DECAY_SCOPES = ("all", "kernels")
TAP_NAMES = tuple(f"stage{i}{suffix}" for i in (1, 2, 3) for suffix in ("_preact", "")) + ("embedding", "logits")


def model_spec(name: str) -> ResNetSpec:
    try:
        return MODEL_SPECS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODEL_SPECS))}") from None


def tap_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Each tap's shape without the batch dimension (computed from the spec, no TensorFlow)."""
    return model_spec(name).tap_shapes()
