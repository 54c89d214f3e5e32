"""What one Trainer run does, as passed in the TFX Trainer's `custom_config`."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from kd_trainer import methods, models, precision

ROLES = ("teacher", "baseline", "student")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Optimisation of one network (the seed's protocol by default).

    The learning rate is multiplied by `lr_decay_factor` after each fraction of `epochs`
    in `lr_decay_at` (seed: 30/60/80%).
    """

    model: str
    epochs: int
    batch_size: int = 128
    eval_batch_size: int = 500
    learning_rate: float = 0.1
    lr_decay_at: tuple[float, ...] = (0.3, 0.6, 0.8)
    lr_decay_factor: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    # "auto": float32 and no XLA on CPU, mixed precision and XLA on GPUs (kd_trainer/precision.py).
    mixed_precision: str = precision.AUTO
    jit_compile: str = precision.AUTO

    def __post_init__(self):
        problems = self.problems()
        if problems:
            raise ValueError(f"invalid {type(self).__name__}: " + "; ".join(problems))

    def problems(self) -> list[str]:
        problems = []
        if self.model not in models.MODEL_SPECS:
            problems.append(f"unknown model {self.model!r}; valid: {', '.join(sorted(models.MODEL_SPECS))}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                problems.append(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not 0 < self.learning_rate <= 10:
            problems.append(f"learning_rate must be in (0, 10], got {self.learning_rate}")
        if not 0 <= self.momentum < 1:
            problems.append(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 <= self.weight_decay < 1:
            problems.append(f"weight_decay must be in [0, 1), got {self.weight_decay}")
        if not 0 < self.lr_decay_factor <= 1:
            problems.append(f"lr_decay_factor must be in (0, 1], got {self.lr_decay_factor}")
        if self.mixed_precision not in precision.PRECISIONS:
            problems.append(f"mixed_precision must be one of {list(precision.PRECISIONS)}, got {self.mixed_precision!r}")
        if self.jit_compile not in precision.JIT_CHOICES:
            problems.append(f"jit_compile must be one of {list(precision.JIT_CHOICES)}, got {self.jit_compile!r}")
        if list(self.lr_decay_at) != sorted(self.lr_decay_at) or not all(0 < f < 1 for f in self.lr_decay_at):
            problems.append(f"lr_decay_at must be increasing fractions in (0, 1), got {list(self.lr_decay_at)}")
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
        if self.teacher_model and self.teacher_model not in models.MODEL_SPECS:
            problems.append(f"unknown teacher_model {self.teacher_model!r}")
        if self.method and self.method not in methods.REGISTRY:
            problems.append(f"unknown method {self.method!r}; valid: {', '.join(sorted(methods.REGISTRY))}")
        if not isinstance(self.trial, int) or self.trial < 1:
            problems.append(f"trial must be an integer >= 1, got {self.trial!r}")
        return problems

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"invalid trainer config: unknown key(s) {unknown}; valid: {sorted(known)}")
        values = dict(values)
        if "lr_decay_at" in values:
            values["lr_decay_at"] = tuple(values["lr_decay_at"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["lr_decay_at"] = list(self.lr_decay_at)
        values["method_params"] = dict(self.method_params)
        return values
