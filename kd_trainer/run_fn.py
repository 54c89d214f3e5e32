"""TFX Trainer entry point (`run_fn`) and the training loop behind it.

Outputs in the Model artifact: `Format-Serving/` (the SavedModel, see export.py),
`history.json` (per-epoch metrics, learning rate, epoch time) and `trainer_config.json`
(the exact configuration, the fingerprint of the code it ran, and the git revision read
when it ran: kd_trainer/provenance.py). TensorBoard logs go to the ModelRun artifact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import tensorflow as tf
import tf_keras as keras

from kd_trainer import data, devices, export, methods, models, precision
from kd_trainer.checkpoints import CheckpointEachEpoch, EpochCheckpoints, fingerprint
from kd_trainer.config import TrainerConfig
from kd_trainer.contract import CONFIG_FILE, HISTORY_FILE, TAPS_SIGNATURE
from kd_trainer.distiller import Distiller, TeacherFn
from kd_trainer.methods.base import INPUT_GRADIENT, MAIN_STAGE, DistillationMethod, RunInfo
from kd_trainer.provenance import code_revision


class EpochRecorder(keras.callbacks.Callback):
    """Collects each epoch's metrics with its stage, learning rate and wall time, and
    tells the Distiller the epoch number (KD-SVD's gradient-clipping ramp and DKD's warm-up read it)."""

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


def stage_schedule(config: TrainerConfig, stage: str, steps_per_epoch: int, method: DistillationMethod | None = None
                   ) -> keras.optimizers.schedules.LearningRateSchedule:
    """The seed's per-stage learning rate: constant while initialising (the method may set
    its own stages' rate), then the step schedule."""
    if stage != MAIN_STAGE:
        rate = method.stage_learning_rate(stage, config.learning_rate) if method is not None else config.learning_rate
        return keras.optimizers.schedules.PiecewiseConstantDecay([0], [rate] * 2)
    # PiecewiseConstantDecay keeps a value up to and including its boundary step; the last
    # step of epoch e is e * steps_per_epoch - 1 (the optimizer counts steps from 0).
    boundaries = [epoch * steps_per_epoch - 1 for epoch in config.decay_epochs()]
    values = [config.learning_rate * config.lr_decay_factor ** i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


@contextlib.contextmanager
def _graph_options_for(method) -> Iterator[None]:
    """Turns off Grappler's arithmetic optimizer while a method differentiates input gradients.

    In the quick preset, the Jacobian student's double-backprop graph failed in its 2nd epoch
    with `AlreadyExistsError: Resource __per_step_0/AddN_35/tmp_var` (the optimizer's AddN
    rewrite racing on a temporary variable; tensorflow/tensorflow#23780). With this option
    off, the quick run at fef508d trained all 4 Jacobian epochs. It is restored afterwards, so other Trainers in the process keep
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
    return keras.optimizers.SGD(schedule, momentum=config.momentum, nesterov=config.nesterov)


def _carry_momentum(previous: keras.optimizers.Optimizer, current: keras.optimizers.Optimizer) -> None:
    """The seed's never-reset momentum (train_w_distill.py:159-163, a bug): the main stage starts
    from the initialisation stage's velocities. Both optimizers are built on the same variables,
    in the same order. A run resumed exactly at the stage boundary starts from zero velocities."""
    for velocity, carried in zip(current.momentums, previous.momentums):
        velocity.assign(carried)


class DivergenceMonitor(keras.callbacks.Callback):
    """Stops training soon after the first non-finite objective, and says where it happened.

    The Distiller notes the step in the graph; this reads it every `check_every` steps and
    at each epoch end (one host sync per check, none per step).
    """

    def __init__(self, method: str, steps_per_epoch: int, recorder: EpochRecorder, check_every: int = 20):
        super().__init__()
        self._supports_tf_logs = True  # keep logs as tensors: no conversion, no sync per step
        self.method, self.steps_per_epoch, self.recorder, self.check_every = method, steps_per_epoch, recorder, check_every
        self.stage_first_epoch = 0
        self.divergence: dict[str, Any] | None = None

    def on_train_batch_end(self, batch, logs=None):
        if (batch + 1) % self.check_every == 0:
            self._check()

    def on_epoch_end(self, epoch, logs=None):
        self._check()

    def _check(self) -> None:
        step = int(self.model.non_finite_step.numpy())
        if step < 0 or self.divergence is not None:
            return
        epoch, step_in_epoch = divmod(step, self.steps_per_epoch)
        self.divergence = {"method": self.method or "(none)", "stage": self.recorder.stage,
                           "epoch": self.stage_first_epoch + epoch + 1, "step": step_in_epoch + 1}
        self.model.stop_training = True
        logging.error("Non-finite training loss: method %(method)s, stage %(stage)s, epoch %(epoch)d, "
                      "step %(step)d; training stopped, this model will not be evaluated", self.divergence)


@dataclasses.dataclass
class TrainingOutcome:
    student: keras.Model
    history: list[dict[str, Any]]
    divergence: dict[str, Any] | None  # where the objective became NaN/Inf, if it did
    resumed_after_epoch: int  # 0 unless restarted from a checkpoint
    mixed_precision: str  # the Keras policy the networks computed in (config "auto" resolved here)
    jit_compile: bool


def _stage_checkpoint(distiller: Distiller, method, networks_only: bool = False) -> tf.train.Checkpoint:
    """Everything a stage's training updates: networks, connectors and (unless
    `networks_only`) the stage's optimizers with their step counters."""
    objects: dict[str, Any] = {"student": distiller.student}
    if method is not None:
        objects["method"] = method
    if distiller.partner is not None:
        objects.update(distiller.partner.checkpoint_objects(networks_only))
    if not networks_only:
        objects["optimizer"] = distiller.optimizer
    return tf.train.Checkpoint(**objects)


def labels_by_index(indexed_records: tf.data.Dataset, num_examples: int, train_files: list[str]) -> np.ndarray:
    """The label of every training example at its `index` (one pass over the cached split);
    fails unless the indices are exactly 0 .. num_examples - 1."""
    _, labels, indices = next(iter(indexed_records.batch(num_examples)))
    labels, indices = labels.numpy(), indices.numpy()
    if not np.array_equal(np.sort(indices), np.arange(num_examples)):
        raise ValueError(f"the 'index' features of the {num_examples} examples in {train_files} are not 0 .. "
                         f"{num_examples - 1} (each once): the split was not written by one CifarExampleGen run")
    by_index = np.empty(num_examples, np.int32)
    by_index[indices] = labels
    return by_index


# How each kind of training data (catalog.TRAINING_DATA) is read, given the files and the method's name.
_LOADERS: dict[str, Callable[[list[str], str], tf.data.Dataset]] = {
    methods.catalog.EXAMPLES: lambda files, _: data.load_records(files),
    methods.catalog.FEW_SHOT_EXAMPLES: lambda files, _: data.load_records(files),
    methods.catalog.INDEXED_EXAMPLES: data.load_indexed_records,
    methods.catalog.IMPRESSIONS: lambda files, _: data.load_impressions(files),
}


def training_records(method: DistillationMethod | None, train_files: list[str], batch_size: int
                     ) -> tuple[tf.data.Dataset, int]:
    """(the cached training records the method trains on, their count), at least one batch."""
    trains_on = method.trains_on if method is not None else methods.catalog.EXAMPLES
    records = _LOADERS[trains_on](train_files, method.name if method is not None else "")
    count = data.count(records)
    if count < batch_size:
        raise ValueError(f"{count} training examples in {train_files}, fewer than batch_size {batch_size}")
    return records, count


def load_teacher(config: TrainerConfig, teacher_dir: str | None) -> TeacherFn:
    """The frozen teacher's `feature_taps` from the Trainer's base_model, checked to expect the
    student's input normalization."""
    if not teacher_dir:
        raise ValueError(f"method '{config.method}' needs the teacher as the Trainer's base_model")
    _, loaded = export.load_teacher(teacher_dir)
    teacher_normalization = export.input_normalization(loaded)
    if teacher_normalization != config.input_normalization:
        raise ValueError(f"{teacher_dir}: the teacher expects images normalized as '{teacher_normalization}', "
                         f"this student's input_normalization is '{config.input_normalization}'")

    def feature_taps(images: tf.Tensor) -> Mapping[str, tf.Tensor]:
        """The export's function; referencing `loaded` keeps the export's variables alive."""
        return getattr(loaded, TAPS_SIGNATURE)(images)

    return feature_taps


def build_distiller(config: TrainerConfig, method: DistillationMethod | None, teacher_dir: str | None,
                    policy: str) -> Distiller:
    """The student (in the precision `policy`), the teacher or the method's partner, and the method."""
    def network(name: str) -> keras.Model:
        with precision.policy(policy):  # only the networks: connectors and losses stay float32
            return models.build_model(name, config.weight_decay, weight_decay_scope=config.weight_decay_scope)

    def teacher_network() -> keras.Model:
        if not config.teacher_model:
            raise ValueError(f"method '{config.method}' needs teacher_model (the architecture of its partner network)")
        return network(config.teacher_model)

    student = network(config.model)
    teacher = load_teacher(config, teacher_dir) if method is not None and method.needs_teacher else None
    partner = method.partner(teacher_network) if method is not None else None
    return Distiller(student, method=method, teacher=teacher, partner=partner,
                     connector_layers=models.layer_factory(config.weight_decay, config.weight_decay_scope))


@dataclasses.dataclass
class Progress:
    """Where a run starts: the epochs already trained (0, or those of the checkpoint resumed from)."""

    checkpoint: str | None
    epochs_done: int
    history: list[dict[str, Any]]

    @classmethod
    def of(cls, checkpoints: EpochCheckpoints | None, name: str) -> Progress:
        latest = checkpoints.latest_progress() if checkpoints is not None else None
        if latest is None:
            return cls(None, 0, [])
        logging.info("Resuming %s after epoch %d from %s", name, latest[1]["epochs_done"], latest[0])
        return cls(latest[0], latest[1]["epochs_done"], list(latest[1]["history"]))


def compile_stage(distiller: Distiller, config: TrainerConfig, stage: str, schedule, policy: str,
                  jit_compile: bool, previous_optimizer: keras.optimizers.Optimizer | None, steps_per_epoch: int
                  ) -> None:
    """A fresh optimizer per stage (the seed meant to reset momentum; compile retraces
    train_step), built up front with every variable so checkpoints have the same shape in
    every run; with `reset_momentum_between_stages=False`, the previous stage's velocities."""
    optimizer = precision.optimizer_for(policy, _optimizer(config, schedule))
    partner_optimizer = None
    if distiller.partner is not None:
        partner_optimizer = precision.optimizer_for(policy, _optimizer(
            config, stage_schedule(config, stage, steps_per_epoch)))
    distiller.compile(optimizer=optimizer, partner_optimizer=partner_optimizer, jit_compile=jit_compile)
    distiller.optimizer.build(distiller.trainable_student_variables())
    if previous_optimizer is not None and not config.reset_momentum_between_stages:
        _carry_momentum(previous_optimizer, distiller.optimizer)


def restore_stage(distiller: Distiller, method, checkpoint_path: str, stage_first_epoch: int,
                  epochs_done: int) -> None:
    """Restores a resumed stage: everything when it was interrupted within the stage, the
    networks only (a fresh optimizer) when it was interrupted at its start."""
    if epochs_done > stage_first_epoch:
        _stage_checkpoint(distiller, method).read(checkpoint_path).assert_existing_objects_matched()
    elif epochs_done == stage_first_epoch > 0:
        _stage_checkpoint(distiller, method, networks_only=True).read(
            checkpoint_path).expect_partial().assert_existing_objects_matched()


@devices.in_distribution_strategy
def train(config: TrainerConfig, train_files: list[str], eval_files: list[str], teacher_dir: str | None,
          log_dir: str | None = None, checkpoints: EpochCheckpoints | None = None) -> TrainingOutcome:
    """Trains the configured network through its method's stages.

    With `checkpoints`, saves after every epoch and first resumes from the latest matching
    checkpoint, if any: the resumed run trains the remaining epochs on the same batches.
    """
    keras.utils.set_random_seed(config.seed)
    method = methods.create(config.method, config.method_params) if config.method else None
    train_records, num_train = training_records(method, train_files, config.batch_size)
    steps_per_epoch = num_train // config.batch_size
    eval_batches = data.evaluation_batches(data.load_records(eval_files), config.eval_batch_size,
                                           config.input_normalization)
    if method is not None:
        method.prepare(RunInfo(config.epochs, config.seed, example_labels=labels_by_index(
            train_records, num_train, train_files) if method.trains_on == methods.catalog.INDEXED_EXAMPLES else None))
    policy = precision.resolve_precision(config.mixed_precision)
    jit_compile = precision.resolve_jit_compile(config.jit_compile)
    distiller = build_distiller(config, method, teacher_dir, policy)

    progress = Progress.of(checkpoints, config.method or config.role)
    recorder = EpochRecorder()
    recorder.epochs = progress.history
    monitor = DivergenceMonitor(config.method, steps_per_epoch, recorder)
    callbacks: list[keras.callbacks.Callback] = [recorder, monitor]
    if log_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch"))
    stages = method.stage_epochs(config.epochs) if method is not None else {MAIN_STAGE: config.epochs}
    done = 0
    previous_optimizer = None  # the optimizer of the stage trained just before, in this process
    with _graph_options_for(method):
        for stage, epochs in stages.items():
            if done + epochs <= progress.epochs_done:  # finished before the interruption
                done += epochs
                continue
            schedule = stage_schedule(config, stage, steps_per_epoch, method)
            distiller.stage = recorder.stage = stage
            distiller.stage_first_epoch = monitor.stage_first_epoch = done
            recorder.schedule = schedule
            compile_stage(distiller, config, stage, schedule, policy, jit_compile, previous_optimizer,
                          steps_per_epoch)
            stage_callbacks = list(callbacks)
            if checkpoints is not None:
                if progress.checkpoint is not None:
                    restore_stage(distiller, method, progress.checkpoint, done, progress.epochs_done)
                stage_callbacks.insert(2, CheckpointEachEpoch(checkpoints, _stage_checkpoint(distiller, method),
                                                              recorder))
            first_epoch = max(done, progress.epochs_done)
            distiller.fit(data.training_batches(train_records, config.batch_size, config.seed, num_train,
                                                first_epoch=first_epoch, epochs=done + epochs - first_epoch,
                                                one_crop_per_batch=config.one_crop_per_batch,
                                                normalization=config.input_normalization),
                          steps_per_epoch=steps_per_epoch, initial_epoch=first_epoch, epochs=done + epochs,
                          validation_data=eval_batches, callbacks=stage_callbacks, verbose=2)
            done += epochs
            previous_optimizer = distiller.optimizer
            if monitor.divergence is not None:
                break
    return TrainingOutcome(distiller.student, recorder.epochs, monitor.divergence, progress.epochs_done, policy,
                           jit_compile)


def write_json(path: str, payload: Any) -> None:
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(payload, indent=2, sort_keys=True))


def run_fn(fn_args) -> None:
    """TFX Trainer contract: train from fn_args.train_files, export to serving_model_dir.

    Checkpoints go to the run directory (fn_args.model_run_dir) and are removed after export.
    A diverged run still exports its model, with the divergence in trainer_config.json; the
    pipeline's Trainer executor turns that into the artifact property that skips evaluation.
    """
    config = TrainerConfig.from_dict(fn_args.custom_config or {})
    checkpoints = EpochCheckpoints(fn_args.model_run_dir, fingerprint(
        config.to_dict(), fn_args.train_files, fn_args.eval_files, fn_args.base_model))
    outcome = train(config, fn_args.train_files, fn_args.eval_files, fn_args.base_model,
                    log_dir=fn_args.model_run_dir, checkpoints=checkpoints)
    export.save(outcome.student, fn_args.serving_model_dir, config.input_normalization)
    model_dir = os.path.dirname(fn_args.serving_model_dir.rstrip("/"))
    write_json(os.path.join(model_dir, HISTORY_FILE), outcome.history)
    write_json(os.path.join(model_dir, CONFIG_FILE), {
        **config.to_dict(), "code_revision": code_revision(), "num_weights_without_bn": models.count_weights_without_bn(outcome.student),
        "num_parameters": outcome.student.count_params(), "divergence": outcome.divergence,
        "resumed_after_epoch": outcome.resumed_after_epoch, "distribution_strategy": devices.strategy_name(),
        "resolved_precision": {"mixed_precision": outcome.mixed_precision, "jit_compile": outcome.jit_compile}})
    checkpoints.remove()
