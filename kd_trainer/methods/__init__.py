"""Registry of distillation methods by name."""

from __future__ import annotations

from typing import Any, Mapping

from kd_trainer.methods.base import DistillationMethod
from kd_trainer.methods.soft_logits import SoftLogits

REGISTRY: dict[str, type[DistillationMethod]] = {cls.name: cls for cls in (SoftLogits,)}


def method_class(name: str) -> type[DistillationMethod]:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown distillation method {name!r}; valid methods: {', '.join(sorted(REGISTRY))}") from None


def create(name: str, params: Mapping[str, Any] | None = None) -> DistillationMethod:
    """Instantiates the named method with its defaults overridden by `params`."""
    return method_class(name)(params)
