"""Registry of distillation methods by name (one module per method)."""

from __future__ import annotations

from typing import Any, Mapping

from kd_trainer.methods.activation_boundary import ActivationBoundary
from kd_trainer.methods.attention import AttentionTransfer
from kd_trainer.methods.base import DistillationMethod
from kd_trainer.methods.dml import DeepMutualLearning
from kd_trainer.methods.fitnet import FitNet
from kd_trainer.methods.fsp import FSP
from kd_trainer.methods.jacobian import JacobianMatching
from kd_trainer.methods.kd_svd import KDSVD
from kd_trainer.methods.rkd import RKD
from kd_trainer.methods.soft_logits import SoftLogits, SoftLogitsFewShot
from kd_trainer.methods.zero_shot import ZeroShot

REGISTRY: dict[str, type[DistillationMethod]] = {
    cls.name: cls
    for cls in (SoftLogits, DeepMutualLearning, FitNet, AttentionTransfer, JacobianMatching, ActivationBoundary,
                FSP, KDSVD, RKD, ZeroShot, SoftLogitsFewShot)
}


def method_class(name: str) -> type[DistillationMethod]:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown distillation method {name!r}; valid methods: {', '.join(sorted(REGISTRY))}") from None


def create(name: str, params: Mapping[str, Any] | None = None) -> DistillationMethod:
    """Instantiates the named method with its defaults overridden by `params`."""
    return method_class(name)(params)
