"""Per-epoch checkpoints that let an interrupted Trainer resume where it stopped.

A TFX re-run gives the Trainer a new execution and a new run directory
(`<pipeline_root>/<Trainer id>/model_run/<execution id>`), so checkpoints are written in
the run directory and, at start, the sibling run directories of the same component are
searched for the most advanced checkpoint of the *same* work: same configuration, input
files and teacher (a fingerprint of them). Each save writes the TensorFlow checkpoint
first and `progress.json` last, atomically, so a kill at any moment leaves either the
previous complete state or the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import tensorflow as tf
import tf_keras as keras

CHECKPOINT_FOLDER = "checkpoints"
PROGRESS_FILE = "progress.json"


def fingerprint(config: dict[str, Any], train_files: list[str], eval_files: list[str], teacher_dir: str | None) -> str:
    """Identifies the work of one Trainer (its code fingerprint included)."""
    payload = json.dumps([config, sorted(train_files), sorted(eval_files), teacher_dir or ""], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _write_atomically(path: str, text: str) -> None:
    staging = f"{path}.tmp"
    with tf.io.gfile.GFile(staging, "w") as f:
        f.write(text)
    tf.io.gfile.rename(staging, path, overwrite=True)


class EpochCheckpoints:
    """Saves after every epoch into `run_dir/checkpoints`; finds a state to resume from."""

    def __init__(self, run_dir: str, work_fingerprint: str):
        self.directory = os.path.join(run_dir, CHECKPOINT_FOLDER)
        self.run_dir = run_dir
        self.fingerprint = work_fingerprint
        self._saved: str | None = None

    def latest_progress(self) -> tuple[str, dict[str, Any]] | None:
        """(checkpoint prefix, progress) of the most advanced matching run, or None."""
        found = []
        pattern = os.path.join(os.path.dirname(self.run_dir.rstrip("/")), "*", CHECKPOINT_FOLDER, PROGRESS_FILE)
        for path in tf.io.gfile.glob(pattern):
            with tf.io.gfile.GFile(path) as f:
                progress = json.load(f)
            if progress["fingerprint"] == self.fingerprint:
                found.append((progress["epochs_done"], os.path.join(os.path.dirname(path), progress["checkpoint"]),
                              progress))
        if not found:
            return None
        _, prefix, progress = max(found, key=lambda item: item[0])
        return prefix, progress

    def save(self, checkpoint: tf.train.Checkpoint, epochs_done: int, stage: str, history: list[dict]) -> None:
        tf.io.gfile.makedirs(self.directory)
        name = f"epoch-{epochs_done}"
        checkpoint.write(os.path.join(self.directory, name))
        _write_atomically(os.path.join(self.directory, PROGRESS_FILE), json.dumps({
            "fingerprint": self.fingerprint, "epochs_done": epochs_done, "stage": stage, "checkpoint": name,
            "history": history}, indent=1))
        if self._saved and self._saved != name:
            for stale in tf.io.gfile.glob(os.path.join(self.directory, self._saved + ".*")):
                tf.io.gfile.remove(stale)
        self._saved = name

    def remove(self) -> None:
        """Drops this run's checkpoints once the model is exported."""
        if tf.io.gfile.exists(self.directory):
            tf.io.gfile.rmtree(self.directory)


class CheckpointEachEpoch(keras.callbacks.Callback):
    """Keras callback: saves `checkpoint` and the history so far after every epoch."""

    def __init__(self, checkpoints: EpochCheckpoints, checkpoint: tf.train.Checkpoint, recorder):
        super().__init__()
        self.checkpoints = checkpoints
        self.checkpoint = checkpoint
        self.recorder = recorder

    def on_epoch_end(self, epoch, logs=None):
        self.checkpoints.save(self.checkpoint, epoch + 1, self.recorder.stage, self.recorder.epochs)
