"""The benchmark's Trainer: TFX's Trainer whose executor also flags a diverged model.

run_fn records in `trainer_config.json` whether the objective became NaN/Inf. Publishing
that as the Model artifact's `diverged` custom property lets the pipeline evaluate (and so
possibly bless) only models that trained to the end (`tfx.dsl.Cond` on the property).
"""

from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf
from tfx import v1 as tfx
from tfx.components.trainer.executor import GenericExecutor
from tfx.dsl.components.base import executor_spec
from tfx.types import artifact_utils, standard_component_specs

DIVERGED_PROPERTY = "diverged"
DIVERGENCE_PROPERTY = "divergence"
TRAINER_CONFIG_FILE = "trainer_config.json"


class KDTrainerExecutor(GenericExecutor):
    def Do(self, input_dict: dict[str, list], output_dict: dict[str, list], exec_properties: dict[str, Any]) -> None:
        super().Do(input_dict, output_dict, exec_properties)
        model = artifact_utils.get_single_instance(output_dict[standard_component_specs.MODEL_KEY])
        with tf.io.gfile.GFile(os.path.join(model.uri, TRAINER_CONFIG_FILE)) as f:
            divergence = json.load(f)["divergence"]
        model.set_int_custom_property(DIVERGED_PROPERTY, int(divergence is not None))
        if divergence is not None:
            model.set_string_custom_property(DIVERGENCE_PROPERTY, json.dumps(divergence, sort_keys=True))


class KDTrainer(tfx.components.Trainer):
    """tfx.components.Trainer (same spec, run_fn contract and outputs) with KDTrainerExecutor."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(KDTrainerExecutor)
