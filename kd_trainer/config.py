"""What one Trainer run does, as passed in the TFX Trainer's `custom_config`."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from kd_trainer import methods, model_specs

# Numeric precision and XLA of a Trainer's networks (kd_trainer/precision.py applies them; kept here,
# TensorFlow-free, for configuration checks). "auto": float32 and no XLA on CPU, mixed precision and
# XLA on GPUs.
AUTO = "auto"
FLOAT32, MIXED_BFLOAT16, MIXED_FLOAT16 = "float32", "mixed_bfloat16", "mixed_float16"
PRECISIONS = (AUTO, FLOAT32, MIXED_BFLOAT16, MIXED_FLOAT16)
JIT_CHOICES = (AUTO, "on", "off")

ROLES = ("teacher", "baseline", "student")
# Bounds that catch typos (epochs=10**9) before any component runs; far above any real use.
MAX_EPOCHS = 1000  # the seed protocol: 100 (+40 init)
MAX_BATCH_SIZE = 50_000  # CIFAR-100's training split
MAX_SEED = 2**31 - 1  # NumPy, Python and TF all accept it
MAX_TRIALS = 100


def int_problem(name: str, value: Any, low: int, high: int) -> str | None:
    """A message if `value` is not an integer in [low, high] (bools are not integers)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return f"{name} must be an integer in [{low}, {high}], got {value!r}"
    return None


def number_problem(name: str, value: Any, low: float, high: float, low_open: bool = False,
                   high_open: bool = False) -> str | None:
    """A message if `value` is not a finite number in the interval (open ends as flagged)."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value < low or value > high or (low_open and value == low) or (high_open and value == high)):
        return f"{name} must be a finite number in {interval}, got {value!r}"
    return None


def collect(*problems: str | None) -> list[str]:
    return [p for p in problems if p]


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Optimisation of one network (the seed's protocol by default).

    The learning rate is multiplied by `lr_decay_factor` after each fraction of `epochs`
    in `lr_decay_at` (seed: 30/60/80%). `weight_decay_scope` says which trainable variables
    weight decay reaches (model_specs.WEIGHT_DECAY_SCOPES; seed: `all`). `one_crop_per_batch`
    and `reset_momentum_between_stages=False` reproduce seed bugs (one random crop offset for
    the whole batch; momentum carried over from the initialisation stage; docs/fidelity.md).
    """

    model: str
    epochs: int
    batch_size: int = 128
    eval_batch_size: int = 500
    learning_rate: float = 0.1
    lr_decay_at: tuple[float, ...] = (0.3, 0.6, 0.8)
    lr_decay_factor: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True  # the seed's; RepDistiller (the CRD protocol) uses plain momentum
    weight_decay: float = 5e-4
    weight_decay_scope: str = "all"
    one_crop_per_batch: bool = False
    reset_momentum_between_stages: bool = True
    mixed_precision: str = AUTO  # kd_trainer/precision.py
    jit_compile: str = AUTO

    def __post_init__(self):
        problems = self.problems()
        if problems:
            raise ValueError(f"invalid {type(self).__name__}: " + "; ".join(problems))

    def problems(self) -> list[str]:
        problems = []
        if not isinstance(self.model, str) or self.model not in model_specs.MODEL_SPECS:
            problems.append(f"unknown model {self.model!r}; valid: {', '.join(sorted(model_specs.MODEL_SPECS))}")
        problems += collect(
            int_problem("epochs", self.epochs, 1, MAX_EPOCHS),
            int_problem("batch_size", self.batch_size, 1, MAX_BATCH_SIZE),
            int_problem("eval_batch_size", self.eval_batch_size, 1, MAX_BATCH_SIZE),
            number_problem("learning_rate", self.learning_rate, 0, 10, low_open=True),
            number_problem("momentum", self.momentum, 0, 1, high_open=True),
            number_problem("weight_decay", self.weight_decay, 0, 1, high_open=True),
            number_problem("lr_decay_factor", self.lr_decay_factor, 0, 1, low_open=True),
        )
        decay_at = self.lr_decay_at
        expected = "lr_decay_at must be increasing fractions of the epochs in (0, 1), e.g. 0.5,0.75"
        if not isinstance(decay_at, (tuple, list)) or any(
                number_problem("", f, 0, 1, low_open=True, high_open=True) for f in decay_at):
            problems.append(f"{expected}; got {decay_at!r}")
        elif any(later <= earlier for earlier, later in zip(decay_at, decay_at[1:])):
            problems.append(f"{expected}; got {list(decay_at)} (not increasing)")
        if self.weight_decay_scope not in model_specs.WEIGHT_DECAY_SCOPES:
            problems.append(f"unknown weight_decay_scope {self.weight_decay_scope!r}; "
                            f"valid: {', '.join(model_specs.WEIGHT_DECAY_SCOPES)}")
        if self.mixed_precision not in PRECISIONS:
            problems.append(f"mixed_precision must be one of {list(PRECISIONS)}, got {self.mixed_precision!r}")
        if self.jit_compile not in JIT_CHOICES:
            problems.append(f"jit_compile must be one of {list(JIT_CHOICES)}, got {self.jit_compile!r}")
        return problems

    def decay_epochs(self) -> list[int]:
        """Epochs after which the learning rate drops (distinct, at least 1)."""
        return sorted({max(1, round(f * self.epochs)) for f in self.lr_decay_at})


@dataclasses.dataclass(frozen=True)
class TrainerConfig(TrainingConfig):
    """One Trainer run: its network's training plus its role in the benchmark.

    role: `teacher` and `baseline` train on CE alone; `student` trains with `method`
    against the teacher given as the Trainer's base_model.
    """

    role: str = ""
    method: str = ""
    method_params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    teacher_model: str = ""  # the teacher's architecture (DML trains a peer of it)
    # How the images are standardised for the networks (model_specs.INPUT_NORMALIZATIONS); a
    # student's must be its teacher's, which sees the same normalized batch.
    input_normalization: str = model_specs.DEFAULT_INPUT_NORMALIZATION
    seed: int = 0
    trial: int = 1
    # Of the code this Trainer runs (pipelines/revision.py): part of its cache key. The git
    # revision is not (run_fn records it in trainer_config.json).
    code_fingerprint: str = ""

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.role not in ROLES:
            problems.append(f"role must be one of {ROLES}, got {self.role!r}")
        if self.role == "student" and not self.method:
            problems.append("role 'student' needs a method")
        if self.role != "student" and self.method:
            problems.append(f"role '{self.role}' trains without distillation; method must be empty")
        if self.teacher_model and self.teacher_model not in model_specs.MODEL_SPECS:
            problems.append(f"unknown teacher_model {self.teacher_model!r}")
        if self.input_normalization not in model_specs.INPUT_NORMALIZATIONS:
            problems.append(f"unknown input_normalization {self.input_normalization!r}; "
                            f"valid: {', '.join(model_specs.INPUT_NORMALIZATIONS)}")
        if self.method and self.method not in methods.CATALOG:
            problems.append(f"unknown method {self.method!r}; valid: {', '.join(sorted(methods.CATALOG))}")
        problems += collect(int_problem("trial", self.trial, 1, MAX_TRIALS),
                            int_problem("seed", self.seed, 0, MAX_SEED))
        if not isinstance(self.code_fingerprint, str):
            problems.append(f"code_fingerprint must be a string, got {self.code_fingerprint!r}")
        if self.method in methods.CATALOG:
            try:
                params = methods.catalog.check_params(self.method, self.method_params)
            except ValueError as error:
                problems.append(str(error))
            else:
                teacher = self.teacher_model or self.model
                if self.model in model_specs.MODEL_SPECS and teacher in model_specs.MODEL_SPECS:
                    problems += methods.catalog.model_problems(self.method, params, self.model, teacher)
        return problems

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"invalid trainer config: unknown key(s) {unknown}; valid: {sorted(known)}")
        values = dict(values)
        if isinstance(values.get("lr_decay_at"), list):  # JSON has no tuples
            values["lr_decay_at"] = tuple(values["lr_decay_at"])
        if "model" not in values or "epochs" not in values:
            raise ValueError("invalid trainer config: 'model' and 'epochs' are required")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["lr_decay_at"] = list(self.lr_decay_at)
        values["method_params"] = dict(self.method_params)
        return values


@dataclasses.dataclass(frozen=True)
class ImpressionOptions:
    """How many impressions to synthesise and how (defaults: the paper's, except the count).

    The paper generated 40,000 impressions for CIFAR-10 (80% of its training set); 20,000 is
    40% of CIFAR-100's, the largest "rate" of the seed author's comparison.
    """

    num_impressions: int = 20_000
    iterations: int = 1500
    learning_rate: float = 0.001
    batch_size: int = 128
    temperature: float = 20.0
    betas: tuple[float, ...] = (1.0, 0.1)
    image_l2: float = 0.0

    def __post_init__(self):
        problems = self.problems()
        if problems:
            raise ValueError(f"invalid {type(self).__name__}: " + "; ".join(problems))

    def problems(self) -> list[str]:
        problems = collect(
            int_problem("num_impressions", self.num_impressions, 1, 1_000_000),
            int_problem("iterations", self.iterations, 1, 100_000),
            int_problem("batch_size", self.batch_size, 1, MAX_BATCH_SIZE),
            number_problem("learning_rate", self.learning_rate, 0, 10, low_open=True),
            number_problem("temperature", self.temperature, 0.01, 1000),
            number_problem("image_l2", self.image_l2, 0, 1e6),
        )
        if (not isinstance(self.betas, (tuple, list)) or not self.betas
                or any(number_problem("", b, 0, 1000, low_open=True) for b in self.betas)):
            problems.append(f"betas must be a non-empty list of concentration scales in (0, 1000], "
                            f"got {self.betas!r}")
        return problems
