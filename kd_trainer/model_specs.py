"""Names, shapes and taps of the networks, importable without TensorFlow (kd_trainer/models.py
builds them). Configuration checks read these, so commands that do not train never load TF."""

from __future__ import annotations

import dataclasses

NUM_CLASSES = 100
INPUT_SHAPE = (32, 32, 3)


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
    stem_channels: int
    stage_channels: tuple[int, int, int]
    blocks_per_stage: int

    @property
    def depth(self) -> int:
        return 6 * self.blocks_per_stage + 2


_STANDARD = {f"resnet{6 * n + 2}": ResNetSpec(16, (16, 32, 64), n) for n in (1, 2, 3, 5, 7, 9, 18)}
_WIDE = {"resnet8x4": ResNetSpec(32, (64, 128, 256), 1), "resnet32x4": ResNetSpec(32, (64, 128, 256), 5)}
MODEL_SPECS: dict[str, ResNetSpec] = {
    **_STANDARD,
    **_WIDE,
    "seed_resnet8": _WIDE["resnet8x4"],
    "seed_resnet32": _WIDE["resnet32x4"],
}
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
