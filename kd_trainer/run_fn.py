"""TFX Trainer entry point (`run_fn`) and the training loop behind it.

Outputs in the Model artifact: `Format-Serving/` (the SavedModel, see export.py),
`history.json` (per-epoch metrics, learning rate, epoch time) and `trainer_config.json`
(the exact configuration and code revision). TensorBoard logs go to the ModelRun artifact.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import tensorflow as tf
import tf_keras as keras

from kd_trainer import data, export, methods, models
from kd_trainer.config import TrainerConfig
from kd_trainer.distiller import Distiller

HISTORY_FILE = "history.json"
CONFIG_FILE = "trainer_config.json"


class EpochRecorder(keras.callbacks.Callback):
    """Collects each epoch's metrics with its learning rate and wall time."""

    def __init__(self, learning_rate: keras.optimizers.schedules.LearningRateSchedule):
        super().__init__()
        self.learning_rate = learning_rate
        self.epochs: list[dict[str, Any]] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()
        self._lr = float(self.learning_rate(self.model.optimizer.iterations))

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch + 1, "learning_rate": self._lr,
                  "epoch_seconds": round(time.perf_counter() - self._started, 3)}
        record.update({k: float(v) for k, v in (logs or {}).items()})
        self.epochs.append(record)


def step_schedule(config: TrainerConfig, steps_per_epoch: int) -> keras.optimizers.schedules.LearningRateSchedule:
    boundaries = [epoch * steps_per_epoch for epoch in config.decay_epochs()]
    values = [config.learning_rate * config.lr_decay_factor ** i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def train(config: TrainerConfig, train_files: list[str], eval_files: list[str], teacher_dir: str | None,
          log_dir: str | None = None) -> tuple[keras.Model, list[dict[str, Any]]]:
    """Trains the configured network; returns the student Keras model and its history."""
    keras.utils.set_random_seed(config.seed)
    train_records = data.load_records(train_files)
    num_train = data.count(train_records)
    if num_train < config.batch_size:
        raise ValueError(f"{num_train} training examples in {train_files}, fewer than batch_size {config.batch_size}")
    steps_per_epoch = num_train // config.batch_size
    train_batches = data.training_batches(train_records, config.batch_size, config.seed, num_train)
    eval_batches = data.evaluation_batches(data.load_records(eval_files), config.eval_batch_size)

    student = models.build_model(config.model, config.weight_decay)
    method = methods.create(config.method, config.method_params) if config.method else None
    teacher = None
    if method is not None and method.needs_teacher:
        if not teacher_dir:
            raise ValueError(f"method '{config.method}' needs the teacher as the Trainer's base_model")
        teacher, _teacher_module = export.load_teacher(teacher_dir)
    distiller = Distiller(student, method=method, teacher=teacher)
    schedule = step_schedule(config, steps_per_epoch)
    distiller.compile(optimizer=keras.optimizers.SGD(schedule, momentum=config.momentum, nesterov=True))

    recorder = EpochRecorder(schedule)
    callbacks: list[keras.callbacks.Callback] = [recorder]
    if log_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch"))
    distiller.fit(train_batches, epochs=config.epochs, validation_data=eval_batches, callbacks=callbacks, verbose=2)
    return student, recorder.epochs


def write_json(path: str, payload: Any) -> None:
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(payload, indent=2, sort_keys=True))


def run_fn(fn_args) -> None:
    """TFX Trainer contract: train from fn_args.train_files, export to serving_model_dir."""
    config = TrainerConfig.from_dict(fn_args.custom_config or {})
    student, history = train(config, fn_args.train_files, fn_args.eval_files, fn_args.base_model,
                             log_dir=fn_args.model_run_dir)
    export.save(student, fn_args.serving_model_dir)
    model_dir = os.path.dirname(fn_args.serving_model_dir.rstrip("/"))
    write_json(os.path.join(model_dir, HISTORY_FILE), history)
    write_json(os.path.join(model_dir, CONFIG_FILE), {
        **config.to_dict(), "num_weights_without_bn": models.count_weights_without_bn(student),
        "num_parameters": student.count_params()})
