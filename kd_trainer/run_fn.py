"""TFX Trainer entry point (`run_fn`) and the training loop behind it.

Outputs in the Model artifact: `Format-Serving/` (the SavedModel, see export.py),
`history.json` (per-epoch metrics, learning rate, epoch time) and `trainer_config.json`
(the exact configuration and code revision). TensorBoard logs go to the ModelRun artifact.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any, Iterator

import tensorflow as tf
import tf_keras as keras

from kd_trainer import data, export, methods, models
from kd_trainer.config import TrainerConfig
from kd_trainer.distiller import Distiller
from kd_trainer.methods.base import INPUT_GRADIENT, MAIN_STAGE

HISTORY_FILE = "history.json"
CONFIG_FILE = "trainer_config.json"


class EpochRecorder(keras.callbacks.Callback):
    """Collects each epoch's metrics with its stage, learning rate and wall time, and
    tells the Distiller the epoch number (KD-SVD's gradient-clipping ramp reads it)."""

    def __init__(self):
        super().__init__()
        self.epochs: list[dict[str, Any]] = []
        self.stage = MAIN_STAGE
        self.schedule: keras.optimizers.schedules.LearningRateSchedule | None = None
        self._started = 0.0
        self._lr = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()
        self.model.epoch.assign(float(epoch))
        self._lr = float(self.schedule(self.model.optimizer.iterations))

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch + 1, "stage": self.stage, "learning_rate": self._lr,
                  "epoch_seconds": round(time.perf_counter() - self._started, 3)}
        record.update({k: float(v) for k, v in (logs or {}).items()})
        self.epochs.append(record)


def stage_schedule(config: TrainerConfig, stage: str, steps_per_epoch: int
                   ) -> keras.optimizers.schedules.LearningRateSchedule:
    """The seed's per-stage learning rate: constant while initialising, then the step schedule."""
    if stage != MAIN_STAGE:
        return keras.optimizers.schedules.PiecewiseConstantDecay([0], [config.learning_rate] * 2)
    boundaries = [epoch * steps_per_epoch for epoch in config.decay_epochs()]
    values = [config.learning_rate * config.lr_decay_factor ** i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


@contextlib.contextmanager
def _graph_options_for(method) -> Iterator[None]:
    """Turns off Grappler's arithmetic optimizer while a method differentiates input gradients.

    In the quick preset, the Jacobian student's double-backprop graph failed in its 2nd epoch
    with `AlreadyExistsError: Resource __per_step_0/AddN_35/tmp_var` (the optimizer's AddN
    rewrite racing on a temporary variable; tensorflow/tensorflow#23780). Unverified
    mitigation: the option is restored afterwards, so other Trainers in the process keep
    the default graph optimizations.
    """
    if method is None or INPUT_GRADIENT not in method.student_taps:
        yield
        return
    previous = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options(
            {"arithmetic_optimization": previous.get("arithmetic_optimization", True)})


def _optimizer(config: TrainerConfig, schedule) -> keras.optimizers.Optimizer:
    return keras.optimizers.SGD(schedule, momentum=config.momentum, nesterov=True)


def train(config: TrainerConfig, train_files: list[str], eval_files: list[str], teacher_dir: str | None,
          log_dir: str | None = None) -> tuple[keras.Model, list[dict[str, Any]]]:
    """Trains the configured network through its method's stages; returns the student and its history."""
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
    teacher, peer = None, None
    if method is not None and method.needs_teacher:
        if not teacher_dir:
            raise ValueError(f"method '{config.method}' needs the teacher as the Trainer's base_model")
        teacher, _teacher_module = export.load_teacher(teacher_dir)
    if method is not None and method.trains_peer:
        if not config.teacher_model:
            raise ValueError(f"method '{config.method}' needs teacher_model (the peer's architecture)")
        peer = models.build_model(config.teacher_model, config.weight_decay)
    distiller = Distiller(student, method=method, teacher=teacher, peer=peer)

    recorder = EpochRecorder()
    callbacks: list[keras.callbacks.Callback] = [recorder]
    if log_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch"))
    stages = method.stage_epochs(config.epochs) if method is not None else {MAIN_STAGE: config.epochs}
    done = 0
    with _graph_options_for(method):
        for stage, epochs in stages.items():
            if epochs == 0:
                continue
            schedule = stage_schedule(config, stage, steps_per_epoch)
            # A fresh optimizer per stage (as the seed); compile retraces train_step for the stage.
            distiller.stage = recorder.stage = stage
            recorder.schedule = schedule
            distiller.compile(optimizer=_optimizer(config, schedule),
                              peer_optimizer=_optimizer(config, stage_schedule(config, stage, steps_per_epoch))
                              if peer is not None else None)
            distiller.fit(train_batches, initial_epoch=done, epochs=done + epochs, validation_data=eval_batches,
                          callbacks=callbacks, verbose=2)
            done += epochs
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
