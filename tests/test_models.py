import numpy as np
import pytest
import tensorflow as tf

from kd_trainer import model_specs, models


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


@pytest.mark.parametrize("name", sorted(n for n in models.MODEL_SPECS if n != "mobile_half"))
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


# Trainable parameters (weights, biases, BN scale and offset) of RepDistiller's definitions (models/*.py at
# b84f547), counted by hand from each layer's shape, independently of our Keras code: what PyTorch's
# sum(p.numel() for p in model.parameters()) gives for num_classes=100.
def _conv(cin, cout, k=3, bias=False, groups=1):
    return k * k * cin // groups * cout + (cout if bias else 0)


def _bn(c):
    return 2 * c


def _fc(cin, cout=100):
    return cin * cout + cout


def repdistiller_resnet(depth, filters):
    n, total, inplanes = (depth - 2) // 6, _conv(3, filters[0]) + _bn(filters[0]), filters[0]
    for planes, stride in zip(filters[1:], (1, 2, 2)):
        for block in range(n):
            s = stride if block == 0 else 1
            total += _conv(inplanes, planes) + _bn(planes) + _conv(planes, planes) + _bn(planes)
            if s != 1 or inplanes != planes:
                total += _conv(inplanes, planes, k=1) + _bn(planes)
            inplanes = planes
    return total + _fc(filters[-1])


def repdistiller_wrn(depth, widen):
    n, channels = (depth - 4) // 6, [16, 16 * widen, 32 * widen, 64 * widen]
    total, inplanes = _conv(3, 16), 16
    for planes in channels[1:]:
        for block in range(n):
            cin = inplanes if block == 0 else planes
            total += _bn(cin) + _conv(cin, planes) + _bn(planes) + _conv(planes, planes)
            total += _conv(cin, planes, k=1) if cin != planes else 0
        inplanes = planes
    return total + _bn(channels[-1]) + _fc(channels[-1])


def repdistiller_vgg(cfg):
    total, cin = 0, 3
    for block in cfg:
        for cout in block:
            total += _conv(cin, cout, bias=True) + _bn(cout)
            cin = cout
    return total + _fc(512)


def repdistiller_mobilenet_v2(t, width):
    settings = [[1, 16, 1, 1], [t, 24, 2, 1], [t, 32, 3, 2], [t, 64, 4, 2], [t, 96, 3, 1], [t, 160, 3, 2],
                [t, 320, 1, 1]]
    cin = int(32 * width)
    total = _conv(3, cin) + _bn(cin)
    for expansion, c, n, _ in settings:
        cout = int(c * width)
        for _ in range(n):
            hidden = cin * expansion
            total += _conv(cin, hidden, k=1) + _bn(hidden) + _conv(hidden, hidden, groups=hidden) + _bn(hidden)
            total += _conv(hidden, cout, k=1) + _bn(cout)
            cin = cout
    return total + _conv(cin, 1280, k=1) + _bn(1280) + _fc(1280)


@pytest.mark.parametrize("name, expected", [
    ("resnet8", repdistiller_resnet(8, [16, 16, 32, 64])),
    ("resnet20", repdistiller_resnet(20, [16, 16, 32, 64])),
    ("resnet56", repdistiller_resnet(56, [16, 16, 32, 64])),
    ("resnet110", repdistiller_resnet(110, [16, 16, 32, 64])),
    ("resnet8x4", repdistiller_resnet(8, [32, 64, 128, 256])),
    ("resnet32x4", repdistiller_resnet(32, [32, 64, 128, 256])),
    ("wrn_16_2", repdistiller_wrn(16, 2)),
    ("wrn_40_1", repdistiller_wrn(40, 1)),
    ("wrn_40_2", repdistiller_wrn(40, 2)),
    ("vgg8", repdistiller_vgg([[64], [128], [256], [512], [512]])),
    ("vgg13", repdistiller_vgg([[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]])),
    ("mobile_half", repdistiller_mobilenet_v2(6, 0.5)),
])
def test_trainable_parameters_equal_repdistillers(name, expected):
    model = models.build_model(name)
    assert sum(int(v.shape.num_elements()) for v in model.trainable_variables) == expected


def test_seed_networks_are_repdistillers_x4_resnets():
    """The seed's "doubled" ResNet8/32 and RepDistiller's resnet8x4/32x4 are one network: one spec each."""
    assert models.MODEL_SPECS["seed_resnet8"] is models.MODEL_SPECS["resnet8x4"]
    assert models.MODEL_SPECS["seed_resnet32"] is models.MODEL_SPECS["resnet32x4"]


@pytest.mark.parametrize("name", sorted(models.MODEL_SPECS))
def test_tap_shapes_from_the_spec_are_the_built_ones(name):
    taps = models.build_model(name)(tf.zeros((2, 32, 32, 3)), training=False)
    assert tuple(taps) == models.TAP_NAMES
    for tap, shape in model_specs.tap_shapes(name).items():
        assert tuple(taps[tap].shape) == (2, *shape), tap
