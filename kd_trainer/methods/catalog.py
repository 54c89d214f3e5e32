"""The catalog of distillation methods, importable without TensorFlow.

Each entry names a method, the class that implements it (imported only when a run needs it)
and its hyper-parameters: a frozen dataclass whose field defaults are the method's defaults
(docs/methods.md gives each one's source). Presets, `kd presets` and configuration checks
validate against the catalog, so commands that do not train never load TensorFlow.
Adding a method: its module in this package, its Params (every field declared with
`kd_trainer.fields`) and one entry below; docs/methods.md, "Adding a method", lists the rest.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from kd_trainer import fields, model_specs


STAGE_TAPS = ("stage1", "stage2", "stage3")
# Bounds of the parameter kinds: wide enough for any published setting, narrow enough to catch
# typos (temperature=1e-300, weight=1e308).
MAX_LOSS_WEIGHT = 1e6
MAX_VECTORS = 1024  # singular vectors, heads: at most a tap's channel count


def loss_weight(default: float) -> Any:
    """A loss term's weight."""
    return fields.number(default, 0, MAX_LOSS_WEIGHT)


def softmax_temperature(default: float) -> Any:
    return fields.number(default, 1e-2, 1e3)


def stage_epochs(default: int) -> Any:
    """Length of a method's initialisation stage (presets shorten every field of this name)."""
    return fields.integer(default, 0, 1000)


def vector_count(default: int) -> Any:
    return fields.integer(default, 1, MAX_VECTORS)


@dataclasses.dataclass(frozen=True)
class NoParams:
    """Hyper-parameters of a method that has none."""


@dataclasses.dataclass(frozen=True)
class SoftLogitsParams:
    temperature: float = softmax_temperature(3.0)
    ce_weight: float = loss_weight(0.7)
    kd_weight: float = loss_weight(0.3)
    temperature_squared: bool = fields.flag(False)
    logit_standardization: bool = fields.flag(False)


@dataclasses.dataclass(frozen=True)
class DeepMutualLearningParams:
    temperature: float = softmax_temperature(1.0)
    weight: float = loss_weight(1.0)
    # sequential: the peer steps first, then the student against the updated peer (the seed,
    # the paper's Algorithm 1); simultaneous: both step from one forward pass.
    update_order: str = fields.choice("sequential", "simultaneous")


@dataclasses.dataclass(frozen=True)
class FitNetParams:
    init_epochs: int = stage_epochs(40)
    weight: float = loss_weight(1.0)
    regressor: bool = fields.flag(False)
    # "init" (the seed): the hint alone in an initialisation stage, then CE. "main" (RepDistiller):
    # one stage of CE + weight * hint, no initialisation stage.
    hint_stage: str = fields.choice("init", "main")
    taps: str = fields.names("stage1,stage2,stage3", STAGE_TAPS)  # RepDistiller's hint layer 2 is "stage2"


@dataclasses.dataclass(frozen=True)
class AttentionTransferParams:
    beta: float = fields.number(1e3, 1e-12, MAX_LOSS_WEIGHT)


@dataclasses.dataclass(frozen=True)
class JacobianMatchingParams:
    at_beta: float = fields.number(1e3, 1e-12, MAX_LOSS_WEIGHT)
    weight: float = loss_weight(1.0)


@dataclasses.dataclass(frozen=True)
class ActivationBoundaryParams:
    init_epochs: int = stage_epochs(40)
    weight: float = loss_weight(3e-3)
    margin: float = fields.number(1.0, 0, 1e3)
    preact: bool = fields.flag(True)
    ce_weight: float = loss_weight(0.7)
    kd_weight: float = loss_weight(0.3)
    temperature: float = softmax_temperature(3.0)


@dataclasses.dataclass(frozen=True)
class FSPParams:
    init_epochs: int = stage_epochs(40)
    weight: float = loss_weight(1e-3)


@dataclasses.dataclass(frozen=True)
class KDSVDParams:
    k: int = vector_count(4)
    weight: float = loss_weight(1.0)
    # batch_sum: squared RBF differences summed over the batch too (the seed); batch_mean: averaged over it.
    reduction: str = fields.choice("batch_sum", "batch_mean")
    # per_teacher_vector: slot k takes the student vector closest to teacher vector k (the paper);
    # seed: the seed's Align_rsv, which indexes student vectors by teacher index (a seed bug).
    alignment: str = fields.choice("per_teacher_vector", "seed")
    # gram_eigh: top-K eigenpairs of the Gram matrix, their exact gradient, canonical signs;
    # seed_svd: the seed's tf.svd on the CPU with its hand-written gradient, the solver's signs,
    # NaNs zeroed and non-finite squared differences masked (nets/SVP.py, a bug-compatible variant).
    decomposition: str = fields.choice("gram_eigh", "seed_svd")

    def model_problems(self, student_channels: tuple[int, ...], teacher_channels: tuple[int, ...]) -> list[str]:
        """k singular vectors of a [HW, C] map need k <= C at every tap of both networks."""
        channels = min(*student_channels, *teacher_channels)
        if self.k > channels:
            return [f"method 'kd_svd': parameter 'k' must be at most {channels} (the fewest channels at a "
                    f"tap of the student or the teacher), got {self.k}"]
        return []


@dataclasses.dataclass(frozen=True)
class RKDParams:
    tap: str = fields.choice("logits", "embedding")
    distance_weight: float = loss_weight(100.0)
    angle_weight: float = loss_weight(200.0)
    normalize: bool = fields.flag(True)
    # all_entries: distances divided by their mean over all B x B entries, the diagonal
    # floored at 1e-6 (the seed); off_diagonal: over the B^2 - B pairs (the paper).
    distance_normalization: str = fields.choice("all_entries", "off_diagonal")


@dataclasses.dataclass(frozen=True)
class ZeroShotParams:
    temperature: float = softmax_temperature(20.0)
    temperature_squared: bool = fields.flag(True)


@dataclasses.dataclass(frozen=True)
class DKDParams:
    """mdistiller `engine/cfg.py` (CFG.DKD): CE 1, alpha (target class) 1, beta (non-target) 8, T 4,
    warm-up over the first 20 of 240 epochs, here as a fraction of the run's epochs."""
    ce_weight: float = loss_weight(1.0)
    tckd_weight: float = loss_weight(1.0)
    nckd_weight: float = loss_weight(8.0)
    temperature: float = softmax_temperature(4.0)
    warmup_fraction: float = fields.number(20 / 240, 0, 1)
    logit_standardization: bool = fields.flag(False)


@dataclasses.dataclass(frozen=True)
class DISTParams:
    """hunto/image_classification_sota `configs/strategies/distill/dist_cifar.yaml` (kd: dist_t4,
    ori_loss_weight 1, kd_loss_weight 2) with DIST(beta=1, gamma=1, tau=4)."""
    ce_weight: float = loss_weight(1.0)
    kd_weight: float = loss_weight(2.0)
    inter_weight: float = loss_weight(1.0)
    intra_weight: float = loss_weight(1.0)
    temperature: float = softmax_temperature(4.0)
    logit_standardization: bool = fields.flag(False)


@dataclasses.dataclass(frozen=True)
class PKTParams:
    """RepDistiller `scripts/run_cifar_distill.sh` (-r 1 -a 0 -b 30000); mdistiller CFG.PKT."""
    ce_weight: float = loss_weight(1.0)
    weight: float = loss_weight(30000.0)


@dataclasses.dataclass(frozen=True)
class SPParams:
    """RepDistiller `scripts/run_cifar_distill.sh` (-r 1 -a 0 -b 3000); mdistiller CFG.SP."""
    ce_weight: float = loss_weight(1.0)
    weight: float = loss_weight(3000.0)


@dataclasses.dataclass(frozen=True)
class NSTParams:
    """RepDistiller `scripts/run_cifar_distill.sh` (-r 1 -a 0 -b 50); mdistiller CFG.NST."""
    ce_weight: float = loss_weight(1.0)
    weight: float = loss_weight(50.0)


@dataclasses.dataclass(frozen=True)
class CCParams:
    """RepDistiller `scripts/run_cifar_distill.sh` (-r 1 -a 0 -b 0.02, --feat_dim 128); the paper's
    Gaussian RBF kernel (gamma 0.4) by its order-2 Taylor expansion."""
    ce_weight: float = loss_weight(1.0)
    weight: float = loss_weight(0.02)
    embedding_dim: int = fields.integer(128, 1, 65536)
    kernel: str = fields.choice("taylor_rbf", "repdistiller")
    gamma: float = fields.number(0.4, 1e-12, MAX_LOSS_WEIGHT)
    taylor_order: int = fields.integer(2, 0, 20)


@dataclasses.dataclass(frozen=True)
class CRDParams:
    feat_dim: int = fields.integer(128, 1, 65536)
    num_negatives: int = fields.integer(16384, 1, 10_000_000)
    nce_temperature: float = fields.number(0.07, 1e-4, 1e3)
    momentum: float = fields.number(0.5, 0, 0.999999)
    weight: float = loss_weight(0.8)
    ce_weight: float = loss_weight(1.0)
    kd_weight: float = loss_weight(0.0)
    temperature: float = softmax_temperature(4.0)


@dataclasses.dataclass(frozen=True)
class VIDParams:
    weight: float = loss_weight(1.0)
    ce_weight: float = loss_weight(1.0)
    init_pred_var: float = fields.number(5.0, 1e-6, 1e6)
    eps: float = fields.number(1e-5, 1e-12, 1.0)


@dataclasses.dataclass(frozen=True)
class FTParams:
    init_epochs: int = stage_epochs(30)
    paraphraser_learning_rate: float = fields.number(0.01, 1e-8, 10)
    rate: float = fields.number(0.5, 1e-6, 1e3)
    weight: float = loss_weight(200.0)
    ce_weight: float = loss_weight(1.0)


@dataclasses.dataclass(frozen=True)
class ReviewKDParams:
    weight: float = loss_weight(1.0)
    ce_weight: float = loss_weight(1.0)
    warmup_epochs: float = fields.number(20.0, 0, 10_000)
    student_preact: bool = fields.flag(False)


@dataclasses.dataclass(frozen=True)
class KDEIDParams:
    teacher_k: int = vector_count(1)
    student_k: int = vector_count(4)
    weight: float = loss_weight(1.0)


@dataclasses.dataclass(frozen=True)
class MHGDParams:
    init_epochs: int = stage_epochs(40)
    num_heads: int = vector_count(8)
    teacher_k: int = vector_count(1)
    student_k: int = vector_count(4)
    weight: float = loss_weight(1.0)
    mha_weight_decay: float = loss_weight(5e-4)


# What a method's student trains on (MethodEntry.trains_on), read by run_fn (which records to
# load), the pipeline (which component feeds the Trainer) and the presets (their checks).
EXAMPLES = "examples"  # CifarExampleGen's training split: (images, labels) batches
# The same split, each batch also carrying its examples' `index` (passed to `loss_terms` as
# `index=`; `prepare` receives every training example's label): CRD's memory banks.
INDEXED_EXAMPLES = "indexed_examples"
# A second CifarExampleGen keeping `zero_shot.few_shot_fraction` of each class's training images.
FEW_SHOT_EXAMPLES = "few_shot_examples"
# The DataImpressions component's output: impressions synthesised from the teacher, no real images.
IMPRESSIONS = "impressions"
TRAINING_DATA = (EXAMPLES, INDEXED_EXAMPLES, FEW_SHOT_EXAMPLES, IMPRESSIONS)


@dataclasses.dataclass(frozen=True)
class MethodEntry:
    """A method: its name, implementing class, hyper-parameters, what its student trains on
    (TRAINING_DATA), and the taps whose spatial size (`same_spatial`) or channel count
    (`same_channels`) must agree between student and teacher because the method compares them
    without a connector (checked before anything runs)."""

    name: str
    implementation: str | type  # "package.module:Class", or the class itself
    params: type = NoParams
    trains_on: str = EXAMPLES
    same_spatial: tuple[str, ...] = ()
    same_channels: tuple[str, ...] = ()

    def __post_init__(self):
        if self.trains_on not in TRAINING_DATA:
            raise ValueError(f"method '{self.name}': trains_on must be one of {', '.join(TRAINING_DATA)}, "
                             f"got {self.trains_on!r}")


CATALOG: dict[str, MethodEntry] = {entry.name: entry for entry in (
    MethodEntry("soft_logits", "kd_trainer.methods.soft_logits:SoftLogits", SoftLogitsParams),
    # Soft-logits on a few real images: the few-shot comparison for zero-shot KD.
    MethodEntry("soft_logits_fewshot", "kd_trainer.methods.soft_logits:SoftLogits", SoftLogitsParams,
                trains_on=FEW_SHOT_EXAMPLES),
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
    MethodEntry("zero_shot", "kd_trainer.methods.zero_shot:ZeroShot", ZeroShotParams, trains_on=IMPRESSIONS),
    MethodEntry("dkd", "kd_trainer.methods.dkd:DKD", DKDParams),
    MethodEntry("dist", "kd_trainer.methods.dist:DIST", DISTParams),
    MethodEntry("pkt", "kd_trainer.methods.pkt:PKT", PKTParams),
    MethodEntry("sp", "kd_trainer.methods.sp:SimilarityPreserving", SPParams),
    MethodEntry("nst", "kd_trainer.methods.nst:NST", NSTParams),
    MethodEntry("cc", "kd_trainer.methods.cc:CorrelationCongruence", CCParams),
    MethodEntry("crd", "kd_trainer.methods.crd:CRD", CRDParams, trains_on=INDEXED_EXAMPLES),
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
    """Builds a Params dataclass from a mapping: unknown keys, wrong types and values outside a
    field's declared range or choices are errors naming `owner` and the parameter."""
    return fields.parse(params_class, values, lambda key: f"{owner}: parameter '{key}'", owner)


def model_problems(name: str, params: Any, student_model: str, teacher_model: str) -> list[str]:
    """Checks of a method's parameters against the networks (a Params class may define
    `model_problems(student stage channels, teacher stage channels)`, e.g. KD-SVD's k)."""
    check = getattr(params, "model_problems", None)
    if check is None:
        return []
    return check(*(tuple(model_specs.tap_shapes(model)[tap][-1] for tap in STAGE_TAPS)
                   for model in (student_model, teacher_model)))
