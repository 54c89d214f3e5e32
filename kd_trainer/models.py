"""CIFAR ResNets with named feature taps for distillation.

All models are post-activation basic-block ResNets (conv3x3-BN-ReLU-conv3x3-BN, add the
shortcut, ReLU) with a 1x1 conv + BN projection shortcut where the stride or the width
changes, three stages of strides 1, 2, 2, global average pooling and a dense classifier:
6n+2 layers for n blocks per stage.

Families (names are explicit so the wide and the standard nets are never confused):
  resnet8 ... resnet110     standard CIFAR widths: stem 16, stages 16/32/64
  resnet8x4, resnet32x4     RepDistiller's wide nets: stem 32, stages 64/128/256
  seed_resnet8/32           the seed project's "doubled" ResNet8/32 (its results table). They
                            are architecturally identical to resnet8x4 / resnet32x4
                            (1,230,788 and 7,423,940 weights + biases without BN) and share
                            their definition.

Every model maps normalized images [B, 32, 32, 3] to a dict of taps:
  stage{1,2,3}_preact  output of the stage's last block before its final ReLU
  stage{1,2,3}         the same after the ReLU
  embedding            global-average-pooled features
  logits               class scores
"""

from __future__ import annotations

import tf_keras as keras

from kd_trainer.model_specs import (  # noqa: F401 (re-exported: models.MODEL_SPECS etc.)
    INPUT_SHAPE, MODEL_SPECS, NUM_CLASSES, TAP_NAMES, WEIGHT_DECAY_SCOPES, ResNetSpec, model_spec)

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
# Keras' truncated normal is cut at 2 standard deviations; this is the standard deviation of
# a unit normal so truncated (Keras divides by it to keep the requested variance).
_TRUNCATED_UNIT_STD = 0.87962566103423978
# The seed (tf.contrib.layers.variance_scaling_initializer, uniform=False) draws a normal cut
# at 2 standard deviations with stddev sqrt(1.3 * factor / n).
_SEED_TRUNCATION_FACTOR = 1.3


def seed_initializer(factor: float, mode: str) -> keras.initializers.Initializer:
    """The seed's initializer: truncated normal (cut at 2 stddev), stddev sqrt(1.3 * factor / n).

    Keras' truncated VarianceScaling uses stddev sqrt(scale / n) / 0.8796..., so this scale
    gives exactly the seed's standard deviation. A fresh instance per layer: one shared
    unseeded instance gives identical weights.
    """
    scale = _SEED_TRUNCATION_FACTOR * factor * _TRUNCATED_UNIT_STD ** 2
    return keras.initializers.VarianceScaling(scale, mode=mode, distribution="truncated_normal")


class _Layers:
    """Layer factory: the one place that decides the initializer and the weight decay of a
    network and of the methods' connectors.

    Initializers are the seed's (nets/ResNet.py:11, 63): conv kernels variance scaling 2.0 on
    fan-out, the dense kernel 1.0 on fan-in, both truncated normal; dense bias zeros. Weight
    decay is wd * sum(w^2) / 2 (tf.contrib's l2_regularizer) on the variables of
    `weight_decay_scope` (model_specs.WEIGHT_DECAY_SCOPES): `all` as in the seed, or `kernels`.
    """

    def __init__(self, weight_decay: float, weight_decay_scope: str = "all"):
        if weight_decay_scope not in WEIGHT_DECAY_SCOPES:
            raise ValueError(f"unknown weight_decay_scope {weight_decay_scope!r}; valid: {', '.join(WEIGHT_DECAY_SCOPES)}")
        self.regularizer = keras.regularizers.L2(weight_decay / 2) if weight_decay else None
        self.decays_all = weight_decay_scope == "all"

    def _all_scope_regularizer(self) -> keras.regularizers.Regularizer | None:
        """The regularizer of BN gamma/beta and biases: decayed only in the `all` scope."""
        return self.regularizer if self.decays_all else None

    def conv_layer(self, channels: int, kernel: int, stride: int, name: str | None = None) -> keras.layers.Conv2D:
        return keras.layers.Conv2D(channels, kernel, strides=stride, padding="same", use_bias=False,
                                   kernel_initializer=seed_initializer(2.0, "fan_out"),
                                   kernel_regularizer=self.regularizer, name=name)

    def bn_layer(self, name: str | None = None) -> keras.layers.BatchNormalization:
        return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                               gamma_regularizer=self._all_scope_regularizer(),
                                               beta_regularizer=self._all_scope_regularizer(), name=name)

    def conv(self, x, channels: int, kernel: int, stride: int, name: str):
        return self.conv_layer(channels, kernel, stride, name)(x)

    def bn(self, x, name: str):
        return self.bn_layer(name)(x)

    def dense(self, x, units: int, name: str):
        return keras.layers.Dense(units, kernel_initializer=seed_initializer(1.0, "fan_in"),
                                  kernel_regularizer=self.regularizer, bias_regularizer=self._all_scope_regularizer(),
                                  name=name)(x)


def layer_factory(weight_decay: float, weight_decay_scope: str = "all") -> _Layers:
    """The layer factory of a network trained with this weight decay (methods build their
    connectors with it, so they share the network's initializer and decay)."""
    return _Layers(weight_decay, weight_decay_scope)


def _basic_block(layers: _Layers, x, channels: int, stride: int, name: str):
    """Returns (pre-activation sum, post-ReLU output) of one basic block."""
    shortcut = x
    if stride != 1 or x.shape[-1] != channels:
        shortcut = layers.bn(layers.conv(x, channels, 1, stride, f"{name}_proj_conv"), f"{name}_proj_bn")
    y = layers.conv(x, channels, 3, stride, f"{name}_conv1")
    y = keras.layers.ReLU(name=f"{name}_relu1")(layers.bn(y, f"{name}_bn1"))
    y = layers.bn(layers.conv(y, channels, 3, 1, f"{name}_conv2"), f"{name}_bn2")
    preact = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return preact, keras.layers.ReLU(name=f"{name}_relu2")(preact)


def build_model(name: str, weight_decay: float = 5e-4, num_classes: int = NUM_CLASSES,
                weight_decay_scope: str = "all") -> keras.Model:
    """Builds the named ResNet as a functional Keras model returning the tap dict."""
    spec = model_spec(name)
    layers = _Layers(weight_decay, weight_decay_scope)
    images = keras.Input(INPUT_SHAPE, name="images")
    x = keras.layers.ReLU(name="stem_relu")(layers.bn(layers.conv(images, spec.stem_channels, 3, 1, "stem_conv"),
                                                      "stem_bn"))
    taps = {}
    for stage, (channels, stride) in enumerate(zip(spec.stage_channels, (1, 2, 2)), start=1):
        for block in range(spec.blocks_per_stage):
            preact, x = _basic_block(layers, x, channels, stride if block == 0 else 1, f"stage{stage}_block{block + 1}")
        taps[f"stage{stage}_preact"], taps[f"stage{stage}"] = preact, x
    taps["embedding"] = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    taps["logits"] = layers.dense(taps["embedding"], num_classes, "logits")
    return keras.Model(images, {tap: taps[tap] for tap in TAP_NAMES}, name=name)


def count_weights_without_bn(model: keras.Model) -> int:
    """Weights + biases of conv and dense layers (the seed's parameter count)."""
    return sum(int(w.shape.num_elements()) for layer in model.layers
               if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) for w in layer.weights)
