"""Presets: named, validated, overridable descriptions of a whole benchmark run.

A preset is plain data (frozen dataclasses). `resolve("quick", ["student.epochs=8"])`
applies `key=value` overrides (dotted paths, values parsed as JSON where they parse,
e.g. `methods=["soft_logits"]`, `data.train_per_class=null`) and validates the result
before any component runs: unknown presets, keys, models or methods, and out-of-range
values all fail with one message listing what is valid.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

from kd_trainer import methods
from kd_trainer.config import TrainerConfig, TrainingConfig


class PresetError(ValueError):
    """A preset name, override or value is invalid (raised before anything runs)."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where CIFAR-100 comes from and how much of it a run uses."""

    data_dir: str = ""  # empty: $KD_CIFAR100_DIR, then a download to ~/.cache
    allow_download: bool = True
    train_per_class: int | None = None  # None: all 500 training images per class
    eval_per_class: int | None = None  # None: all 100 test images per class
    require_official_sizes: bool = True
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Preset:
    """A benchmark run: data, teacher and student training, methods, trials, blessing."""

    name: str
    description: str
    data: DataConfig
    teacher: TrainingConfig
    student: TrainingConfig  # used by the baseline student and every distilled student
    methods: tuple[str, ...] = ("soft_logits",)
    method_params: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    trials: int = 1
    seed: int = 0
    # A student is blessed when its accuracy is at least the baseline's minus this margin.
    blessing_margin: float = 0.0

    def __post_init__(self):
        validate(self)

    def trainer_config(self, role: str, trial: int = 1, method: str = "", code_revision: str = "unknown") -> TrainerConfig:
        """The TrainerConfig of one Trainer of this preset (trials get consecutive seeds)."""
        training = self.teacher if role == "teacher" else self.student
        return TrainerConfig(role=role, method=method, method_params=self.method_params.get(method, {}),
                             teacher_model=self.teacher.model if role == "student" else "",
                             seed=self.seed + trial - 1, trial=trial, code_revision=code_revision,
                             **dataclasses.asdict(training))


def validate(preset: Preset) -> None:
    problems = []
    unknown_methods = [m for m in preset.methods if m not in methods.REGISTRY]
    if unknown_methods:
        problems.append(f"unknown method(s) {unknown_methods}; valid: {', '.join(sorted(methods.REGISTRY))}")
    if not preset.methods:
        problems.append("methods must name at least one distillation method")
    if len(set(preset.methods)) != len(preset.methods):
        problems.append(f"methods has duplicates: {list(preset.methods)}")
    # Parameters of known methods that a run does not select are kept and ignored, so
    # `--set methods=...` can narrow a preset; unknown names are errors.
    stray = sorted(set(preset.method_params) - set(methods.REGISTRY))
    if stray:
        problems.append(f"method_params for unknown method(s) {stray}; valid: {', '.join(sorted(methods.REGISTRY))}")
    if not isinstance(preset.trials, int) or not 1 <= preset.trials <= 100:
        problems.append(f"trials must be an integer in [1, 100], got {preset.trials!r}")
    if not 0 <= preset.blessing_margin < 1:
        problems.append(f"blessing_margin must be in [0, 1) (accuracy, absolute), got {preset.blessing_margin}")
    data = preset.data
    for key in ("train_per_class", "eval_per_class"):
        value = getattr(data, key)
        limit = 500 if key == "train_per_class" else 100
        if value is not None and (not isinstance(value, int) or not 1 <= value <= limit):
            problems.append(f"data.{key} must be null or an integer in [1, {limit}], got {value!r}")
    if problems:
        raise PresetError(f"invalid preset '{preset.name}': " + "; ".join(problems))
    # Trainer-level checks (epochs, learning rate, ...) and method parameter names/types.
    try:
        preset.trainer_config("teacher")
        preset.trainer_config("baseline")
        for method in set(preset.methods) | set(preset.method_params):
            methods.create(method, preset.method_params.get(method, {}))
    except ValueError as error:
        raise PresetError(f"invalid preset '{preset.name}': {error}") from None


# The seed project's methods, in the order of its results table.
SEED_METHODS = ("soft_logits", "fitnet", "at", "fsp", "dml", "kd_svd", "ab", "rkd", "jacobian")
# Short budgets scale the seed's 40-epoch initialisation stage down to one epoch.
ONE_EPOCH_INIT = {name: {"init_epochs": 1} for name in ("fitnet", "fsp", "ab")}

PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            name="smoke",
            description="A few hundred images, 1 epoch, tiny nets: the whole pipeline in minutes (tests).",
            data=DataConfig(train_per_class=3, eval_per_class=1),
            teacher=TrainingConfig(model="resnet14", epochs=1, batch_size=64),
            student=TrainingConfig(model="resnet8", epochs=1, batch_size=64),
            methods=SEED_METHODS,
            method_params=ONE_EPOCH_INIT,
        ),
        Preset(
            name="quick",
            description=("Real CIFAR-100 on 2 CPU cores: standard resnet32 -> resnet8, 250 training images "
                         "per class, the full test set, a short step schedule (lr x0.1 at 50% and 75%)."),
            data=DataConfig(train_per_class=250),
            teacher=TrainingConfig(model="resnet32", epochs=10, lr_decay_at=(0.5, 0.75)),
            student=TrainingConfig(model="resnet8", epochs=4, lr_decay_at=(0.5, 0.75)),
            methods=SEED_METHODS,
            method_params=ONE_EPOCH_INIT,
        ),
        Preset(
            name="seed",
            description="The seed project's protocol: wide ResNet32 -> ResNet8, 100 epochs, 5 trials (GPU).",
            data=DataConfig(),
            teacher=TrainingConfig(model="seed_resnet32", epochs=100),
            student=TrainingConfig(model="seed_resnet8", epochs=100),
            methods=SEED_METHODS,
            trials=5,
        ),
    )
}


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Checks/converts a JSON value to a dataclass field's annotated type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), key)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise PresetError(f"override '{key}': expected a list, got {value!r}")
        return tuple(_coerce(v, args[0], key) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise PresetError(f"override '{key}': expected an object, got {value!r}")
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is bool and not isinstance(value, bool):
        raise PresetError(f"override '{key}': expected true or false, got {value!r}")
    if annotation is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise PresetError(f"override '{key}': expected an integer, got {value!r}")
    if not isinstance(value, annotation):
        raise PresetError(f"override '{key}': expected {annotation.__name__}, got {value!r}")
    return value


def _override(obj: Any, path: list[str], value: Any, key: str) -> Any:
    hints = typing.get_type_hints(type(obj))
    field = path[0]
    if field not in hints or field == "name":
        valid = sorted(f for f in hints if f != "name")
        raise PresetError(f"unknown key '{key}' (no field '{field}' in {type(obj).__name__}); valid: {valid}")
    if len(path) == 1:
        return dataclasses.replace(obj, **{field: _coerce(value, hints[field], key)})
    current = getattr(obj, field)
    if isinstance(current, dict):
        updated = {**current, path[1]: _override_dict(current.get(path[1], {}), path[2:], value, key)}
        return dataclasses.replace(obj, **{field: updated})
    if not dataclasses.is_dataclass(current):
        raise PresetError(f"unknown key '{key}': '{field}' has no sub-keys")
    return dataclasses.replace(obj, **{field: _override(current, path[1:], value, key)})


def _override_dict(current: Any, path: list[str], value: Any, key: str) -> Any:
    if not path:
        return value
    if not isinstance(current, dict):
        raise PresetError(f"override '{key}': cannot set a sub-key of {current!r}")
    return {**current, path[0]: _override_dict(current.get(path[0], {}), path[1:], value, key)}


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise PresetError(f"override {text!r} must look like key=value (e.g. student.epochs=8)")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def resolve(name: str, overrides: list[str] | tuple[str, ...] = ()) -> Preset:
    """The named preset with `key=value` overrides applied and validated."""
    if name not in PRESETS:
        raise PresetError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    preset = PRESETS[name]
    for text in overrides:
        key, value = parse_override(text)
        try:
            preset = _override(preset, key.split("."), value, key)
        except PresetError:
            raise
        except ValueError as error:  # a nested config rejected the value
            raise PresetError(f"invalid preset '{name}': override '{key}': {error}") from None
    return preset


def to_dict(preset: Preset) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(preset)))
