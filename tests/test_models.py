import numpy as np
import pytest
import tensorflow as tf

from kd_trainer import models


@pytest.mark.parametrize("name, expected", [
    # The seed's published counts (weights + biases without BN).
    ("seed_resnet8", 1_230_788),
    ("seed_resnet32", 7_423_940),
    ("resnet8x4", 1_230_788),
    ("resnet32x4", 7_423_940),
    # Standard CIFAR ResNets (16/32/64 channels, projection shortcuts): ~0.08 M and ~0.47 M.
    ("resnet8", 83_220),
    ("resnet20", 276_756),
    ("resnet32", 470_292),
])
def test_parameter_counts(name, expected):
    assert models.count_weights_without_bn(models.build_model(name)) == expected


@pytest.mark.parametrize("name", sorted(models.MODEL_SPECS))
def test_depth_matches_name(name):
    spec = models.model_spec(name)
    assert str(spec.depth) in name


@pytest.mark.parametrize("name, widths", [("resnet8", (16, 32, 64)), ("seed_resnet8", (64, 128, 256))])
def test_taps_names_and_shapes(name, widths):
    model = models.build_model(name)
    taps = model(tf.zeros((2, 32, 32, 3)), training=False)
    assert tuple(taps) == models.TAP_NAMES
    for stage, (channels, size) in enumerate(zip(widths, (32, 16, 8)), start=1):
        assert taps[f"stage{stage}"].shape == (2, size, size, channels)
        assert taps[f"stage{stage}_preact"].shape == (2, size, size, channels)
    assert taps["embedding"].shape == (2, widths[-1])
    assert taps["logits"].shape == (2, models.NUM_CLASSES)


def test_preact_and_post_relu_taps_differ_by_the_relu():
    model = models.build_model("resnet8")
    taps = model(tf.random.normal((4, 32, 32, 3)), training=False)
    for stage in (1, 2, 3):
        preact = taps[f"stage{stage}_preact"].numpy()
        np.testing.assert_allclose(taps[f"stage{stage}"].numpy(), np.maximum(preact, 0), atol=1e-6)
        assert (preact < 0).any()
    np.testing.assert_allclose(taps["embedding"].numpy(), taps["stage3"].numpy().mean(axis=(1, 2)), atol=1e-5)


def test_layers_get_independent_initial_weights():
    model = models.build_model("resnet8")
    a = model.get_layer("stage1_block1_conv1").kernel.numpy()
    b = model.get_layer("stage1_block1_conv2").kernel.numpy()
    assert not np.allclose(a, b)


def test_weight_decay_is_half_l2_of_kernels():
    model = models.build_model("resnet8", weight_decay=5e-4, weight_decay_scope="kernels")
    kernels = [l.kernel.numpy() for l in model.layers if hasattr(l, "kernel")]
    expected = 5e-4 / 2 * sum(float(np.sum(k.astype(np.float64) ** 2)) for k in kernels)
    assert float(tf.add_n(model.losses)) == pytest.approx(expected, rel=1e-5)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'resnet9'.*resnet8x4"):
        models.build_model("resnet9")
