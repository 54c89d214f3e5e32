"""The catalog of distillation methods, importable without TensorFlow.

Each entry names a method, the class that implements it (imported only when a run needs it)
and its hyper-parameters: a frozen dataclass whose field defaults are the method's defaults
(docs/methods.md gives each one's source). Presets, `kd presets` and configuration checks
validate against the catalog, so commands that do not train never load TensorFlow.
Adding a method: its module in this package, its Params and one entry below.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from kd_trainer import model_specs


@dataclasses.dataclass(frozen=True)
class NoParams:
    """Hyper-parameters of a method that has none."""


@dataclasses.dataclass(frozen=True)
class SoftLogitsParams:
    temperature: float = 3.0
    ce_weight: float = 0.7
    kd_weight: float = 0.3
    temperature_squared: bool = False


@dataclasses.dataclass(frozen=True)
class DeepMutualLearningParams:
    temperature: float = 1.0
    weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class FitNetParams:
    init_epochs: int = 40
    weight: float = 1.0
    regressor: bool = False


@dataclasses.dataclass(frozen=True)
class AttentionTransferParams:
    beta: float = 1e3


@dataclasses.dataclass(frozen=True)
class JacobianMatchingParams:
    at_beta: float = 1e3
    weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class ActivationBoundaryParams:
    init_epochs: int = 40
    weight: float = 3e-3
    margin: float = 1.0
    preact: bool = True
    ce_weight: float = 0.7
    kd_weight: float = 0.3
    temperature: float = 3.0


@dataclasses.dataclass(frozen=True)
class FSPParams:
    init_epochs: int = 40
    weight: float = 1e-3


@dataclasses.dataclass(frozen=True)
class KDSVDParams:
    k: int = 4
    weight: float = 1.0

    def model_problems(self, student_channels: tuple[int, ...], teacher_channels: tuple[int, ...]) -> list[str]:
        """k singular vectors of a [HW, C] map need k <= C at every tap of both networks."""
        channels = min(*student_channels, *teacher_channels)
        if self.k > channels:
            return [f"method 'kd_svd': parameter 'k' must be at most {channels} (the fewest channels at a "
                    f"tap of the student or the teacher), got {self.k}"]
        return []


@dataclasses.dataclass(frozen=True)
class RKDParams:
    tap: str = "logits"
    distance_weight: float = 100.0
    angle_weight: float = 200.0
    normalize: bool = True


@dataclasses.dataclass(frozen=True)
class ZeroShotParams:
    temperature: float = 20.0
    temperature_squared: bool = True


@dataclasses.dataclass(frozen=True)
class MethodEntry:
    name: str
    implementation: str | type  # "package.module:Class", or the class itself
    params: type = NoParams


CATALOG: dict[str, MethodEntry] = {entry.name: entry for entry in (
    MethodEntry("soft_logits", "kd_trainer.methods.soft_logits:SoftLogits", SoftLogitsParams),
    MethodEntry("soft_logits_fewshot", "kd_trainer.methods.soft_logits:SoftLogitsFewShot", SoftLogitsParams),
    MethodEntry("dml", "kd_trainer.methods.dml:DeepMutualLearning", DeepMutualLearningParams),
    MethodEntry("fitnet", "kd_trainer.methods.fitnet:FitNet", FitNetParams),
    MethodEntry("at", "kd_trainer.methods.attention:AttentionTransfer", AttentionTransferParams),
    MethodEntry("jacobian", "kd_trainer.methods.jacobian:JacobianMatching", JacobianMatchingParams),
    MethodEntry("ab", "kd_trainer.methods.activation_boundary:ActivationBoundary", ActivationBoundaryParams),
    MethodEntry("fsp", "kd_trainer.methods.fsp:FSP", FSPParams),
    MethodEntry("kd_svd", "kd_trainer.methods.kd_svd:KDSVD", KDSVDParams),
    MethodEntry("rkd", "kd_trainer.methods.rkd:RKD", RKDParams),
    MethodEntry("zero_shot", "kd_trainer.methods.zero_shot:ZeroShot", ZeroShotParams),
)}


def entry(name: str) -> MethodEntry:
    try:
        return CATALOG[name]
    except KeyError:
        raise ValueError(f"unknown distillation method {name!r}; valid methods: {', '.join(sorted(CATALOG))}") from None


def check_params(name: str, values: Mapping[str, Any]):
    """The method's Params built from `values` (ValueError naming the method and parameter if invalid)."""
    return parse_params(entry(name).params, values, f"method '{name}'")


def parse_params(params_class: type, values: Mapping[str, Any], owner: str):
    """Builds a Params dataclass from a mapping, rejecting unknown keys and wrong types."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{owner}: parameters must be an object of name: value, got {values!r}")
    fields = {field.name: field for field in dataclasses.fields(params_class)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{owner}: unknown parameter(s) {unknown}; valid: {sorted(fields) or 'none'}")
    parsed = {}
    for key, value in values.items():
        expected = type(getattr(params_class(), key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ValueError(f"{owner}: parameter '{key}' must be {expected.__name__}, got {value!r}")
        parsed[key] = value
    params = params_class(**parsed)
    for field in fields:
        problem = _out_of_range(field, getattr(params, field))
        if problem:
            raise ValueError(f"{owner}: parameter '{field}' {problem}")
    return params


def model_problems(name: str, params: Any, student_model: str, teacher_model: str) -> list[str]:
    """Checks of a method's parameters against the networks (a Params class may define
    `model_problems(student stage channels, teacher stage channels)`, e.g. KD-SVD's k)."""
    check = getattr(params, "model_problems", None)
    if check is None:
        return []
    return check(model_specs.model_spec(student_model).stage_channels,
                 model_specs.model_spec(teacher_model).stage_channels)


# Ranges shared by every method's parameters, by name: (low, high), inclusive. Wide enough
# for any published setting, narrow enough to catch typos (temperature=1e-300, weight=1e308).
MAX_LOSS_WEIGHT = 1e6
_RANGES = {
    "temperature": (1e-2, 1e3),
    "beta": (1e-12, MAX_LOSS_WEIGHT),
    "at_beta": (1e-12, MAX_LOSS_WEIGHT),
    "k": (1, 1024),
    "margin": (0, 1e3),
    "init_epochs": (0, 1000),
}


def _out_of_range(name: str, value: Any) -> str | None:
    """Ranges shared by every method's parameters, by name (loss weights, temperatures, counts)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value):
        return f"must be finite, got {value}"
    low, high = _RANGES.get(name, (0, MAX_LOSS_WEIGHT) if name == "weight" or name.endswith("_weight") else
                            (-math.inf, math.inf))
    if not low <= value <= high:
        return f"must be in [{low:g}, {high:g}], got {value}"
    return None
