"""The benchmark's Trainer: TFX's Trainer whose executor also flags a diverged model.

run_fn records in `trainer_config.json` whether the objective became NaN/Inf. Publishing
that as the Model artifact's `diverged` custom property lets the pipeline evaluate (and so
possibly bless) only models that trained to the end (`tfx.dsl.Cond` on the property).

The training fields in TRAINING_OVERRIDES may also be given as execution properties of their
own, which replace the values in `custom_config`: a compiled Kubeflow pipeline binds them to
pipeline parameters (TFX RuntimeParameters), so a run can change them without recompiling.
"""

from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf
from tfx import v1 as tfx
from tfx.components.trainer.executor import GenericExecutor
from tfx.dsl.components.base import executor_spec
from tfx.orchestration import data_types
from tfx.types import artifact_utils, standard_component_specs
from tfx.types.component_spec import ExecutionParameter

from kd_trainer.contract import CONFIG_FILE

DIVERGED_PROPERTY = "diverged"
DIVERGENCE_PROPERTY = "divergence"
# TrainerConfig fields that may come as execution properties of their own (see the module doc).
TRAINING_OVERRIDES = {"epochs": int, "learning_rate": float, "batch_size": int}


class KDTrainerSpec(standard_component_specs.TrainerSpec):
    """TFX's TrainerSpec plus the optional TRAINING_OVERRIDES properties."""

    PARAMETERS = {**standard_component_specs.TrainerSpec.PARAMETERS,
                  **{name: ExecutionParameter(type=kind, optional=True) for name, kind in TRAINING_OVERRIDES.items()}}


def apply_training_overrides(exec_properties: dict[str, Any]) -> dict[str, Any]:
    """exec_properties with the override properties written into `custom_config` (a JSON string)."""
    overrides = {name: kind(exec_properties[name]) for name, kind in TRAINING_OVERRIDES.items()
                 if exec_properties.get(name) is not None}
    if not overrides:
        return exec_properties
    config = json.loads(exec_properties[standard_component_specs.CUSTOM_CONFIG_KEY])
    return {**exec_properties, standard_component_specs.CUSTOM_CONFIG_KEY: json.dumps({**config, **overrides})}


class KDTrainerExecutor(GenericExecutor):
    def Do(self, input_dict: dict[str, list], output_dict: dict[str, list], exec_properties: dict[str, Any]) -> None:
        super().Do(input_dict, output_dict, apply_training_overrides(exec_properties))
        model = artifact_utils.get_single_instance(output_dict[standard_component_specs.MODEL_KEY])
        with tf.io.gfile.GFile(os.path.join(model.uri, CONFIG_FILE)) as f:
            divergence = json.load(f)["divergence"]
        model.set_int_custom_property(DIVERGED_PROPERTY, int(divergence is not None))
        if divergence is not None:
            model.set_string_custom_property(DIVERGENCE_PROPERTY, json.dumps(divergence, sort_keys=True))


Override = int | float | data_types.RuntimeParameter


class KDTrainer(tfx.components.Trainer):
    """tfx.components.Trainer (same run_fn contract and outputs) with KDTrainerExecutor.

    `training_overrides` maps names in TRAINING_OVERRIDES to values or RuntimeParameters.
    """

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(KDTrainerExecutor)

    def __init__(self, training_overrides: dict[str, Override] | None = None, **trainer_args: Any):
        unknown = sorted(set(training_overrides or {}) - set(TRAINING_OVERRIDES))
        if unknown:
            raise ValueError(f"training_overrides: unknown field(s) {unknown}; valid: {sorted(TRAINING_OVERRIDES)}")
        super().__init__(**trainer_args)
        if training_overrides:
            # Trainer.__init__ builds a TrainerSpec; the same values in the subclass spec add the
            # override properties (TFX checks only that the spec is a TrainerSpec).
            spec = self.spec
            self.spec = KDTrainerSpec(**spec.exec_properties, **spec.inputs, **spec.outputs, **training_overrides)
