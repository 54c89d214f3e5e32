"""The benchmark's Evaluator: TFX's Evaluator whose blessing margin may be a pipeline parameter.

The margin is part of the EvalConfig (a change threshold on top-1 accuracy), which TFX can
only pass as a whole. Given as the optional `blessing_margin` execution property, it
replaces that threshold when the executor runs, so a compiled Kubeflow pipeline can bind
it to a pipeline parameter (a TFX RuntimeParameter) that a run may change.
"""

from __future__ import annotations

from typing import Any

import tensorflow_model_analysis as tfma
from google.protobuf import json_format
from tfx import v1 as tfx
from tfx.components.evaluator.executor import Executor as EvaluatorExecutor
from tfx.dsl.components.base import executor_spec
from tfx.orchestration import data_types
from tfx.types import standard_component_specs
from tfx.types.component_spec import ExecutionParameter
from tfx.utils import proto_utils

BLESSING_MARGIN_KEY = "blessing_margin"


class KDEvaluatorSpec(standard_component_specs.EvaluatorSpec):
    """TFX's EvaluatorSpec plus the optional `blessing_margin`."""

    PARAMETERS = {**standard_component_specs.EvaluatorSpec.PARAMETERS,
                  BLESSING_MARGIN_KEY: ExecutionParameter(type=float, optional=True)}


def apply_blessing_margin(exec_properties: dict[str, Any]) -> dict[str, Any]:
    """exec_properties whose EvalConfig change thresholds allow `blessing_margin` less accuracy."""
    margin = exec_properties.get(BLESSING_MARGIN_KEY)
    if margin is None:
        return exec_properties
    margin = float(margin)
    if not 0 <= margin < 1:
        raise ValueError(f"pipeline parameter blessing_margin must be in [0, 1) (accuracy, absolute), got {margin}")
    config = json_format.Parse(exec_properties[standard_component_specs.EVAL_CONFIG_KEY], tfma.EvalConfig())
    thresholds = [threshold.threshold.change_threshold for spec in config.metrics_specs for metric in spec.metrics
                  for threshold in metric.per_slice_thresholds if threshold.threshold.HasField("change_threshold")]
    if not thresholds:
        raise ValueError("blessing_margin is set but the EvalConfig has no change threshold to apply it to")
    for change in thresholds:
        change.absolute.value = -margin
    return {**exec_properties, standard_component_specs.EVAL_CONFIG_KEY: proto_utils.proto_to_json(config)}


class KDEvaluatorExecutor(EvaluatorExecutor):
    def Do(self, input_dict: dict[str, list], output_dict: dict[str, list], exec_properties: dict[str, Any]) -> None:
        super().Do(input_dict, output_dict, apply_blessing_margin(exec_properties))


class KDEvaluator(tfx.components.Evaluator):
    """tfx.components.Evaluator (same inputs and outputs) with an optional `blessing_margin`."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(KDEvaluatorExecutor)

    def __init__(self, blessing_margin: float | data_types.RuntimeParameter | None = None, **evaluator_args: Any):
        super().__init__(**evaluator_args)
        if blessing_margin is not None:
            # As for KDTrainer: the same values in the subclass spec add the property.
            spec = self.spec
            self.spec = KDEvaluatorSpec(**spec.exec_properties, **spec.inputs, **spec.outputs,
                                        blessing_margin=blessing_margin)
