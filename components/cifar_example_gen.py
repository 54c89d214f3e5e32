"""CifarExampleGen: a TFX ExampleGen that turns CIFAR-100 into tf.Examples with Beam.

Output: an `Examples` artifact with the splits `train` (official train set) and `eval`
(official test set), gzipped TFRecords of tf.Examples holding

    image_raw     bytes, 32*32*3 uint8 in HWC/RGB order
    fine_label    int64 in [0, 100)
    coarse_label  int64 in [0, 20)
    filename      bytes (the name stored in the CIFAR file)
    index         int64, the example's position in its (subsampled) split, 0 .. n-1:
                  stable for a given source, subsample size and seed (CRD's memory banks
                  are indexed by it)

Each split is read inside the Beam pipeline (so any runner can do the work), shuffled,
and written to a staging folder that is moved into place only after the whole pipeline
succeeded: an invalid input leaves no split behind.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import apache_beam as beam
import numpy as np
import tensorflow as tf
from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from kd_data import cifar100
from kd_trainer.contract import FILENAME_KEY, IMAGE_KEY, INDEX_KEY, LABEL_KEY, SLICE_KEY

# TFX split name -> official CIFAR-100 file.
SPLITS = {"train": "train", "eval": "test"}


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def to_example(image: np.ndarray, fine_label: int, coarse_label: int, filename: str,
               index: int | None = None) -> bytes:
    """Serializes one image (HWC uint8) and its labels as a tf.Example; `index` None leaves
    the feature out, as the examples of earlier versions of this component were written."""
    features = {
        IMAGE_KEY: _bytes(image.tobytes()),
        LABEL_KEY: _int(fine_label),
        SLICE_KEY: _int(coarse_label),
        FILENAME_KEY: _bytes(filename.encode("utf-8")),
    }
    if index is not None:
        features[INDEX_KEY] = _int(index)
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def read_split(official_split: str, source: str, per_class: int | None, seed: int,
               require_official_sizes: bool) -> Iterator[bytes]:
    """Beam FlatMap body: yields the serialized examples of one (subsampled) split."""
    # A run that requires the official dataset also requires its files' checksums.
    split = cifar100.load_split(source, official_split, verify_checksums=require_official_sizes)
    if require_official_sizes:
        cifar100.check_official_sizes(split, official_split, f"{source}:{official_split}")
    for position, index in enumerate(cifar100.stratified_subsample(split.fine_labels, per_class, seed)):
        yield to_example(split.images[index], split.fine_labels[index], split.coarse_labels[index],
                         split.filenames[index], index=position)


class CifarExampleGenSpec(ComponentSpec):
    """Parameters of CifarExampleGen."""

    PARAMETERS = {
        "data_dir": ExecutionParameter(type=str, optional=True),
        "allow_download": ExecutionParameter(type=int),
        "train_per_class": ExecutionParameter(type=int, optional=True),
        "eval_per_class": ExecutionParameter(type=int, optional=True),
        "seed": ExecutionParameter(type=int),
        "require_official_sizes": ExecutionParameter(type=int),
    }
    INPUTS: dict = {}
    OUTPUTS = {"examples": ChannelParameter(type=standard_artifacts.Examples)}


class Executor(base_beam_executor.BaseBeamExecutor):
    """Reads CIFAR-100 and writes the `train` / `eval` splits as gzipped TFRecords."""

    def Do(self, input_dict: dict[str, list[types.Artifact]], output_dict: dict[str, list[types.Artifact]],
           exec_properties: dict[str, Any]) -> None:
        source = cifar100.locate(exec_properties.get("data_dir") or None,
                                 allow_download=bool(exec_properties["allow_download"]))
        examples = artifact_utils.get_single_instance(output_dict["examples"])
        staging = os.path.join(examples.uri, ".staging")
        per_class = {"train": exec_properties.get("train_per_class"), "eval": exec_properties.get("eval_per_class")}
        examples.split_names = artifact_utils.encode_split_names(list(SPLITS))
        try:
            with self._make_beam_pipeline() as pipeline:
                for split_name, official_split in SPLITS.items():
                    _ = (
                        pipeline
                        | f"Source[{split_name}]" >> beam.Create([official_split])
                        | f"Read[{split_name}]" >> beam.FlatMap(
                            read_split, str(source), per_class[split_name] or None,
                            int(exec_properties["seed"]), bool(exec_properties["require_official_sizes"]))
                        | f"Shuffle[{split_name}]" >> beam.Reshuffle()
                        | f"Write[{split_name}]" >> beam.io.WriteToTFRecord(
                            os.path.join(staging, f"Split-{split_name}", "data_tfrecord"),
                            file_name_suffix=".gz")
                    )
            for split_name in SPLITS:
                tf.io.gfile.rename(os.path.join(staging, f"Split-{split_name}"),
                                   artifact_utils.get_split_uri([examples], split_name))
        finally:
            if tf.io.gfile.exists(staging):
                tf.io.gfile.rmtree(staging)
        examples_utils.set_payload_format(examples, example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(examples, "tfrecords_gzip")


class CifarExampleGen(base_beam_component.BaseBeamComponent):
    """ExampleGen for the CIFAR-100 "python version" (archive or extracted folder).

    Args:
      data_dir: folder holding `cifar-100-python.tar.gz` or `cifar-100-python/` (or the path
        of either): a local path or any tf.io.gfile URI (gs://, s3://, hdfs://). Empty:
        `$KD_CIFAR100_DIR`, then a download to ~/.cache on the worker.
      allow_download: download the official archive (md5-checked) when it is absent.
      train_per_class / eval_per_class: stratified deterministic subsample size per fine
        class; None keeps the whole split.
      seed: seed of the subsample.
      require_official_sizes: fail unless the splits have 50,000 / 10,000 balanced images and
        the files' checksums are the official archive's or the project's re-packed copy's.
    """

    SPEC_CLASS = CifarExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, data_dir: str = "", allow_download: bool = True, train_per_class: int | None = None,
                 eval_per_class: int | None = None, seed: int = 0, require_official_sizes: bool = True):
        super().__init__(CifarExampleGenSpec(
            data_dir=data_dir, allow_download=int(allow_download), train_per_class=train_per_class,
            eval_per_class=eval_per_class, seed=seed, require_official_sizes=int(require_official_sizes),
            examples=types.Channel(type=standard_artifacts.Examples)))
