"""What one Trainer run does, as passed in the TFX Trainer's `custom_config`."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from kd_trainer import fields, methods, model_specs

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


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Optimisation of one network (the seed's protocol by default).

    The learning rate is multiplied by `lr_decay_factor` after each fraction of `epochs`
    in `lr_decay_at` (seed: 30/60/80%). `weight_decay_scope` says which trainable variables
    weight decay reaches (model_specs.WEIGHT_DECAY_SCOPES; seed: `all`). `one_crop_per_batch`
    and `reset_momentum_between_stages=False` reproduce seed bugs (one random crop offset for
    the whole batch; momentum carried over from the initialisation stage; docs/fidelity.md).
    """

    model: str = fields.free(str)  # a name in model_specs.MODEL_SPECS
    epochs: int = fields.integer(dataclasses.MISSING, 1, MAX_EPOCHS)
    batch_size: int = fields.integer(128, 1, MAX_BATCH_SIZE)
    eval_batch_size: int = fields.integer(500, 1, MAX_BATCH_SIZE)
    learning_rate: float = fields.number(0.1, 0, 10, low_open=True)
    lr_decay_at: tuple[float, ...] = fields.free((tuple, list), (0.3, 0.6, 0.8))  # increasing, in (0, 1)
    lr_decay_factor: float = fields.number(0.1, 0, 1, low_open=True)
    momentum: float = fields.number(0.9, 0, 1, high_open=True)
    nesterov: bool = fields.flag(True)  # the seed's; RepDistiller (the CRD protocol) uses plain momentum
    weight_decay: float = fields.number(5e-4, 0, 1, high_open=True)
    weight_decay_scope: str = fields.one_of(model_specs.WEIGHT_DECAY_SCOPES, "all")
    one_crop_per_batch: bool = fields.flag(False)
    reset_momentum_between_stages: bool = fields.flag(True)
    mixed_precision: str = fields.one_of(PRECISIONS, AUTO)  # kd_trainer/precision.py
    jit_compile: str = fields.one_of(JIT_CHOICES, AUTO)

    def __post_init__(self):
        problems = self.problems()
        if problems:
            raise ValueError(f"invalid {type(self).__name__}: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """Each field against its declared rule, then what a rule cannot say (names in registries,
        an increasing list)."""
        problems = fields.problems(self)
        if not isinstance(self.model, str) or self.model not in model_specs.MODEL_SPECS:
            problems.append(f"unknown model {self.model!r}; valid: {', '.join(sorted(model_specs.MODEL_SPECS))}")
        decay_at = self.lr_decay_at
        expected = "lr_decay_at must be increasing fractions of the epochs in (0, 1), e.g. 0.5,0.75"
        fraction = fields.Range(float, 0, 1, low_open=True, high_open=True)
        if not isinstance(decay_at, (tuple, list)):
            pass  # its field's rule says so
        elif any(fraction.problem(f) for f in decay_at):
            problems.append(f"{expected}; got {decay_at!r}")
        elif any(later <= earlier for earlier, later in zip(decay_at, decay_at[1:])):
            problems.append(f"{expected}; got {list(decay_at)} (not increasing)")
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

    role: str = fields.one_of(ROLES, "")
    method: str = fields.free(str, "")  # a name in the method catalog
    method_params: Mapping[str, Any] = fields.free(dict, default_factory=dict)  # the method's Params
    teacher_model: str = fields.free(str, "")  # the teacher's architecture (DML trains a peer of it)
    # How the images are standardised for the networks (model_specs.INPUT_NORMALIZATIONS); a
    # student's must be its teacher's, which sees the same normalized batch.
    input_normalization: str = fields.one_of(tuple(model_specs.INPUT_NORMALIZATIONS),
                                             model_specs.DEFAULT_INPUT_NORMALIZATION)
    seed: int = fields.integer(0, 0, MAX_SEED)
    trial: int = fields.integer(1, 1, MAX_TRIALS)
    # Of the code this Trainer runs (pipelines/revision.py): part of its cache key. The git
    # revision is not (run_fn records it in trainer_config.json).
    code_fingerprint: str = fields.text()

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.role == "student" and not self.method:
            problems.append("role 'student' needs a method")
        if self.role != "student" and self.method:
            problems.append(f"role '{self.role}' trains without distillation; method must be empty")
        if self.teacher_model and self.teacher_model not in model_specs.MODEL_SPECS:
            problems.append(f"unknown teacher_model {self.teacher_model!r}")
        if self.method and self.method not in methods.CATALOG:
            problems.append(f"unknown method {self.method!r}; valid: {', '.join(sorted(methods.CATALOG))}")
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

    num_impressions: int = fields.integer(20_000, 1, 1_000_000)
    iterations: int = fields.integer(1500, 1, 100_000)
    learning_rate: float = fields.number(0.001, 0, 10, low_open=True)
    batch_size: int = fields.integer(128, 1, MAX_BATCH_SIZE)
    temperature: float = fields.number(20.0, 0.01, 1000)
    betas: tuple[float, ...] = fields.free((tuple, list), (1.0, 0.1))  # each in (0, 1000]
    image_l2: float = fields.number(0.0, 0, 1e6)

    def __post_init__(self):
        problems = self.problems()
        if problems:
            raise ValueError(f"invalid {type(self).__name__}: " + "; ".join(problems))

    def problems(self) -> list[str]:
        problems = fields.problems(self)
        scale = fields.Range(float, 0, 1000, low_open=True)
        if isinstance(self.betas, (tuple, list)) and (not self.betas or any(scale.problem(b) for b in self.betas)):
            problems.append(f"betas must be a non-empty list of concentration scales in (0, 1000], "
                            f"got {self.betas!r}")
        return problems
