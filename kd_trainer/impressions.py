"""Data impressions (Nayak et al., ICML 2019): a transfer set synthesised from the teacher alone.

1. Class similarity: the columns of the teacher's final dense kernel (one weight vector per
   class) are L2-normalised, their cosines form a K x K matrix, and each row is min-max
   scaled to [0, 1] (row k, c_k, is 1 at k and 0 at the class least similar to k).
2. Soft targets: impression i stands for class k = i mod K with concentration scale
   beta = betas[(i // K) mod len(betas)] (equal numbers per class, the scales alternating),
   and its target is y ~ Dirichlet(beta * c_k).
3. Inputs: from uniform pixel noise, Adam moves each image so that the cross-entropy between
   y and softmax(teacher logits / T) falls (T = 20), plus optionally `image_l2 * mean(x^2)`
   on the normalised image x (the seed author's variant). A batch of impressions is
   optimised together with every iteration inside one tf.function; the teacher runs in
   inference mode, so the impressions of a batch do not interact.

Impressions leave here in pixel units (the 0-255 scale of CIFAR images, float, neither
clipped nor quantised), so `data.normalize` maps them back to exactly what the teacher saw
and the student's input pipeline treats them like decoded images.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Mapping

import numpy as np
import tensorflow as tf

from kd_trainer import data
from kd_trainer.config import ImpressionOptions
from kd_trainer.model_specs import DEFAULT_INPUT_NORMALIZATION

TeacherFn = Callable[[tf.Tensor], Mapping[str, tf.Tensor]]
# Dirichlet concentrations must be positive; min-max scaling gives each class's least similar
# class exactly 0, which this floor turns into a share of about 1e-6 / sum(alpha).
MIN_CONCENTRATION = 1e-6
# Adam's moment decay rates and epsilon (Kingma & Ba; also Keras' defaults).
ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-8


@dataclasses.dataclass(frozen=True)
class Impressions:
    """Synthesised inputs with what they were optimised for."""

    images: np.ndarray  # [N, 32, 32, 3] float32 pixel values on the 0-255 scale (unclipped)
    targets: np.ndarray  # [N, K] float32 soft targets (rows sum to 1)
    classes: np.ndarray  # [N] int64: the class whose similarity row parametrised the target
    betas: np.ndarray  # [N] float32: the concentration scale of the target
    final_loss: np.ndarray  # [N] the teacher's cross-entropy against the target after optimisation
    loss_curve: np.ndarray  # [iterations + 1] mean cross-entropy over all impressions, per iteration


def class_similarity(kernel: np.ndarray) -> np.ndarray:
    """Final dense kernel [D, K] -> [K, K] class similarity, rows min-max scaled to [0, 1]."""
    kernel = np.asarray(kernel, np.float64)
    unit = kernel / np.linalg.norm(kernel, axis=0, keepdims=True)
    cosine = unit.T @ unit
    low, high = cosine.min(axis=1, keepdims=True), cosine.max(axis=1, keepdims=True)
    if np.any(high - low <= 0):
        raise ValueError("class similarity is undefined: a class's weight vector is parallel to every other's")
    return (cosine - low) / (high - low)


def concentrations(similarity: np.ndarray, betas: tuple[float, ...]) -> np.ndarray:
    """[len(betas), K, K] Dirichlet parameters: entry (b, k) is betas[b] * c_k, floored at MIN_CONCENTRATION."""
    return np.maximum(np.asarray(betas, np.float64)[:, None, None] * similarity[None], MIN_CONCENTRATION)


def layout(num_impressions: int, num_classes: int, num_betas: int) -> tuple[np.ndarray, np.ndarray]:
    """(class, beta index) of every impression: classes cycle fastest, then the scales."""
    index = np.arange(num_impressions)
    return index % num_classes, (index // num_classes) % num_betas


def sample_targets(alphas: np.ndarray, classes: np.ndarray, beta_index: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """[N, K] soft targets, y_i ~ Dirichlet(alphas[beta_index[i], classes[i]]); one draw per (scale, class) group."""
    targets = np.empty((len(classes), alphas.shape[-1]))
    for b, k in sorted(set(zip(beta_index.tolist(), classes.tolist()))):
        members = np.flatnonzero((beta_index == b) & (classes == k))
        targets[members] = rng.dirichlet(alphas[b, k], size=len(members))
    return targets


def impression_loss(logits: tf.Tensor, targets: tf.Tensor, temperature: float) -> tf.Tensor:
    """Per impression: cross-entropy between its target and softmax(logits / T)."""
    return -tf.reduce_sum(targets * tf.nn.log_softmax(logits / temperature), axis=-1)


def make_optimiser(teacher: TeacherFn, options: ImpressionOptions
                   ) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
    """A tf.function (normalised images, targets) -> (optimised images, final per-impression
    loss, mean loss before each iteration and after the last) running all iterations in-graph."""
    iterations, rate, temperature, image_l2 = (options.iterations, options.learning_rate, options.temperature,
                                               options.image_l2)

    def objective(images: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        loss = impression_loss(teacher(images)["logits"], targets, temperature)
        # Summed over impressions: each impression's gradient is its own objective's.
        penalty = image_l2 * tf.reduce_sum(tf.reduce_mean(tf.square(images), axis=[1, 2, 3]))
        return loss, tf.reduce_sum(loss) + penalty

    @tf.function(input_signature=[tf.TensorSpec([None, *data.IMAGE_SHAPE], tf.float32),
                                  tf.TensorSpec([None, None], tf.float32)])
    def optimise(images, targets):
        first, second = tf.zeros_like(images), tf.zeros_like(images)
        curve = tf.TensorArray(tf.float32, size=iterations + 1)
        for step in tf.range(iterations):
            with tf.GradientTape() as tape:
                tape.watch(images)
                loss, total = objective(images, targets)
            gradient = tape.gradient(total, images)
            curve = curve.write(step, tf.reduce_mean(loss))
            t = tf.cast(step + 1, tf.float32)
            first = ADAM_BETA_1 * first + (1 - ADAM_BETA_1) * gradient
            second = ADAM_BETA_2 * second + (1 - ADAM_BETA_2) * tf.square(gradient)
            images = images - rate * (first / (1 - ADAM_BETA_1 ** t)) / (
                tf.sqrt(second / (1 - ADAM_BETA_2 ** t)) + ADAM_EPSILON)
        loss, _ = objective(images, targets)
        return images, loss, curve.write(iterations, tf.reduce_mean(loss)).stack()

    return optimise


def generate(teacher: TeacherFn, kernel: np.ndarray, options: ImpressionOptions, seed: int,
             normalization: str = DEFAULT_INPUT_NORMALIZATION) -> Impressions:
    """Synthesises `options.num_impressions` impressions from the teacher and its final dense kernel;
    `normalization` is the teacher's (export.input_normalization)."""
    similarity = class_similarity(kernel)
    classes, beta_index = layout(options.num_impressions, similarity.shape[0], len(options.betas))
    rng = np.random.default_rng(seed)
    targets = sample_targets(concentrations(similarity, options.betas), classes, beta_index, rng).astype(np.float32)
    noise = rng.uniform(0.0, 255.0, size=(options.num_impressions, *data.IMAGE_SHAPE)).astype(np.float32)
    optimise = make_optimiser(teacher, options)
    images, losses, curve = [], [], np.zeros(options.iterations + 1)
    for start in range(0, options.num_impressions, options.batch_size):
        batch = slice(start, start + options.batch_size)
        optimised, loss, batch_curve = optimise(data.normalize(noise[batch], normalization), targets[batch])
        images.append(data.denormalize(optimised, normalization).numpy())
        losses.append(loss.numpy())
        curve += batch_curve.numpy() * len(loss) / options.num_impressions
        logging.info("Data impressions %d-%d of %d: teacher loss %.4f -> %.4f", start + 1, start + len(loss),
                     options.num_impressions, batch_curve[0], batch_curve[-1])
    return Impressions(images=np.concatenate(images), targets=targets, classes=classes.astype(np.int64),
                       betas=np.asarray(options.betas, np.float32)[beta_index], final_loss=np.concatenate(losses),
                       loss_curve=curve)
