"""CifarExampleGen's executor on generated and real archives (Beam DirectRunner)."""

import os

import numpy as np
import pytest
import tensorflow as tf
from tfx.types import artifact_utils, standard_artifacts

import cifar_fixtures
from components.cifar_example_gen import Executor
from kd_data import cifar100
from kd_trainer.contract import FILENAME_KEY, IMAGE_KEY, LABEL_KEY, SLICE_KEY


def run_executor(tmp_path, source, **properties):
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    exec_properties = {"data_dir": str(source), "allow_download": 0, "seed": 0, "require_official_sizes": 0,
                       "train_per_class": None, "eval_per_class": None, **properties}
    Executor().Do({}, {"examples": [examples]}, exec_properties)
    return examples


def read_split(examples, split):
    files = tf.io.gfile.glob(os.path.join(artifact_utils.get_split_uri([examples], split), "*"))
    rows = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        features = tf.train.Example.FromString(record.numpy()).features.feature
        rows.append((features[FILENAME_KEY].bytes_list.value[0].decode(),
                     np.frombuffer(features[IMAGE_KEY].bytes_list.value[0], np.uint8).reshape(32, 32, 3),
                     features[LABEL_KEY].int64_list.value[0], features[SLICE_KEY].int64_list.value[0]))
    return rows


@pytest.mark.parametrize("source_fixture", ["tiny_archive", "tiny_folder"])
def test_examples_round_trip_images_and_labels(tmp_path, request, source_fixture):
    source = request.getfixturevalue(source_fixture)
    examples = run_executor(tmp_path, source)
    assert artifact_utils.decode_split_names(examples.split_names) == ["train", "eval"]
    assert examples.get_string_custom_property("file_format") == "tfrecords_gzip"
    for split, official in (("train", "train"), ("eval", "test")):
        original = cifar100.load_split(source, official)
        by_name = {name: i for i, name in enumerate(original.filenames)}
        rows = read_split(examples, split)
        assert len(rows) == len(original)
        for name, image, fine, coarse in rows:
            i = by_name[name]
            np.testing.assert_array_equal(image, original.images[i])
            assert (fine, coarse) == (original.fine_labels[i], original.coarse_labels[i])


def test_subsample_per_class(tmp_path, tiny_archive):
    examples = run_executor(tmp_path, tiny_archive, train_per_class=2, eval_per_class=1)
    train = read_split(examples, "train")
    assert np.bincount([fine for _, _, fine, _ in train], minlength=100).tolist() == [2] * 100
    assert len(read_split(examples, "eval")) == 100


def test_invalid_input_leaves_no_split_behind(tmp_path):
    record = cifar_fixtures.make_split(2, seed=0)
    record[b"fine_labels"][3] = 250
    folder = cifar_fixtures.write_folder(tmp_path / "data", splits={"train": record,
                                                                   "test": cifar_fixtures.make_split(1, 1)})
    with pytest.raises(Exception, match=r"'fine_labels' has values in \[0, 250\]"):
        run_executor(tmp_path, folder)
    assert not os.path.exists(tmp_path / "examples") or os.listdir(tmp_path / "examples") == []


def test_real_archive_ingests(tmp_path, real_archive):
    examples = run_executor(tmp_path, real_archive, train_per_class=1, eval_per_class=1, require_official_sizes=1)
    train = read_split(examples, "train")
    assert sorted(fine for _, _, fine, _ in train) == list(range(100))
    assert len(read_split(examples, "eval")) == 100
