"""Helpers shared by the method tests: float64 NumPy references (softmax, KL, central
differences), float64 Keras layers, and the one way the tests build a Distiller for a
catalog method as `run_fn` does (prepare, teacher or partner, connectors, optimizers).

Imports TensorFlow: import it from test modules, not from conftest (TF_USE_LEGACY_KERAS is
set by conftest before any test module is imported).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import tensorflow as tf
import tf_keras as keras

from kd_trainer import methods, models, precision
from kd_trainer.distiller import Distiller
from kd_trainer.methods.base import MAIN_STAGE, DistillationMethod, Partner, RunInfo
from kd_trainer.methods.catalog import INDEXED_EXAMPLES

# --------------------------------------------------------------------------- NumPy references


def np_softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (shifted by the row maximum)."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def np_kl(p: np.ndarray, q: np.ndarray) -> float:
    """Batch mean of KL(p || q) = sum p (log p - log q) over the last axis."""
    return np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=-1))


def numeric_gradient(function: Callable[[np.ndarray], float], x: np.ndarray, step: float = 1e-6) -> np.ndarray:
    """Central differences of a scalar NumPy function at x, one entry at a time (float64)."""
    gradient = np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += step
        minus[index] -= step
        gradient[index] = (function(plus) - function(minus)) / (2 * step)
    return gradient


def directional_difference(function: Callable[[Any], float], x: Any, direction: Any, step: float = 1e-6) -> float:
    """Central difference of a scalar function along `direction`; x and direction are arrays,
    or dicts of arrays with the same keys."""
    if isinstance(x, Mapping):
        plus = {k: v + step * direction[k] for k, v in x.items()}
        minus = {k: v - step * direction[k] for k, v in x.items()}
    else:
        plus, minus = x + step * direction, x - step * direction
    return (function(plus) - function(minus)) / (2 * step)


@contextlib.contextmanager
def float64_layers() -> Iterator[None]:
    """Keras layers created inside compute in float64 (floatx restored afterwards); the
    `float64_layers` fixture of conftest."""
    previous = keras.backend.floatx()
    keras.backend.set_floatx("float64")
    try:
        yield
    finally:
        keras.backend.set_floatx(previous)


# --------------------------------------------------------------------------- a Distiller per method

# The training split of every harness run: example `i` has label EXAMPLE_LABELS[i] (what
# RunInfo.example_labels gives a method that trains on indexed examples, e.g. CRD's banks).
NUM_EXAMPLES = 64
EXAMPLE_LABELS = np.arange(NUM_EXAMPLES) * 7 % 10


def sgd(learning_rate: float = 0.1, momentum: float = 0.9, nesterov: bool = True) -> keras.optimizers.Optimizer:
    return keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=nesterov)


@dataclasses.dataclass
class Harness:
    """A compiled Distiller and what it was built from."""

    distiller: Distiller
    student: keras.Model
    teacher: keras.Model | None  # the frozen teacher's network (None when the method runs none)
    method: DistillationMethod | None
    partner: Partner | None  # the network trained alongside the student (DML's peer)

    @property
    def partner_network(self) -> keras.Model | None:
        return self.partner.network if self.partner is not None else None


def build_distiller(method_name: str | None, params: Mapping[str, Any] | None = None, stage: str = MAIN_STAGE,
                    student: str = "resnet8", teacher: str = "resnet8", run_eagerly: bool = True,
                    optimizer: keras.optimizers.Optimizer | None = None,
                    partner_optimizer: keras.optimizers.Optimizer | None = None, weight_decay: float = 5e-4,
                    weight_decay_scope: str = "all", policy: str | None = None, seed: int = 0, main_epochs: int = 10,
                    compile: bool = True) -> Harness:
    """A Distiller for the catalog method `method_name` (None: CE alone), built as run_fn builds one.

    Seeds Keras; creates the method with `params` and prepares it (RunInfo(main_epochs, seed),
    with EXAMPLE_LABELS when it trains on indexed examples); builds the networks (in the
    mixed-precision `policy` if given): the `student`, a fresh `teacher` run in inference
    mode as the frozen teacher when the method needs one, and the method's partner of the
    teacher's architecture; `weight_decay` is the student's, the partner's and the
    connectors', as in run_fn. Compiled for `stage` by `start_stage` (eager steps unless
    `run_eagerly=False`); `compile=False` leaves that to the test.
    """
    keras.utils.set_random_seed(seed)
    method = methods.create(method_name, params) if method_name else None
    if method is not None:
        method.prepare(RunInfo(main_epochs, seed,
                               example_labels=EXAMPLE_LABELS if method.trains_on == INDEXED_EXAMPLES else None))

    def network(name: str, decay: float) -> keras.Model:
        with precision.policy(policy) if policy else contextlib.nullcontext():
            return models.build_model(name, decay, weight_decay_scope=weight_decay_scope)

    student_network = network(student, weight_decay)
    teacher_network = network(teacher, 0.0) if method is not None and method.needs_teacher else None
    frozen = (lambda images: teacher_network(images, training=False)) if teacher_network is not None else None
    partner = method.partner(lambda: network(teacher, weight_decay)) if method is not None else None
    distiller = Distiller(student_network, method=method, teacher=frozen, partner=partner,
                          connector_layers=models.layer_factory(weight_decay, weight_decay_scope))
    harness = Harness(distiller, student_network, teacher_network, method, partner)
    if compile:
        start_stage(harness, stage, optimizer=optimizer, partner_optimizer=partner_optimizer, run_eagerly=run_eagerly)
    else:
        distiller.stage = stage
    return harness


def start_stage(harness: Harness, stage: str, first_epoch: int = 0,
                optimizer: keras.optimizers.Optimizer | None = None,
                partner_optimizer: keras.optimizers.Optimizer | None = None, run_eagerly: bool = True) -> None:
    """What run_fn does as a stage starts at epoch `first_epoch`: the Distiller's stage, its
    epoch counters, fresh optimizers (SGD 0.1, Nesterov momentum 0.9 unless given) built on
    every variable the stage may train."""
    distiller = harness.distiller
    distiller.stage = stage
    distiller.stage_first_epoch = first_epoch
    distiller.epoch.assign(float(first_epoch))
    if harness.partner is not None and partner_optimizer is None:
        partner_optimizer = sgd()
    distiller.compile(optimizer=sgd() if optimizer is None else optimizer, partner_optimizer=partner_optimizer,
                      run_eagerly=run_eagerly)
    distiller.optimizer.build(distiller.trainable_student_variables())


def batch_for(method: DistillationMethod | None, size: int = 8, seed: int = 0, first_index: int = 0
              ) -> tuple[tf.Tensor, ...]:
    """A normalized-image batch the method trains on: (images, labels), plus the examples'
    indices (first_index, first_index + 1, ...) for a method on indexed examples; labels are
    the examples' EXAMPLE_LABELS."""
    rng = np.random.default_rng(seed)
    images = tf.constant(rng.normal(size=(size, *models.INPUT_SHAPE)), tf.float32)
    indices = (np.arange(size) + first_index) % NUM_EXAMPLES
    labels = tf.constant(EXAMPLE_LABELS[indices], tf.int32)
    if method is not None and method.trains_on == INDEXED_EXAMPLES:
        return images, labels, tf.constant(indices, tf.int32)
    return images, labels


def snapshot(variables) -> list[np.ndarray]:
    return [v.numpy().copy() for v in variables]


def moved(before: list[np.ndarray], variables) -> list[bool]:
    """Per variable, whether it changed since `snapshot`."""
    return [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables)]
