"""Part-2 methods through the training loop: the `index` feature (written by CifarExampleGen,
required with a clear error by CRD), CRD's memory banks restored by a resumed run exactly as
an uninterrupted run has them, and FT's paraphraser stage on the teacher."""

import os

import numpy as np
import pytest
import tensorflow as tf

from components.cifar_example_gen import to_example
from kd_data import cifar100
from kd_trainer import data
from kd_trainer.checkpoints import EpochCheckpoints
from kd_trainer.config import TrainerConfig
from kd_trainer.contract import FILENAME_KEY, HISTORY_FILE, INDEX_KEY
from kd_trainer.run_fn import run_fn, train
from test_example_gen import run_executor
from test_run_fn import TRAINING, example_files, fn_args, teacher_export  # noqa: F401  (fixtures)

CRD_PARAMS = {"feat_dim": 16, "num_negatives": 64, "kd_weight": 1.0}


@pytest.fixture(scope="module")
def indexed_files(tmp_path_factory, tiny_archive):
    """The tiny archive's splits as CifarExampleGen writes them, with `index`."""
    root = tmp_path_factory.mktemp("indexed")
    files = {}
    for split, official in (("train", "train"), ("eval", "test")):
        loaded = cifar100.load_split(tiny_archive, official)
        files[split] = str(root / f"{split}.gz")
        with tf.io.TFRecordWriter(files[split], "GZIP") as writer:
            for i in range(len(loaded)):
                writer.write(to_example(loaded.images[i], loaded.fine_labels[i], loaded.coarse_labels[i],
                                        loaded.filenames[i], index=i))
    return files


def test_example_gen_writes_each_position_once_in_file_order(tmp_path, tiny_archive):
    examples = run_executor(tmp_path, tiny_archive, train_per_class=2)
    files = tf.io.gfile.glob(os.path.join(examples.uri, "Split-train", "*"))
    original = cifar100.load_split(tiny_archive, "train")
    kept = cifar100.stratified_subsample(original.fine_labels, 2, 0)
    by_index = {}
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        features = tf.train.Example.FromString(record.numpy()).features.feature
        by_index[features[INDEX_KEY].int64_list.value[0]] = features[FILENAME_KEY].bytes_list.value[0].decode()
    assert sorted(by_index) == list(range(200))
    assert [by_index[i] for i in range(200)] == [original.filenames[i] for i in kept]


def test_training_batches_carry_the_indices_of_their_images(indexed_files):
    records = data.load_indexed_records(indexed_files["train"], "crd")
    label_by_index = {int(i): int(label) for _, label, i in records}
    batches = data.training_batches(records, 50, seed=1, num_examples=400, first_epoch=0, epochs=1)
    seen = []
    for images, labels, indices in batches.take(4):
        assert images.shape == (50, 32, 32, 3) and labels.shape == indices.shape == (50,)
        assert labels.numpy().tolist() == [label_by_index[i] for i in indices.numpy()]
        seen += indices.numpy().tolist()
    assert len(set(seen)) == 200


def test_crd_on_examples_without_index_fails_before_training(tmp_path, example_files, teacher_export):  # noqa: F811
    config = {"role": "student", "method": "crd", "method_params": CRD_PARAMS, **TRAINING}
    args = fn_args(tmp_path, example_files, "crd", config, teacher_export.serving_model_dir)
    with pytest.raises(ValueError, match=r"train\.gz has no 'index' feature .* method 'crd' .* older CifarExampleGen"):
        run_fn(args)
    assert not os.path.exists(args.model_run_dir), "training started"


class Interrupted(Exception):
    pass


def test_resumed_crd_run_restores_the_uninterrupted_memory_banks(tmp_path, indexed_files, teacher_export,  # noqa: F811
                                                                  monkeypatch):
    config = TrainerConfig.from_dict({"role": "student", "method": "crd", "method_params": CRD_PARAMS,
                                      **TRAINING, "epochs": 2, "seed": 5})
    files = ([indexed_files["train"]], [indexed_files["eval"]])
    teacher = teacher_export.serving_model_dir

    def banks(run_dir):
        reader = tf.train.load_checkpoint(os.path.join(run_dir, "checkpoints", "epoch-2"))
        names = {name for name in reader.get_variable_to_shape_map() if name.startswith("method/")}
        return {name: reader.get_tensor(name) for name in names}

    train(config, *files, teacher, checkpoints=EpochCheckpoints(str(tmp_path / "reference" / "1"), "work"))
    reference = banks(tmp_path / "reference" / "1")
    assert {"student_memory", "teacher_memory", "normalizers", "draws"} <= {
        name.split("/")[1] for name in reference}

    save = EpochCheckpoints.save

    def save_then_stop(self, checkpoint, epochs_done, stage, history):
        save(self, checkpoint, epochs_done, stage, history)
        if epochs_done == 1:
            raise Interrupted

    runs = tmp_path / "Trainer" / "model_run"
    monkeypatch.setattr(EpochCheckpoints, "save", save_then_stop)
    with pytest.raises(Interrupted):
        train(config, *files, teacher, checkpoints=EpochCheckpoints(str(runs / "1"), "work"))
    monkeypatch.setattr(EpochCheckpoints, "save", save)
    outcome = train(config, *files, teacher, checkpoints=EpochCheckpoints(str(runs / "2"), "work"))

    assert outcome.resumed_after_epoch == 1
    resumed = banks(runs / "2")
    assert resumed.keys() == reference.keys()
    for name in reference:
        np.testing.assert_allclose(resumed[name], reference[name], rtol=1e-5, atol=1e-6, err_msg=name)
    # The banks moved during the second epoch: the comparison is not of initial values.
    first_epoch = tf.train.load_checkpoint(os.path.join(runs / "1", "checkpoints", "epoch-1"))
    student_memory = next(name for name in reference if "student_memory" in name)
    assert not np.allclose(first_epoch.get_tensor(student_memory), reference[student_memory])


def test_ft_runs_its_paraphraser_stage_then_the_main_stage(tmp_path, example_files, teacher_export):  # noqa: F811
    import json

    config = {"role": "student", "method": "ft", "method_params": {"init_epochs": 1}, **TRAINING, "epochs": 1,
              "learning_rate": 0.05}
    args = fn_args(tmp_path, example_files, "ft", config, teacher_export.serving_model_dir)
    run_fn(args)
    history = json.load(open(os.path.join(os.path.dirname(args.serving_model_dir), HISTORY_FILE)))
    assert [(h["epoch"], h["stage"]) for h in history] == [(1, "teacher_init"), (2, "main")]
    assert history[0]["learning_rate"] == pytest.approx(0.01) and history[1]["learning_rate"] == pytest.approx(0.05)
    assert np.isfinite(history[0]["reconstruction"]) and np.isfinite(history[1]["ft"])
