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
class CRDParams:
    feat_dim: int = 128
    num_negatives: int = 16384
    nce_temperature: float = 0.07
    momentum: float = 0.5
    weight: float = 0.8
    ce_weight: float = 1.0
    kd_weight: float = 0.0
    temperature: float = 4.0


@dataclasses.dataclass(frozen=True)
class VIDParams:
    weight: float = 1.0
    ce_weight: float = 1.0
    init_pred_var: float = 5.0
    eps: float = 1e-5


@dataclasses.dataclass(frozen=True)
class FTParams:
    init_epochs: int = 30
    paraphraser_learning_rate: float = 0.01
    rate: float = 0.5
    weight: float = 200.0
    ce_weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class ReviewKDParams:
    weight: float = 1.0
    ce_weight: float = 1.0
    warmup_epochs: float = 20.0
    student_preact: bool = False


@dataclasses.dataclass(frozen=True)
class KDEIDParams:
    teacher_k: int = 1
    student_k: int = 4
    weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class MHGDParams:
    init_epochs: int = 40
    num_heads: int = 8
    teacher_k: int = 1
    student_k: int = 4
    weight: float = 1.0
    mha_weight_decay: float = 5e-4


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
    MethodEntry("crd", "kd_trainer.methods.crd:CRD", CRDParams),
    MethodEntry("vid", "kd_trainer.methods.vid:VID", VIDParams),
    MethodEntry("ft", "kd_trainer.methods.factor_transfer:FactorTransfer", FTParams),
    MethodEntry("reviewkd", "kd_trainer.methods.reviewkd:ReviewKD", ReviewKDParams),
    MethodEntry("kd_eid", "kd_trainer.methods.kd_eid:KDEID", KDEIDParams),
    MethodEntry("mhgd", "kd_trainer.methods.mhgd:MHGD", MHGDParams),
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


def _out_of_range(name: str, value: Any) -> str | None:
    """Ranges shared by every method's parameters, by name (loss weights, temperatures, counts)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value):
        return f"must be finite, got {value}"
    if name == "momentum" and not 0 <= value < 1:
        return f"must be in [0, 1), got {value}"
    if name in ("temperature", "beta", "at_beta", "k", "feat_dim", "num_negatives", "nce_temperature", "eps",
                "init_pred_var", "paraphraser_learning_rate", "rate", "teacher_k", "student_k", "num_heads") and value <= 0:
        return f"must be > 0, got {value}"
    if (name in ("weight", "margin", "init_epochs", "warmup_epochs") or name.endswith("_weight")) and value < 0:
        return f"must be >= 0, got {value}"
    return None
