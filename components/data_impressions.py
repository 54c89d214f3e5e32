"""DataImpressions: zero-shot KD's transfer set (Nayak et al., ICML 2019) as a TFX component.

Inputs: the teacher's Model (its export: `feature_taps` and the final dense kernel) and the
real Examples. Output: an `Examples` artifact that a stock TFX Trainer reads like
CifarExampleGen's (gzipped TFRecords of tf.Examples, splits `train` and `eval`):

    Split-train   the impressions (kd_trainer/impressions.py), features data.IMPRESSION_FEATURES:
                    image         float[3072], HWC RGB in pixel units (0-255 scale, unclipped)
                    soft_target   float[100], the Dirichlet target it was optimised for
                    source_class  int64, the class whose similarity row gave the target
                    beta          float, the target's concentration scale
    Split-eval    a byte-for-byte copy of the real Examples' eval split
    impressions.json  options, seed, and the teacher's mean loss per iteration

A Trainer given this artifact as `examples` trains on impressions only (the real training
split is not an input of this component, so it cannot reach that Trainer) and still draws
its per-epoch validation curve from the real eval split, as every other Trainer does.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np
import tensorflow as tf
from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter
from tfx.utils import path_utils

from kd_trainer import export, impressions
from kd_trainer.contract import (IMPRESSION_BETA_KEY, IMPRESSION_CLASS_KEY, IMPRESSION_IMAGE_KEY,
                                 IMPRESSION_TARGET_KEY)

SPLITS = ("train", "eval")
SUMMARY_FILE = "impressions.json"


def _floats(values: np.ndarray) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=values.ravel()))


def to_example(image: np.ndarray, soft_target: np.ndarray, source_class: int, beta: float) -> bytes:
    """Serializes one impression (see the module docstring for the features)."""
    features = {
        IMPRESSION_IMAGE_KEY: _floats(image),
        IMPRESSION_TARGET_KEY: _floats(soft_target),
        IMPRESSION_CLASS_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(source_class)])),
        IMPRESSION_BETA_KEY: tf.train.Feature(float_list=tf.train.FloatList(value=[float(beta)])),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def write_impressions(generated: impressions.Impressions, split_dir: str) -> None:
    tf.io.gfile.makedirs(split_dir)
    with tf.io.TFRecordWriter(os.path.join(split_dir, "data_tfrecord-00000-of-00001.gz"), "GZIP") as writer:
        for i in range(len(generated.images)):
            writer.write(to_example(generated.images[i], generated.targets[i], generated.classes[i],
                                    generated.betas[i]))


def copy_split(source_dir: str, destination_dir: str) -> None:
    files = tf.io.gfile.listdir(source_dir)
    if not files:
        raise ValueError(f"the real eval split {source_dir} is empty")
    tf.io.gfile.makedirs(destination_dir)
    for name in files:
        tf.io.gfile.copy(os.path.join(source_dir, name), os.path.join(destination_dir, name), overwrite=True)


class DataImpressionsSpec(ComponentSpec):
    """Parameters of DataImpressions (ImpressionOptions' fields; betas as a JSON list)."""

    PARAMETERS = {
        "num_impressions": ExecutionParameter(type=int),
        "iterations": ExecutionParameter(type=int),
        "learning_rate": ExecutionParameter(type=float),
        "batch_size": ExecutionParameter(type=int),
        "temperature": ExecutionParameter(type=float),
        "betas": ExecutionParameter(type=str),
        "image_l2": ExecutionParameter(type=float),
        "seed": ExecutionParameter(type=int),
    }
    INPUTS = {
        "model": ChannelParameter(type=standard_artifacts.Model),
        "examples": ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {"impressions": ChannelParameter(type=standard_artifacts.Examples)}


def exec_properties(options: impressions.ImpressionOptions, seed: int) -> dict[str, Any]:
    """The component's parameters for `options` (the inverse of `options_from`)."""
    return {"num_impressions": options.num_impressions, "iterations": options.iterations,
            "learning_rate": options.learning_rate, "batch_size": options.batch_size,
            "temperature": options.temperature, "betas": json.dumps(list(options.betas)),
            "image_l2": options.image_l2, "seed": seed}


def options_from(exec_properties: dict[str, Any]) -> impressions.ImpressionOptions:
    return impressions.ImpressionOptions(
        num_impressions=int(exec_properties["num_impressions"]), iterations=int(exec_properties["iterations"]),
        learning_rate=float(exec_properties["learning_rate"]), batch_size=int(exec_properties["batch_size"]),
        temperature=float(exec_properties["temperature"]), betas=tuple(json.loads(exec_properties["betas"])),
        image_l2=float(exec_properties["image_l2"]))


class Executor(base_executor.BaseExecutor):
    """Synthesises the impressions from the teacher and writes them with a copy of the real eval split."""

    def Do(self, input_dict: dict[str, list[types.Artifact]], output_dict: dict[str, list[types.Artifact]],
           exec_properties: dict[str, Any]) -> None:
        options = options_from(exec_properties)
        model = artifact_utils.get_single_instance(input_dict["model"])
        real = artifact_utils.get_single_instance(input_dict["examples"])
        output = artifact_utils.get_single_instance(output_dict["impressions"])
        teacher_dir = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
        teacher, loaded = export.load_teacher(teacher_dir)
        generated = impressions.generate(teacher, export.classifier_kernel(loaded).numpy(), options,
                                         seed=int(exec_properties["seed"]),
                                         normalization=export.input_normalization(loaded))

        output.split_names = artifact_utils.encode_split_names(list(SPLITS))
        write_impressions(generated, artifact_utils.get_split_uri([output], "train"))
        copy_split(artifact_utils.get_split_uri([real], "eval"), artifact_utils.get_split_uri([output], "eval"))
        summary = {"options": dataclasses.asdict(options), "seed": int(exec_properties["seed"]),
                   "teacher": teacher_dir, "loss_curve": generated.loss_curve.tolist(),
                   "final_loss_by_beta": {str(b): float(generated.final_loss[generated.betas == b].mean())
                                          for b in np.unique(generated.betas)}}
        with tf.io.gfile.GFile(os.path.join(output.uri, SUMMARY_FILE), "w") as f:
            f.write(json.dumps(summary, indent=2, sort_keys=True))
        output.set_float_custom_property("initial_teacher_loss", float(generated.loss_curve[0]))
        output.set_float_custom_property("final_teacher_loss", float(generated.loss_curve[-1]))
        examples_utils.set_payload_format(output, example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(output, "tfrecords_gzip")


class DataImpressions(base_component.BaseComponent):
    """Synthesises zero-shot KD's data impressions from the teacher alone.

    Args:
      model: the teacher's Model channel.
      examples: the real Examples channel; only its eval split is read (and copied).
      options: how many impressions and how they are optimised (kd_trainer/impressions.py).
      seed: seed of the Dirichlet targets and of the initial noise.
    """

    SPEC_CLASS = DataImpressionsSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, model: types.BaseChannel, examples: types.BaseChannel,
                 options: impressions.ImpressionOptions, seed: int = 0):
        super().__init__(DataImpressionsSpec(
            model=model, examples=examples, impressions=types.Channel(type=standard_artifacts.Examples),
            **exec_properties(options, seed)))
