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
import typing
from typing import Any

from kd_trainer import fields, methods
from kd_trainer.config import MAX_SEED, MAX_TRIALS, ImpressionOptions, TrainerConfig, TrainingConfig
from kd_trainer.methods.catalog import FEW_SHOT_EXAMPLES, IMPRESSIONS
from kd_trainer.model_specs import (DEFAULT_INPUT_NORMALIZATION, INPUT_NORMALIZATIONS, MOBILE_MODELS, MODEL_SPECS,
                                    NUM_CLASSES, tap_shapes)


class PresetError(ValueError):
    """A preset name, override or value is invalid (raised before anything runs)."""


TRAIN_IMAGES_PER_CLASS = 500  # CIFAR-100's official training split
TEST_IMAGES_PER_CLASS = 100
PROTOCOLS = ("", "seed", "crd")  # published protocols (kd_results/published/)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where CIFAR-100 comes from and how much of it a run uses."""

    data_dir: str = fields.text()  # empty: $KD_CIFAR100_DIR, then a download to ~/.cache
    allow_download: bool = fields.flag(True)
    # None: all 500 training / 100 test images per class
    train_per_class: int | None = fields.integer(None, 1, TRAIN_IMAGES_PER_CLASS, optional=True)
    eval_per_class: int | None = fields.integer(None, 1, TEST_IMAGES_PER_CLASS, optional=True)
    require_official_sizes: bool = fields.flag(True)
    seed: int = fields.integer(0, 0, MAX_SEED)
    # How every network of the run sees an image (model_specs.INPUT_NORMALIZATIONS): "seed_bgr"
    # runs the seed's BGR-statistics bug (docs/fidelity.md).
    normalization: str = fields.one_of(tuple(INPUT_NORMALIZATIONS), DEFAULT_INPUT_NORMALIZATION)


MAX_GPUS_PER_TRAINER = 16


@dataclasses.dataclass(frozen=True)
class ResourcesConfig:
    """What each Trainer asks a cluster for on Kubeflow Pipelines or Vertex AI (pipelines/kubeflow_runner.py).

    Local runs ignore it. 0 GPUs means CPU only; 0 CPU / memory means the cluster's default.
    `accelerator_type` is what the GPUs are requested as: the Kubernetes resource
    `nvidia.com/gpu` on Kubeflow Pipelines (pick the GPU model with `node_selector`, e.g.
    {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"} on GKE), a type such as
    `NVIDIA_TESLA_T4` on Vertex AI (which has no node selectors: leave it empty there).
    """

    teacher_gpus: int = fields.integer(0, 0, MAX_GPUS_PER_TRAINER)
    student_gpus: int = fields.integer(0, 0, MAX_GPUS_PER_TRAINER)  # the baseline and every distilled student
    accelerator_type: str = fields.text("nvidia.com/gpu")
    node_selector: dict[str, str] = fields.free(dict, default_factory=dict)  # label name -> value
    cpu_limit: float = fields.number(0.0, 0, 1024)  # cores
    memory_limit_gb: float = fields.number(0.0, 0, 65536)
    # The Beam components' pods (ExampleGen, Evaluators, DataImpressions): CPU / memory
    # requests (and limits); Beam's DirectRunner starts one worker per requested core.
    # DataImpressions also gets teacher_gpus GPUs. 0: the cluster's default, and one worker.
    beam_cpu: float = fields.number(2.0, 0, 1024)
    beam_memory_gb: float = fields.number(8.0, 0, 65536)

    def __post_init__(self):
        problems = fields.problems(self)
        if (self.teacher_gpus or self.student_gpus) and not self.accelerator_type:
            problems.append("accelerator_type must be set when a Trainer requests GPUs (e.g. nvidia.com/gpu)")
        if not isinstance(self.node_selector, dict) or not all(
                isinstance(k, str) and k and isinstance(v, str) for k, v in self.node_selector.items()):
            problems.append(f"node_selector must map label names to string values, got {self.node_selector!r}")
        if problems:
            raise ValueError(f"invalid {type(self).__name__}: " + "; ".join(problems))


@dataclasses.dataclass(frozen=True)
class TeacherConfig(TrainingConfig):
    """The teacher's training, or (`import_from`) a teacher trained before: the Model artifact
    folder of an earlier run, or its `Format-Serving` SavedModel, local or on object storage
    (gs://, s3://). An imported teacher replaces Trainer.teacher; `model` must name its architecture."""

    import_from: str = fields.text()


@dataclasses.dataclass(frozen=True)
class ZeroShotConfig(ImpressionOptions):
    """Zero-shot KD (methods `zero_shot` and `soft_logits_fewshot`): the DataImpressions
    options (kd_trainer/impressions.py; defaults: the paper's) and the real-data budget of
    the few-shot comparison student."""

    # Fraction of each class's training images (data.train_per_class, else all 500) that the
    # `soft_logits_fewshot` student trains on (the seed author compared 1% to 40%).
    few_shot_fraction: float = fields.number(0.4, 0, 1, low_open=True)


@dataclasses.dataclass(frozen=True)
class Preset:
    """A benchmark run: data, teacher and student training, methods, trials, blessing."""

    name: str = fields.free(str)
    description: str = fields.free(str)
    data: DataConfig = fields.free(DataConfig)
    teacher: TeacherConfig = fields.free(TeacherConfig)
    student: TrainingConfig = fields.free(TrainingConfig)  # the baseline student's and every distilled student's
    methods: tuple[str, ...] = fields.free(tuple, ("soft_logits",))  # names in the method catalog
    # Methods the preset's protocol also covers that it does not run unless asked
    # (`--set methods=...`), e.g. the seed author's later methods in `seed`.
    optional_methods: tuple[str, ...] = fields.free(tuple, ())
    method_params: dict[str, dict[str, Any]] = fields.free(dict, default_factory=dict)  # method -> its Params
    trials: int = fields.integer(1, 1, MAX_TRIALS)
    seed: int = fields.integer(0, 0, MAX_SEED - MAX_TRIALS)  # trial k trains with seed + k - 1
    # A student is blessed when its accuracy is at least the baseline's minus this margin.
    blessing_margin: float = fields.number(0.0, 0, 1, high_open=True)
    zero_shot: ZeroShotConfig = fields.free(ZeroShotConfig, default_factory=ZeroShotConfig)
    resources: ResourcesConfig = fields.free(ResourcesConfig, default_factory=ResourcesConfig)
    # The published protocol this preset follows (`seed`, `crd`): the report puts the figures
    # published for it (kd_results/published/) beside ours. Empty: none.
    protocol: str = fields.one_of(PROTOCOLS, "")
    # RepDistiller trains MobileNet/ShuffleNet students at lr 0.01 instead of 0.05 (train_student.py);
    # when set, the baseline and the students use it if student.model is one of model_specs.MOBILE_MODELS.
    mobile_student_learning_rate: float | None = fields.number(None, 0, 10, low_open=True, optional=True)

    def __post_init__(self):
        validate(self)

    def student_training(self) -> TrainingConfig:
        """The student's (and baseline's) training, with the mobile learning rate where it applies."""
        if self.mobile_student_learning_rate is not None and self.student.model in MOBILE_MODELS:
            return dataclasses.replace(self.student, learning_rate=self.mobile_student_learning_rate)
        return self.student

    def trainer_config(self, role: str, trial: int = 1, method: str = "") -> TrainerConfig:
        """The TrainerConfig of one Trainer of this preset (trials get consecutive seeds)."""
        training = self.teacher if role == "teacher" else self.student_training()
        return TrainerConfig(role=role, method=method, method_params=self.method_params.get(method, {}),
                             teacher_model=self.teacher.model if role == "student" else "",
                             input_normalization=self.data.normalization,
                             seed=self.seed + trial - 1, trial=trial,
                             **{f.name: getattr(training, f.name) for f in dataclasses.fields(TrainingConfig)})

    def few_shot_per_class(self) -> int:
        """Real training images per class of the `soft_logits_fewshot` student."""
        return round(self.zero_shot.few_shot_fraction * (self.data.train_per_class or TRAIN_IMAGES_PER_CLASS))


def _cross_field_problems(preset: Preset) -> list[str]:
    """Checks that involve several fields, run by `resolve` once every override is applied (so
    their order does not matter): batch sizes against the training split, method parameters
    against the networks, and the training-set sizes of the zero-shot and few-shot students
    (they train on full batches)."""
    problems = []
    train_images = (preset.data.train_per_class or TRAIN_IMAGES_PER_CLASS) * NUM_CLASSES
    for role in ("teacher", "student"):
        batch = getattr(preset, role).batch_size
        if batch > train_images:
            problems.append(f"{role}.batch_size ({batch}) must not exceed the training split "
                            f"({train_images} images: data.train_per_class x {NUM_CLASSES})")
    for method in preset.methods:
        try:
            preset.trainer_config("student", method=method)
        except ValueError as error:
            problems.append(str(error))
    batch = preset.student.batch_size
    for method in methods_training_on(preset, IMPRESSIONS):
        if preset.zero_shot.num_impressions < batch:
            problems.append(f"zero_shot.num_impressions ({preset.zero_shot.num_impressions}) must be at least "
                            f"student.batch_size ({batch}): the {method} student trains on full batches of "
                            "impressions")
    for method in methods_training_on(preset, FEW_SHOT_EXAMPLES):
        if preset.few_shot_per_class() * NUM_CLASSES < batch:
            problems.append(f"zero_shot.few_shot_fraction ({preset.zero_shot.few_shot_fraction}) keeps "
                            f"{preset.few_shot_per_class()} training image(s) per class for the {method} student, "
                            f"fewer in all than student.batch_size ({batch})")
    return problems


def methods_training_on(preset: Preset, training_data: str) -> list[str]:
    """The preset's methods whose students train on `training_data` (catalog.TRAINING_DATA)."""
    return [method for method in preset.methods
            if method in methods.CATALOG and methods.catalog.entry(method).trains_on == training_data]


def _pair_problems(preset: Preset) -> list[str]:
    """Methods that cannot compare this student's taps with this teacher's (unknown models and
    methods are reported elsewhere)."""
    models = (preset.student.model, preset.teacher.model)
    if not all(model in MODEL_SPECS for model in models):
        return []
    student, teacher = (tap_shapes(model) for model in models)
    problems = [problem for method in preset.methods if method in methods.CATALOG
                for problem in methods.catalog.pair_problems(method, student, teacher)]
    if problems:
        problems.append(f"(student {models[0]}, teacher {models[1]}: choose another pair, or drop these methods "
                        f"with --set methods=[...])")
    return problems


def validate(preset: Preset) -> None:
    problems = []
    unknown_methods = [m for m in (*preset.methods, *preset.optional_methods) if m not in methods.CATALOG]
    if unknown_methods:
        problems.append(f"unknown method(s) {unknown_methods}; valid: {', '.join(sorted(methods.CATALOG))}")
    if not preset.methods:
        problems.append("methods must name at least one distillation method")
    if len(set(preset.methods)) != len(preset.methods):
        problems.append(f"methods has duplicates: {list(preset.methods)}")
    # Parameters of known methods that a run does not select are kept and ignored, so
    # `--set methods=...` can narrow a preset; unknown names are errors.
    stray = sorted(set(preset.method_params) - set(methods.CATALOG))
    if stray:
        problems.append(f"method_params for unknown method(s) {stray}; valid: {', '.join(sorted(methods.CATALOG))}")
    problems += fields.problems(preset) + fields.problems(preset.data, lambda name: f"data.{name}")
    if problems:
        raise PresetError(f"invalid preset '{preset.name}': " + "; ".join(problems))
    # Trainer-level checks (epochs, learning rate, ...) and method parameter names/types.
    try:
        preset.trainer_config("teacher")
        preset.trainer_config("baseline")
        for method in set(preset.methods) | set(preset.method_params):
            methods.catalog.check_params(method, preset.method_params.get(method, {}))
    except ValueError as error:
        raise PresetError(f"invalid preset '{preset.name}': {error}") from None


# The seed project's methods, in the order of its results table.
SEED_METHODS = ("soft_logits", "fitnet", "at", "fsp", "dml", "kd_svd", "ab", "rkd", "jacobian")
# Methods of today's CIFAR-100 comparisons (RepDistiller / mdistiller / DIST; docs/methods.md).
MODERN_METHODS = ("dkd", "dist", "pkt", "sp", "nst", "cc")
# The seed author's later methods (sseung0703/KD_methods_with_TF at HEAD), optional in `seed`.
SEED_AUTHOR_LATER_METHODS = ("kd_eid", "mhgd")
# Zero-shot KD and its few-shot comparison (the pipeline adds their data components).
ZERO_SHOT_METHODS = ("zero_shot", "soft_logits_fewshot")
# The CRD paper's (RepDistiller's) method list that this project implements, with their weights in
# that protocol (scripts/run_cifar_distill.sh: CE 1 and the method's -b; KD: 0.1 CE + 0.9 KL at T 4
# with T^2), translated to our parameterisations (docs/methods.md, "The crd preset").
CRD_METHODS = ("soft_logits", "fitnet", "at", "ab", "fsp", "rkd", *MODERN_METHODS, "crd", "vid", "ft", "reviewkd")
CRD_METHOD_PARAMS = {
    "soft_logits": {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9, "temperature_squared": True},
    # RepDistiller: 1000 * mean((Q_s - Q_t)^2); ours is beta / 2 * the same mean.
    "at": {"beta": 2000.0},
    # RepDistiller's ABLoss: 3e-3 * (1/4, 1/2, 1) per tap; ours weight * (1, 2, 4); 30 init epochs, then CE alone.
    "ab": {"init_epochs": 30, "weight": 7.5e-4, "ce_weight": 1.0, "kd_weight": 0.0},
    "fsp": {"init_epochs": 30},
    # RepDistiller's RKDLoss: on the pooled embedding, not L2-normalised, distance 25 / angle 50, -b 1.
    # normalised by the mean over the off-diagonal pairs (t_d[t_d > 0].mean()).
    "rkd": {"tap": "embedding", "distance_weight": 25.0, "angle_weight": 50.0, "normalize": False,
            "distance_normalization": "off_diagonal"},
    # RepDistiller's hint: one stage, CE + 100 * MSE(regressor(stage2_s), stage2_t).
    "fitnet": {"hint_stage": "main", "taps": "stage2", "regressor": True, "weight": 100.0},
}
CRD_TRAINING = dict(epochs=240, batch_size=64, learning_rate=0.05, lr_decay_at=(150 / 240, 180 / 240, 210 / 240),
                    momentum=0.9, nesterov=False, weight_decay=5e-4)
# Short budgets scale every method's initialisation stage (the seed's 40 epochs of FitNet, FSP,
# AB and MHGD's graph heads, FT's 30 of paraphraser training) down to one epoch: every method
# whose parameters have `init_epochs`, so that a new two-stage method is shortened too.
ONE_EPOCH_INIT = {name: {"init_epochs": 1} for name, entry in methods.CATALOG.items()
                  if "init_epochs" in {field.name for field in dataclasses.fields(entry.params)}}
# Conventions where the presets differ (docs/fidelity.md says why), written out so that
# `kd presets <name>` shows them. The seed's: KD-SVD summed over the batch, DML's peer step
# first, RKD distances normalised over all B x B entries; weight decay on every variable.
SEED_CONVENTIONS = {"kd_svd": {"reduction": "batch_sum"}, "dml": {"update_order": "sequential"},
                    "rkd": {"distance_normalization": "all_entries"}}
# Elsewhere: RKD as in the paper; weight decay on kernels only (no decay of BN parameters and biases).
OUR_CONVENTIONS = {**SEED_CONVENTIONS, "rkd": {"distance_normalization": "off_diagonal"}}
KERNELS_ONLY = "kernels"

PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            name="smoke",
            description="A few hundred images, 1 epoch, tiny nets: the whole pipeline in minutes (tests).",
            data=DataConfig(train_per_class=3, eval_per_class=1),
            teacher=TeacherConfig(model="resnet14", epochs=1, batch_size=64, weight_decay_scope=KERNELS_ONLY),
            student=TrainingConfig(model="resnet8", epochs=1, batch_size=64, weight_decay_scope=KERNELS_ONLY),
            methods=SEED_METHODS,
            method_params={**ONE_EPOCH_INIT, **OUR_CONVENTIONS},
        ),
        Preset(
            name="quick",
            description=("Real CIFAR-100 on 2 CPU cores: standard resnet32 -> resnet8, 250 training images "
                         "per class, the full test set, a short step schedule (lr x0.1 at 50% and 75%)."),
            data=DataConfig(train_per_class=250),
            teacher=TeacherConfig(model="resnet32", epochs=10, lr_decay_at=(0.5, 0.75),
                                   weight_decay_scope=KERNELS_ONLY),
            student=TrainingConfig(model="resnet8", epochs=4, lr_decay_at=(0.5, 0.75), weight_decay_scope=KERNELS_ONLY),
            methods=SEED_METHODS,
            method_params={**ONE_EPOCH_INIT, **OUR_CONVENTIONS},
        ),
        Preset(
            name="seed",
            description="The seed project's protocol: wide ResNet32 -> ResNet8, 100 epochs, 5 trials (GPU).",
            data=DataConfig(),
            teacher=TeacherConfig(model="seed_resnet32", epochs=100, weight_decay_scope="all"),
            student=TrainingConfig(model="seed_resnet8", epochs=100, weight_decay_scope="all"),
            methods=SEED_METHODS,
            method_params=SEED_CONVENTIONS,
            optional_methods=SEED_AUTHOR_LATER_METHODS,
            trials=5,
            resources=ResourcesConfig(teacher_gpus=1, student_gpus=1),
            protocol="seed",
        ),
        Preset(
            name="crd",
            description=("RepDistiller's (CRD paper's) protocol: resnet32x4 -> resnet8x4, 240 epochs, batch 64, "
                         "SGD momentum 0.9 lr 0.05 x0.1 at 150/180/210, 5 trials (GPU); any CRD-zoo pair "
                         "with --set teacher.model=... student.model=..."),
            data=DataConfig(),
            teacher=TeacherConfig(model="resnet32x4", **CRD_TRAINING),
            student=TrainingConfig(model="resnet8x4", **CRD_TRAINING),
            methods=CRD_METHODS,
            method_params=CRD_METHOD_PARAMS,
            trials=5,
            resources=ResourcesConfig(teacher_gpus=1, student_gpus=1),
            protocol="crd",
            mobile_student_learning_rate=0.01,
        ),
        Preset(
            name="zero_shot",
            description=("Zero-shot KD on 2 CPU cores (~30 min): a resnet20 teacher on 250 images per class, "
                         "2,500 data impressions (60 iterations) -> resnet8, against Soft-logits on 2,500 real "
                         "images (10%) and the baseline on all 25,000."),
            data=DataConfig(train_per_class=250),
            teacher=TeacherConfig(model="resnet20", epochs=6, lr_decay_at=(0.5, 0.75), weight_decay_scope=KERNELS_ONLY),
            student=TrainingConfig(model="resnet8", epochs=15, lr_decay_at=(0.5, 0.75), weight_decay_scope=KERNELS_ONLY),
            methods=ZERO_SHOT_METHODS,
            zero_shot=ZeroShotConfig(num_impressions=2500, iterations=60, learning_rate=0.05, batch_size=250,
                                     few_shot_fraction=0.1),
        ),
    )
}


def _override(obj: Any, path: list[str], value: Any, key: str) -> Any:
    hints = typing.get_type_hints(type(obj))
    field = path[0]
    if field not in hints or field == "name":
        valid = sorted(f for f in hints if f != "name")
        raise PresetError(f"unknown key '{key}' (no field '{field}' in {type(obj).__name__}); valid: {valid}")
    if len(path) == 1:
        try:
            coerced = fields.coerce(value, hints[field])
        except ValueError as error:
            raise PresetError(f"override '{key}': {error}") from None
        return dataclasses.replace(obj, **{field: coerced})
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
    return key.strip(), fields.json_or_text(raw)


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
    # Checks across fields run once every override is applied, so their order does not matter.
    problems = _cross_field_problems(preset) + _pair_problems(preset)
    if problems:
        raise PresetError(f"invalid preset '{name}': " + "; ".join(problems))
    if preset.teacher.import_from:
        from kd_trainer import export  # TensorFlow: only when a teacher is imported

        try:
            export.check_teacher_model(preset.teacher.import_from, preset.teacher.model, teacher_taps(preset),
                                       preset.data.normalization)
        except export.TeacherImportError as error:
            raise PresetError(f"invalid preset '{name}': {error}") from None
    return preset


def teacher_taps(preset: Preset) -> dict[str, tuple[str, ...]]:
    """{method: the exported teacher taps it reads} for the preset's methods that read the teacher
    (the input gradient is computed by the training loop, not exported)."""
    from kd_trainer.methods.base import INPUT_GRADIENT  # TensorFlow: only when a teacher is imported

    needed = {method: tuple(t for t in methods.method_class(method).teacher_taps if t != INPUT_GRADIENT)
              for method in preset.methods}
    return {method: taps for method, taps in needed.items() if taps}


def to_dict(preset: Preset) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(preset)))
