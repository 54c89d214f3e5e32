"""Distillation methods by name: one module per method, listed in the TensorFlow-free
`catalog`; a method's class is imported when a run first asks for it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Mapping

from kd_trainer.methods.catalog import CATALOG, MethodEntry, entry  # noqa: F401 (the package's API)

if TYPE_CHECKING:
    from kd_trainer.methods.base import DistillationMethod


def method_class(name: str) -> type[DistillationMethod]:
    implementation = entry(name).implementation
    if isinstance(implementation, str):
        module, _, attribute = implementation.partition(":")
        implementation = getattr(importlib.import_module(module), attribute)
    return implementation


def create(name: str, params: Mapping[str, Any] | None = None) -> DistillationMethod:
    """Instantiates the named method with its defaults overridden by `params`."""
    return method_class(name)(params, name=name)

