"""The benchmark as a TFX pipeline, generated from a preset.

    CifarExampleGen -> Trainer.teacher --------------------> Evaluator.teacher
                    -> Trainer.baseline_trial{k}
                    -> Trainer.{method}_trial{k} (base_model = teacher)
                          -> Evaluator.{method}_trial{k} (candidate vs baseline_trial{k})
    Zero-shot KD, when methods include them (the Evaluators are as above):
    Trainer.teacher, CifarExampleGen -> DataImpressions -> Trainer.zero_shot_trial{k}
    CifarExampleGen.fewshot (few_shot_fraction of each class) -> Trainer.soft_logits_fewshot_trial{k}
    all Trainers and Evaluators -> Leaderboard (tables, plots, HTML report)

One student Trainer and one Evaluator per (method, trial); trial k of every method is
compared with the baseline student of the same trial (same seed, same data order).

`parameters` (Kubeflow): values or TFX RuntimeParameters, named as in PARAMETER_FIELDS, for
the fields that do not change the DAG; they replace the preset's values when the
components run. Without them every value comes from the preset, as in local runs.

With `teacher.import_from`, an Importer (Importer.teacher) replaces Trainer.teacher: the
students, DataImpressions and Evaluator.teacher read that earlier teacher, checked first.

Cache keys: every component carries the fingerprint of the project code it runs
(pipelines/revision.py; a Trainer's in its custom_config, others as the `code_fingerprint`
execution property), never the git revision, so a change to one method's module re-runs
only that method's Trainers and what reads their models.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Mapping

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx
from tfx.dsl.placeholder import placeholder
from tfx.types import BaseChannel

from components.cifar_example_gen import CifarExampleGen
from components.data_impressions import DataImpressions
from components.evaluator import KDEvaluator
from components.leaderboard import Leaderboard
from components.trainer import DIVERGED_PROPERTY, KDTrainer
from kd_trainer import export, methods
from kd_trainer.contract import LABEL_KEY, PREDICTION_KEY, SLICE_KEY
from kd_trainer.methods.catalog import FEW_SHOT_EXAMPLES, IMPRESSIONS
from pipelines import revision
from pipelines.presets import Preset, methods_training_on, teacher_taps, to_dict

RUN_FN = "kd_trainer.run_fn.run_fn"
ECE_MODULE, ECE_BINS = "kd_trainer.metrics", 15
EXAMPLE_GEN_MODULE = "components.cifar_example_gen"
TRAINER_MODULES = (RUN_FN.rpartition(".")[0], "components.trainer")
CODE_FINGERPRINT = "code_fingerprint"
TEACHER_IMPORTER = "Importer.teacher"


def keyed_by_code(component, *modules: str):
    """Adds the fingerprint of the code in `modules` (and what they import) to the component's
    execution properties, which TFX's cache key covers: changed code re-runs it."""
    component.exec_properties[CODE_FINGERPRINT] = revision.component_fingerprint(*modules)
    return component

# Pipeline parameter -> the preset field it sets (fields that leave the DAG unchanged).
PARAMETER_FIELDS = {
    "data_dir": "data.data_dir",
    "teacher_epochs": "teacher.epochs",
    "teacher_learning_rate": "teacher.learning_rate",
    "teacher_batch_size": "teacher.batch_size",
    "student_epochs": "student.epochs",
    "student_learning_rate": "student.learning_rate",
    "student_batch_size": "student.batch_size",
    "blessing_margin": "blessing_margin",
}


def preset_value(preset: Preset, field: str) -> Any:
    """The value of a dotted preset field (`student.epochs`)."""
    value = preset
    for part in field.split("."):
        value = getattr(value, part)
    return value


def trainer_id(name: str, trial: int | None = None) -> str:
    return f"Trainer.{name}" if trial is None else f"Trainer.{name}_trial{trial}"


def evaluator_id(name: str, trial: int | None = None) -> str:
    return f"Evaluator.{name}" if trial is None else f"Evaluator.{name}_trial{trial}"


def eval_config(blessing_margin: float | None) -> tfma.EvalConfig:
    """Top-1/top-5 accuracy, cross-entropy and calibration error (ECE), overall and per superclass.

    With `blessing_margin`, the candidate is compared with a baseline and blessed when its
    accuracy on the whole test set is at least the baseline's minus the margin; without,
    it is evaluated alone.
    """
    candidate = tfma.ModelSpec(name="candidate", label_key=LABEL_KEY, prediction_key=PREDICTION_KEY)
    model_specs = [candidate]
    accuracy_thresholds = []
    if blessing_margin is not None:
        model_specs.append(tfma.ModelSpec(name="baseline", label_key=LABEL_KEY, prediction_key=PREDICTION_KEY,
                                          is_baseline=True))
        # Decided on the whole test set only: superclass slices are for reading, not gating.
        accuracy_thresholds.append(tfma.PerSliceMetricThreshold(
            slicing_specs=[tfma.SlicingSpec()],
            threshold=tfma.MetricThreshold(change_threshold=tfma.GenericChangeThreshold(
                direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -blessing_margin}))))
    metrics = [
        tfma.MetricConfig(class_name="ExampleCount"),
        tfma.MetricConfig(class_name="SparseCategoricalAccuracy", per_slice_thresholds=accuracy_thresholds),
        tfma.MetricConfig(class_name="SparseTopKCategoricalAccuracy", config='{"k": 5}'),
        tfma.MetricConfig(class_name="SparseCategoricalCrossentropy"),
        tfma.MetricConfig(class_name="ExpectedCalibrationError", module=ECE_MODULE,
                          config=json.dumps({"num_bins": ECE_BINS})),
    ]
    return tfma.EvalConfig(
        model_specs=model_specs,
        slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[SLICE_KEY])],
        metrics_specs=[tfma.MetricsSpec(metrics=metrics)],
    )


def trainer_code_fingerprint(method: str = "") -> str:
    """The training loop, models, data and export; for a student, also its method's module, its
    imports and its parameters' defaults (the shared catalog file is in no method's fingerprint)."""
    if not method:
        return revision.component_fingerprint(*TRAINER_MODULES)
    code = revision.method_fingerprint(methods.method_class(method).__module__, *TRAINER_MODULES)
    defaults = repr(methods.catalog.entry(method).params())
    return hashlib.sha256(f"{code} {defaults}".encode()).hexdigest()[:len(code)]


def _trainer(preset: Preset, examples: BaseChannel, role: str, component_id: str, parameters: Mapping[str, Any],
             trial: int = 1, method: str = "", teacher_model: BaseChannel | None = None):
    config = dataclasses.replace(preset.trainer_config(role, trial=trial, method=method),
                                 code_fingerprint=trainer_code_fingerprint(method))
    network = "teacher" if role == "teacher" else "student"
    overrides = {field: parameters[f"{network}_{field}"] for field in ("epochs", "learning_rate", "batch_size")
                 if f"{network}_{field}" in parameters}
    return KDTrainer(
        run_fn=RUN_FN, examples=examples, base_model=teacher_model, custom_config=config.to_dict(),
        training_overrides=overrides,
    ).with_id(component_id)


def trained_to_the_end(model: BaseChannel) -> placeholder.Predicate:
    """Whether the objective of the model's Trainer stayed finite (see components/trainer.py)."""
    return model.future()[0].custom_property(DIVERGED_PROPERTY) == 0


def _student_examples(preset: Preset, examples: BaseChannel, teacher_model: BaseChannel, data_dir: Any
                      ) -> tuple[list, dict[str, BaseChannel]]:
    """Extra data components, and the examples of the methods whose students do not train on `examples`.

    By each method's catalog `trains_on`: impressions (`zero_shot`) get DataImpressions' output,
    whose train split holds only impressions synthesised from the teacher and whose eval split
    is a copy of the real one (validation curves); the real training split is no input of that
    Trainer. Few-shot examples (`soft_logits_fewshot`) get a second CifarExampleGen keeping
    `few_shot_fraction` of each class's training images.
    """
    components, by_method = [], {}
    if methods_training_on(preset, IMPRESSIONS):
        impressions = keyed_by_code(DataImpressions(model=teacher_model, examples=examples, options=preset.zero_shot,
                                                    seed=preset.seed).with_id("DataImpressions"),
                                    "components.data_impressions")
        components.append(impressions)
        by_method.update(dict.fromkeys(methods_training_on(preset, IMPRESSIONS), impressions.outputs["impressions"]))
    if methods_training_on(preset, FEW_SHOT_EXAMPLES):
        data = preset.data
        few_shot = keyed_by_code(CifarExampleGen(
            data_dir=data_dir, allow_download=data.allow_download, train_per_class=preset.few_shot_per_class(),
            eval_per_class=data.eval_per_class, seed=data.seed, require_official_sizes=data.require_official_sizes,
        ).with_id("CifarExampleGen.fewshot"), EXAMPLE_GEN_MODULE)
        components.append(few_shot)
        by_method.update(dict.fromkeys(methods_training_on(preset, FEW_SHOT_EXAMPLES), few_shot.outputs["examples"]))
    return components, by_method


def imported_teacher(preset: Preset):
    """An Importer of `teacher.import_from`, checked first (see kd_trainer/export.py: check_teacher_model).

    Its Model artifact is marked as trained to the end (the check refuses a diverged one).
    """
    model_dir = export.check_teacher_model(preset.teacher.import_from, preset.teacher.model, teacher_taps(preset),
                                           preset.data.normalization)
    return tfx.dsl.Importer(source_uri=model_dir, artifact_type=tfx.types.standard_artifacts.Model,
                            custom_properties={DIVERGED_PROPERTY: 0}).with_id(TEACHER_IMPORTER)


def create_pipeline(pipeline_name: str, pipeline_root: str, preset: Preset,
                    metadata_connection_config=None, beam_pipeline_args: list[str] | None = None,
                    enable_cache: bool = True, parameters: Mapping[str, Any] | None = None) -> tfx.dsl.Pipeline:
    """Builds the pipeline for `preset`; its structure follows preset.methods and preset.trials."""
    parameters = dict(parameters or {})
    unknown = sorted(set(parameters) - set(PARAMETER_FIELDS))
    if unknown:
        raise ValueError(f"unknown pipeline parameter(s) {unknown}; valid: {sorted(PARAMETER_FIELDS)}")
    data = preset.data
    data_dir = parameters.get("data_dir", data.data_dir)
    example_gen = keyed_by_code(CifarExampleGen(
        data_dir=data_dir, allow_download=data.allow_download, train_per_class=data.train_per_class,
        eval_per_class=data.eval_per_class, seed=data.seed, require_official_sizes=data.require_official_sizes),
        EXAMPLE_GEN_MODULE)
    examples = example_gen.outputs["examples"]
    if preset.teacher.import_from:
        teacher = imported_teacher(preset)
        teacher_model = teacher.outputs["result"]
        trainers, models = [], [teacher_model]
    else:
        teacher = _trainer(preset, examples, "teacher", trainer_id("teacher"), parameters)
        teacher_model = teacher.outputs["model"]
        trainers, models = [teacher], []
    # Evaluators run only for models that trained to the end: a diverged one is never blessed.
    with tfx.dsl.Cond(trained_to_the_end(teacher_model)):
        teacher_evaluator = keyed_by_code(tfx.components.Evaluator(
            examples=examples, model=teacher_model, eval_config=eval_config(None)).with_id(evaluator_id("teacher")),
            ECE_MODULE)
    evaluators = [teacher_evaluator]
    data_components, student_examples = _student_examples(preset, examples, teacher_model, data_dir)
    for trial in range(1, preset.trials + 1):
        baseline = _trainer(preset, examples, "baseline", trainer_id("baseline", trial), parameters, trial)
        trainers.append(baseline)
        for method in preset.methods:
            student = _trainer(preset, student_examples.get(method, examples), "student", trainer_id(method, trial),
                               parameters, trial, method=method, teacher_model=teacher_model)
            with tfx.dsl.Cond(trained_to_the_end(student.outputs["model"])), \
                    tfx.dsl.Cond(trained_to_the_end(baseline.outputs["model"])):
                evaluators.append(keyed_by_code(KDEvaluator(
                    examples=examples, model=student.outputs["model"], baseline_model=baseline.outputs["model"],
                    eval_config=eval_config(preset.blessing_margin),
                    blessing_margin=parameters.get("blessing_margin")).with_id(evaluator_id(method, trial)),
                    ECE_MODULE, "components.evaluator"))
            trainers.append(student)
    models += [t.outputs["model"] for t in trainers]
    leaderboard = keyed_by_code(Leaderboard(
        models=models,
        evaluations=[e.outputs["evaluation"] for e in evaluators],
        blessings=[e.outputs["blessing"] for e in evaluators],
        configuration=json.dumps(to_dict(preset), sort_keys=True),
        title=f"KD benchmark, preset '{preset.name}'"), "components.leaderboard")
    importers = [teacher] if preset.teacher.import_from else []
    components = [example_gen, *importers, *data_components, *trainers, *evaluators, leaderboard]
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [],
    )
