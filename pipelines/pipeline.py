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
"""

from __future__ import annotations

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
from pipelines.presets import Preset, to_dict

RUN_FN = "kd_trainer.run_fn.run_fn"
LABEL_KEY = "fine_label"
PREDICTION_KEY = "probabilities"
SLICE_FEATURE = "coarse_label"
ECE_MODULE, ECE_BINS = "kd_trainer.metrics", 15

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
        slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[SLICE_FEATURE])],
        metrics_specs=[tfma.MetricsSpec(metrics=metrics)],
    )


def _trainer(preset: Preset, examples: BaseChannel, role: str, component_id: str, code_revision: str,
             parameters: Mapping[str, Any], trial: int = 1, method: str = "",
             teacher_model: BaseChannel | None = None):
    config = preset.trainer_config(role, trial=trial, method=method, code_revision=code_revision)
    network = "teacher" if role == "teacher" else "student"
    overrides = {field: parameters[f"{network}_{field}"] for field in ("epochs", "learning_rate", "batch_size")
                 if f"{network}_{field}" in parameters}
    return KDTrainer(
        run_fn=RUN_FN, examples=examples, base_model=teacher_model, custom_config=config.to_dict(),
        training_overrides=overrides,
    ).with_id(component_id)


def trained_to_the_end(trainer) -> placeholder.Predicate:
    """Whether the Trainer's objective stayed finite (see components/trainer.py)."""
    return trainer.outputs["model"].future()[0].custom_property(DIVERGED_PROPERTY) == 0


def _student_examples(preset: Preset, examples: BaseChannel, teacher_model: BaseChannel, data_dir: Any
                      ) -> tuple[list, dict[str, BaseChannel]]:
    """Extra data components, and the examples of the methods whose students do not train on `examples`.

    `zero_shot`: DataImpressions' output, whose train split holds only impressions synthesised
    from the teacher and whose eval split is a copy of the real one (validation curves); the
    real training split is no input of that Trainer. `soft_logits_fewshot`: a second
    CifarExampleGen keeping `few_shot_fraction` of each class's training images.
    """
    components, by_method = [], {}
    if "zero_shot" in preset.methods:
        impressions = DataImpressions(model=teacher_model, examples=examples, options=preset.zero_shot,
                                      seed=preset.seed).with_id("DataImpressions")
        components.append(impressions)
        by_method["zero_shot"] = impressions.outputs["impressions"]
    if "soft_logits_fewshot" in preset.methods:
        data = preset.data
        few_shot = CifarExampleGen(
            data_dir=data_dir, allow_download=data.allow_download, train_per_class=preset.few_shot_per_class(),
            eval_per_class=data.eval_per_class, seed=data.seed, require_official_sizes=data.require_official_sizes,
        ).with_id("CifarExampleGen.fewshot")
        components.append(few_shot)
        by_method["soft_logits_fewshot"] = few_shot.outputs["examples"]
    return components, by_method


def create_pipeline(pipeline_name: str, pipeline_root: str, preset: Preset, code_revision: str,
                    metadata_connection_config=None, beam_pipeline_args: list[str] | None = None,
                    enable_cache: bool = True, parameters: Mapping[str, Any] | None = None) -> tfx.dsl.Pipeline:
    """Builds the pipeline for `preset`; its structure follows preset.methods and preset.trials."""
    parameters = dict(parameters or {})
    unknown = sorted(set(parameters) - set(PARAMETER_FIELDS))
    if unknown:
        raise ValueError(f"unknown pipeline parameter(s) {unknown}; valid: {sorted(PARAMETER_FIELDS)}")
    data = preset.data
    data_dir = parameters.get("data_dir", data.data_dir)
    example_gen = CifarExampleGen(
        data_dir=data_dir, allow_download=data.allow_download, train_per_class=data.train_per_class,
        eval_per_class=data.eval_per_class, seed=data.seed, require_official_sizes=data.require_official_sizes)
    examples = example_gen.outputs["examples"]
    teacher = _trainer(preset, examples, "teacher", trainer_id("teacher"), code_revision, parameters)
    # Evaluators run only for models that trained to the end: a diverged one is never blessed.
    with tfx.dsl.Cond(trained_to_the_end(teacher)):
        teacher_evaluator = tfx.components.Evaluator(examples=examples, model=teacher.outputs["model"],
                                                     eval_config=eval_config(None)).with_id(evaluator_id("teacher"))
    trainers, evaluators = [teacher], [teacher_evaluator]
    data_components, student_examples = _student_examples(preset, examples, teacher.outputs["model"], data_dir)
    for trial in range(1, preset.trials + 1):
        baseline = _trainer(preset, examples, "baseline", trainer_id("baseline", trial), code_revision, parameters,
                            trial)
        trainers.append(baseline)
        for method in preset.methods:
            student = _trainer(preset, student_examples.get(method, examples), "student", trainer_id(method, trial),
                               code_revision, parameters, trial, method=method,
                               teacher_model=teacher.outputs["model"])
            with tfx.dsl.Cond(trained_to_the_end(student)), tfx.dsl.Cond(trained_to_the_end(baseline)):
                evaluators.append(KDEvaluator(
                    examples=examples, model=student.outputs["model"], baseline_model=baseline.outputs["model"],
                    eval_config=eval_config(preset.blessing_margin),
                    blessing_margin=parameters.get("blessing_margin")).with_id(evaluator_id(method, trial)))
            trainers.append(student)
    leaderboard = Leaderboard(
        models=[t.outputs["model"] for t in trainers],
        evaluations=[e.outputs["evaluation"] for e in evaluators],
        blessings=[e.outputs["blessing"] for e in evaluators],
        configuration=json.dumps(to_dict(preset), sort_keys=True),
        title=f"KD benchmark, preset '{preset.name}'")
    components = [example_gen, *data_components, *trainers, *evaluators, leaderboard]
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [],
    )
