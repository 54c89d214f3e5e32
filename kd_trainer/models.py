"""The networks of the benchmark, with named feature taps for distillation.

Families: the CIFAR ResNets below, wide ResNets (wrn_d_k), VGG with BN (vgg8, vgg13) and
MobileNetV2 (mobile_half), each as defined in RepDistiller's models/ (kd_trainer/model_specs.py;
docs/models.md lists every deliberate difference).

The ResNets are post-activation basic-block ResNets (conv3x3-BN-ReLU-conv3x3-BN, add the
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
    INPUT_SHAPE, MODEL_SPECS, NUM_CLASSES, TAP_NAMES, WEIGHT_DECAY_SCOPES, MobileNetV2Spec, ResNetSpec, VGGSpec,
    WideResNetSpec, model_spec)

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

    def conv_layer(self, channels: int, kernel: int, stride: int, name: str | None = None,
                   use_bias: bool = False) -> keras.layers.Conv2D:
        return keras.layers.Conv2D(channels, kernel, strides=stride, padding="same", use_bias=use_bias,
                                   kernel_initializer=seed_initializer(2.0, "fan_out"),
                                   kernel_regularizer=self.regularizer,
                                   bias_regularizer=self._all_scope_regularizer() if use_bias else None, name=name)

    def bn_layer(self, name: str | None = None) -> keras.layers.BatchNormalization:
        return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                               gamma_regularizer=self._all_scope_regularizer(),
                                               beta_regularizer=self._all_scope_regularizer(), name=name)

    def conv(self, x, channels: int, kernel: int, stride: int, name: str, use_bias: bool = False):
        return self.conv_layer(channels, kernel, stride, name, use_bias)(x)

    def depthwise_conv(self, x, stride: int, name: str):
        # PyTorch's fan-out of a depthwise conv counts 3 * 3 * channels outputs; Keras' counts 3 * 3.
        return keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                                            depthwise_initializer=seed_initializer(2.0 / x.shape[-1], "fan_out"),
                                            depthwise_regularizer=self.regularizer, name=name)(x)

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


def _resnet(layers: _Layers, spec: ResNetSpec, images) -> dict:
    x = keras.layers.ReLU(name="stem_relu")(layers.bn(layers.conv(images, spec.stem_channels, 3, 1, "stem_conv"),
                                                      "stem_bn"))
    taps = {}
    for stage, (channels, stride) in enumerate(zip(spec.stage_channels, (1, 2, 2)), start=1):
        for block in range(spec.blocks_per_stage):
            preact, x = _basic_block(layers, x, channels, stride if block == 0 else 1, f"stage{stage}_block{block + 1}")
        taps[f"stage{stage}_preact"], taps[f"stage{stage}"] = preact, x
    taps["embedding"] = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return taps


def _bn_relu(layers: _Layers, x, name: str):
    """(BN output, its ReLU)."""
    normalised = layers.bn(x, f"{name}_bn")
    return normalised, keras.layers.ReLU(name=f"{name}_relu")(normalised)


def _wide_resnet(layers: _Layers, spec: WideResNetSpec, images) -> dict:
    """Pre-activation blocks (BN-ReLU-conv3x3-BN-ReLU-conv3x3, add). As RepDistiller's wrn.py, a block that
    changes the width applies its first BN-ReLU before the split, so its 1x1 shortcut conv sees the
    activated input. Taps as RepDistiller's: `stage{k}` is the stage's output (a residual sum, no
    ReLU), `stage{k}_preact` the BN that follows it before the next ReLU (its `preact` features)."""
    x = layers.conv(images, 16, 3, 1, "stem_conv")
    stage_outputs, normalised = [], []
    for stage, (channels, stride) in enumerate(zip(spec.stage_channels, (1, 2, 2)), start=1):
        for block in range(spec.blocks_per_stage):
            name = f"stage{stage}_block{block + 1}"
            block_stride = stride if block == 0 else 1
            bn, activated = _bn_relu(layers, x, f"{name}_pre")
            if block == 0 and stage > 1:
                normalised.append(bn)  # the BN before the ReLU that follows the previous stage
            if x.shape[-1] == channels:
                shortcut = x
            else:
                shortcut = layers.conv(activated, channels, 1, block_stride, f"{name}_shortcut_conv")
            y = layers.conv(activated, channels, 3, block_stride, f"{name}_conv1")
            y = _bn_relu(layers, y, f"{name}_mid")[1]
            y = layers.conv(y, channels, 3, 1, f"{name}_conv2")
            x = keras.layers.Add(name=f"{name}_add")([shortcut, y])
        stage_outputs.append(x)
    bn, x = _bn_relu(layers, x, "final")
    normalised.append(bn)
    taps = {}
    for stage, (output, bn) in enumerate(zip(stage_outputs, normalised), start=1):
        taps[f"stage{stage}_preact"], taps[f"stage{stage}"] = bn, output
    taps["embedding"] = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return taps


def _vgg(layers: _Layers, spec: VGGSpec, images) -> dict:
    """Conv3x3 (with bias)-BN-ReLU layers in five blocks; 2x2 max-pooling after blocks 0-2 (RepDistiller
    also pools after block 3 only for 64-pixel inputs). Taps: blocks 1-3, before / after their last ReLU."""
    x, taps = images, {}
    for index, block in enumerate(spec.blocks):
        for layer, channels in enumerate(block):
            x = layers.bn(layers.conv(x, channels, 3, 1, f"block{index}_conv{layer + 1}", use_bias=True),
                          f"block{index}_bn{layer + 1}")
            if layer + 1 < len(block):
                x = keras.layers.ReLU(name=f"block{index}_relu{layer + 1}")(x)
        preact, x = x, keras.layers.ReLU(name=f"block{index}_relu")(x)
        if 1 <= index <= 3:
            taps[f"stage{index}_preact"], taps[f"stage{index}"] = preact, x
        if index < 3:
            x = keras.layers.MaxPooling2D(2, name=f"pool{index}")(x)
    taps["embedding"] = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return taps


def _mobilenet_v2(layers: _Layers, spec: MobileNetV2Spec, images) -> dict:
    """Inverted residuals (1x1 expand-BN-ReLU, depthwise 3x3-BN-ReLU, 1x1 project-BN, add when the shape
    is kept). Block outputs have no ReLU (linear bottleneck), so `stage{k}` and `stage{k}_preact` coincide."""
    x = keras.layers.ReLU(name="stem_relu")(layers.bn(layers.conv(images, int(32 * spec.width), 3, 2, "stem_conv"),
                                                      "stem_bn"))
    taps = {}
    for group, (expansion, channels, blocks, stride) in enumerate(spec.group_settings()):
        for block in range(blocks):
            name = f"group{group}_block{block + 1}"
            block_stride = stride if block == 0 else 1
            hidden = x.shape[-1] * expansion
            y = layers.conv(x, hidden, 1, 1, f"{name}_expand")
            y = keras.layers.ReLU(name=f"{name}_expand_relu")(layers.bn(y, f"{name}_expand_bn"))
            y = layers.depthwise_conv(y, block_stride, f"{name}_depthwise")
            y = keras.layers.ReLU(name=f"{name}_depthwise_relu")(layers.bn(y, f"{name}_depthwise_bn"))
            y = layers.bn(layers.conv(y, channels, 1, 1, f"{name}_project"), f"{name}_project_bn")
            x = keras.layers.Add(name=f"{name}_add")([x, y]) if block_stride == 1 and x.shape[-1] == channels else y
        if group in spec.tap_groups:
            stage = spec.tap_groups.index(group) + 1
            taps[f"stage{stage}_preact"] = taps[f"stage{stage}"] = x
    x = layers.conv(x, spec.last_channels, 1, 1, "head_conv")
    x = keras.layers.ReLU(name="head_relu")(layers.bn(x, "head_bn"))
    taps["embedding"] = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return taps


_BUILDERS = {ResNetSpec: _resnet, WideResNetSpec: _wide_resnet, VGGSpec: _vgg, MobileNetV2Spec: _mobilenet_v2}


def build_model(name: str, weight_decay: float = 5e-4, num_classes: int = NUM_CLASSES,
                weight_decay_scope: str = "all") -> keras.Model:
    """Builds the named network as a functional Keras model returning the tap dict."""
    spec = model_spec(name)
    layers = _Layers(weight_decay, weight_decay_scope)
    images = keras.Input(INPUT_SHAPE, name="images")
    taps = _BUILDERS[type(spec)](layers, spec, images)
    taps["logits"] = layers.dense(taps["embedding"], num_classes, "logits")
    return keras.Model(images, {tap: taps[tap] for tap in TAP_NAMES}, name=name)


def count_weights_without_bn(model: keras.Model) -> int:
    """Weights + biases of conv and dense layers (the seed's parameter count)."""
    return sum(int(w.shape.num_elements()) for layer in model.layers
               if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) for w in layer.weights)
