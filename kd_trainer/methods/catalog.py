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


STAGE_TAPS = ("stage1", "stage2", "stage3")


@dataclasses.dataclass(frozen=True)
class NoParams:
    """Hyper-parameters of a method that has none."""


@dataclasses.dataclass(frozen=True)
class SoftLogitsParams:
    temperature: float = 3.0
    ce_weight: float = 0.7
    kd_weight: float = 0.3
    temperature_squared: bool = False
    logit_standardization: bool = False


def _choice(default: str, *others: str) -> Any:
    """A string parameter restricted to `default` and `others` (checked by parse_params)."""
    return dataclasses.field(default=default, metadata={"choices": (default, *others)})


@dataclasses.dataclass(frozen=True)
class DeepMutualLearningParams:
    temperature: float = 1.0
    weight: float = 1.0
    # sequential: the peer steps first, then the student against the updated peer (the seed,
    # the paper's Algorithm 1); simultaneous: both step from one forward pass.
    update_order: str = _choice("sequential", "simultaneous")


@dataclasses.dataclass(frozen=True)
class FitNetParams:
    init_epochs: int = 40
    weight: float = 1.0
    regressor: bool = False
    # "init" (the seed): the hint alone in an initialisation stage, then CE. "main" (RepDistiller):
    # one stage of CE + weight * hint, no initialisation stage.
    hint_stage: str = "init"
    taps: str = "stage1,stage2,stage3"  # comma-separated; RepDistiller's hint layer 2 is "stage2"

    def __post_init__(self):
        if self.hint_stage not in ("init", "main"):
            raise ValueError(f"method 'fitnet': parameter 'hint_stage' must be 'init' or 'main', got {self.hint_stage!r}")
        taps = self.taps.split(",")
        if not taps or len(set(taps)) != len(taps) or not set(taps) <= set(STAGE_TAPS):
            raise ValueError(f"method 'fitnet': parameter 'taps' must be distinct names among {', '.join(STAGE_TAPS)} "
                             f"separated by commas, got {self.taps!r}")


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
    # batch_sum: squared RBF differences summed over the batch too (the seed); batch_mean: averaged over it.
    reduction: str = _choice("batch_sum", "batch_mean")
    # per_teacher_vector: slot k takes the student vector closest to teacher vector k (the paper);
    # seed: the seed's Align_rsv, which indexes student vectors by teacher index (a seed bug).
    alignment: str = _choice("per_teacher_vector", "seed")
    # gram_eigh: top-K eigenpairs of the Gram matrix, their exact gradient, canonical signs;
    # seed_svd: the seed's tf.svd on the CPU with its hand-written gradient, the solver's signs,
    # NaNs zeroed and non-finite squared differences masked (nets/SVP.py, a bug-compatible variant).
    decomposition: str = _choice("gram_eigh", "seed_svd")

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
    # all_entries: distances divided by their mean over all B x B entries, the diagonal
    # floored at 1e-6 (the seed); off_diagonal: over the B^2 - B pairs (the paper).
    distance_normalization: str = _choice("all_entries", "off_diagonal")


@dataclasses.dataclass(frozen=True)
class ZeroShotParams:
    temperature: float = 20.0
    temperature_squared: bool = True


@dataclasses.dataclass(frozen=True)
class DKDParams:
    """mdistiller `engine/cfg.py` (CFG.DKD): CE 1, alpha (target class) 1, beta (non-target) 8, T 4,
    warm-up over the first 20 of 240 epochs, here as a fraction of the run's epochs."""
    ce_weight: float = 1.0
    tckd_weight: float = 1.0
    nckd_weight: float = 8.0
    temperature: float = 4.0
    warmup_fraction: float = 20 / 240
    logit_standardization: bool = False


@dataclasses.dataclass(frozen=True)
class DISTParams:
    """hunto/image_classification_sota `configs/strategies/distill/dist_cifar.yaml` (kd: dist_t4,
    ori_loss_weight 1, kd_loss_weight 2) with DIST(beta=1, gamma=1, tau=4)."""
    ce_weight: float = 1.0
    kd_weight: float = 2.0
    inter_weight: float = 1.0
    intra_weight: float = 1.0
    temperature: float = 4.0
    logit_standardization: bool = False


@dataclasses.dataclass(frozen=True)
class PKTParams:
    """RepDistiller `scripts/run_cifar_distill.sh` (-r 1 -a 0 -b 30000); mdistiller CFG.PKT."""
    ce_weight: float = 1.0
    weight: float = 30000.0


@dataclasses.dataclass(frozen=True)
class SPParams:
    """RepDistiller `scripts/run_cifar_distill.sh` (-r 1 -a 0 -b 3000); mdistiller CFG.SP."""
    ce_weight: float = 1.0
    weight: float = 3000.0


@dataclasses.dataclass(frozen=True)
class NSTParams:
    """RepDistiller `scripts/run_cifar_distill.sh` (-r 1 -a 0 -b 50); mdistiller CFG.NST."""
    ce_weight: float = 1.0
    weight: float = 50.0


CC_KERNELS = ("taylor_rbf", "repdistiller")


@dataclasses.dataclass(frozen=True)
class CCParams:
    """RepDistiller `scripts/run_cifar_distill.sh` (-r 1 -a 0 -b 0.02, --feat_dim 128); the paper's
    Gaussian RBF kernel (gamma 0.4) by its order-2 Taylor expansion."""
    ce_weight: float = 1.0
    weight: float = 0.02
    embedding_dim: int = 128
    kernel: str = "taylor_rbf"
    gamma: float = 0.4
    taylor_order: int = 2

    def __post_init__(self):
        if self.kernel not in CC_KERNELS:
            raise ValueError(f"method 'cc': parameter 'kernel' must be one of {', '.join(CC_KERNELS)}, "
                             f"got {self.kernel!r}")


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
    """A method: its name, implementing class, hyper-parameters, and the taps whose spatial size
    (`same_spatial`) or channel count (`same_channels`) must agree between student and teacher
    because the method compares them without a connector (checked before anything runs)."""

    name: str
    implementation: str | type  # "package.module:Class", or the class itself
    params: type = NoParams
    same_spatial: tuple[str, ...] = ()
    same_channels: tuple[str, ...] = ()


CATALOG: dict[str, MethodEntry] = {entry.name: entry for entry in (
    MethodEntry("soft_logits", "kd_trainer.methods.soft_logits:SoftLogits", SoftLogitsParams),
    MethodEntry("soft_logits_fewshot", "kd_trainer.methods.soft_logits:SoftLogitsFewShot", SoftLogitsParams),
    MethodEntry("dml", "kd_trainer.methods.dml:DeepMutualLearning", DeepMutualLearningParams),
    # FitNet's regressor maps channels where they differ; it cannot change the spatial size.
    MethodEntry("fitnet", "kd_trainer.methods.fitnet:FitNet", FitNetParams, same_spatial=STAGE_TAPS),
    MethodEntry("at", "kd_trainer.methods.attention:AttentionTransfer", AttentionTransferParams,
                same_spatial=STAGE_TAPS),
    MethodEntry("jacobian", "kd_trainer.methods.jacobian:JacobianMatching", JacobianMatchingParams,
                same_spatial=STAGE_TAPS),
    # AB's connectors (1x1 conv + BN) map channels, not the spatial size.
    MethodEntry("ab", "kd_trainer.methods.activation_boundary:ActivationBoundary", ActivationBoundaryParams,
                same_spatial=STAGE_TAPS),
    # FSP matrices are C_a x C_b: the channel counts of both networks' taps must agree.
    MethodEntry("fsp", "kd_trainer.methods.fsp:FSP", FSPParams, same_channels=STAGE_TAPS),
    # KD-SVD's RBF maps between consecutive taps are C_i x C_j x K.
    MethodEntry("kd_svd", "kd_trainer.methods.kd_svd:KDSVD", KDSVDParams, same_channels=STAGE_TAPS),
    MethodEntry("rkd", "kd_trainer.methods.rkd:RKD", RKDParams),
    MethodEntry("zero_shot", "kd_trainer.methods.zero_shot:ZeroShot", ZeroShotParams),
    MethodEntry("dkd", "kd_trainer.methods.dkd:DKD", DKDParams),
    MethodEntry("dist", "kd_trainer.methods.dist:DIST", DISTParams),
    MethodEntry("pkt", "kd_trainer.methods.pkt:PKT", PKTParams),
    MethodEntry("sp", "kd_trainer.methods.sp:SimilarityPreserving", SPParams),
    MethodEntry("nst", "kd_trainer.methods.nst:NST", NSTParams),
    MethodEntry("cc", "kd_trainer.methods.cc:CorrelationCongruence", CCParams),
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


def pair_problems(name: str, student_shapes: Mapping[str, tuple[int, ...]],
                  teacher_shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Why the method cannot compare this student's taps with this teacher's (empty if it can)."""
    method = entry(name)
    spatial = [f"{tap} {_size(student_shapes[tap][:-1])} vs {_size(teacher_shapes[tap][:-1])}"
               for tap in method.same_spatial if student_shapes[tap][:-1] != teacher_shapes[tap][:-1]]
    channels = [f"{tap} {student_shapes[tap][-1]} vs {teacher_shapes[tap][-1]}"
                for tap in method.same_channels if student_shapes[tap][-1] != teacher_shapes[tap][-1]]
    problems = []
    if spatial:
        problems.append(f"method '{name}' compares taps position by position, but their spatial sizes differ "
                        f"(student vs teacher): {', '.join(spatial)}")
    if channels:
        problems.append(f"method '{name}' needs equal channel counts, but they differ (student vs teacher): "
                        f"{', '.join(channels)}")
    return problems


def _size(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


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
        choices = fields[field].metadata.get("choices")
        if choices is not None and getattr(params, field) not in choices:
            raise ValueError(f"{owner}: parameter '{field}' must be one of {', '.join(choices)}, "
                             f"got {getattr(params, field)!r}")
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
    return check(*(tuple(model_specs.tap_shapes(model)[tap][-1] for tap in STAGE_TAPS)
                   for model in (student_model, teacher_model)))


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
    "gamma": (1e-12, MAX_LOSS_WEIGHT),
    "embedding_dim": (1, 65536),
    "taylor_order": (0, 20),
    "momentum": (0, 0.999999),
    "feat_dim": (1, 65536),
    "num_negatives": (1, 10_000_000),
    "nce_temperature": (1e-4, 1e3),
    "eps": (1e-12, 1.0),
    "init_pred_var": (1e-6, 1e6),
    "paraphraser_learning_rate": (1e-8, 10),
    "rate": (1e-6, 1e3),
    "teacher_k": (1, 1024),
    "student_k": (1, 1024),
    "num_heads": (1, 1024),
    "warmup_epochs": (0, 10_000),
}


def _out_of_range(name: str, value: Any) -> str | None:
    """Ranges shared by every method's parameters, by name (loss weights, temperatures, counts)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value):
        return f"must be finite, got {value}"
    if name.endswith("_fraction"):
        low, high = 0, 1
    else:
        low, high = _RANGES.get(name, (0, MAX_LOSS_WEIGHT) if name == "weight" or name.endswith("_weight") else
                                (-math.inf, math.inf))
    if not low <= value <= high:
        return f"must be in [{low:g}, {high:g}], got {value}"
    return None
