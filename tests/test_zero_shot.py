"""Zero-shot KD: data impressions against NumPy, the DataImpressions artifact, the zero_shot
student, the presets and the pipeline's wiring (the end-to-end run is in test_zero_shot_e2e.py)."""

import json
import os
import types

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from tfx.types import artifact_utils, standard_artifacts

from components import cifar_example_gen, data_impressions
from kd_trainer import data, export, impressions, methods, models
from kd_trainer.contract import (HISTORY_FILE, IMPRESSION_BETA_KEY, IMPRESSION_CLASS_KEY, IMPRESSION_IMAGE_KEY,
                                 IMPRESSION_TARGET_KEY, SERVING_FOLDER, SERVING_SIGNATURE)
from kd_trainer.run_fn import run_fn
from pipelines import presets
from pipelines.pipeline import create_pipeline
from method_harness import np_kl, np_softmax


def np_class_similarity(kernel):
    """Cosine of every pair of class weight vectors (kernel columns), each row min-max scaled, with loops."""
    k = kernel.shape[1]
    cosine = np.array([[kernel[:, i] @ kernel[:, j] / (np.linalg.norm(kernel[:, i]) * np.linalg.norm(kernel[:, j]))
                        for j in range(k)] for i in range(k)])
    return np.array([(row - row.min()) / (row.max() - row.min()) for row in cosine])


def np_impression_loss(logits, targets, temperature):
    return -np.sum(targets * np.log(np_softmax(logits / temperature)), axis=-1)


# --------------------------------------------------------------------------- generation

def test_class_similarity_matches_numpy():
    kernel = np.random.default_rng(0).normal(size=(7, 5))
    similarity = impressions.class_similarity(kernel)
    np.testing.assert_allclose(similarity, np_class_similarity(kernel), rtol=1e-12, atol=1e-12)
    assert np.allclose(np.diag(similarity), 1.0) and np.allclose(similarity.min(axis=1), 0.0)


def test_class_similarity_rejects_a_degenerate_classifier():
    with pytest.raises(ValueError, match="parallel to every other"):
        impressions.class_similarity(np.ones((4, 3)))


def test_dirichlet_parameters_and_layout_match_numpy():
    kernel = np.random.default_rng(1).normal(size=(6, 4))
    betas = (1.0, 0.1)
    alphas = impressions.concentrations(impressions.class_similarity(kernel), betas)
    similarity = np_class_similarity(kernel)
    for b, beta in enumerate(betas):
        for k in range(4):
            for j in range(4):
                expected = beta * similarity[k, j] if similarity[k, j] > 0 else impressions.MIN_CONCENTRATION
                assert alphas[b, k, j] == pytest.approx(expected, rel=1e-12), (b, k, j)
    # Classes cycle fastest, then the concentration scales: rounds of one impression per class.
    classes, beta_index = impressions.layout(11, 4, 2)
    expected = [(k, r % 2) for r in range(3) for k in range(4)][:11]
    assert list(zip(classes.tolist(), beta_index.tolist())) == expected


def test_targets_follow_their_dirichlet():
    """Empirical mean and variance per (scale, class) group against the Dirichlet's moments."""
    alphas = np.array([[[2.0, 0.5, 1.0], [0.3, 3.0, 0.7]], [[0.2, 0.05, 0.1], [0.03, 0.3, 0.07]]])
    classes, beta_index = impressions.layout(4 * 6000, 2, 2)
    targets = impressions.sample_targets(alphas, classes, beta_index, np.random.default_rng(2))
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-12)
    for b in range(2):
        for k in range(2):
            group = targets[(classes == k) & (beta_index == b)]
            alpha = alphas[b, k]
            total = alpha.sum()
            np.testing.assert_allclose(group.mean(axis=0), alpha / total, atol=0.015)
            variance = alpha * (total - alpha) / (total ** 2 * (total + 1))
            np.testing.assert_allclose(group.var(axis=0), variance, rtol=0.1, atol=2e-3)
    again = impressions.sample_targets(alphas, classes, beta_index, np.random.default_rng(2))
    np.testing.assert_array_equal(targets, again)


def test_impression_loss_matches_numpy():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(5, 10)) * 30
    targets = rng.dirichlet(np.ones(10), size=5)
    got = impressions.impression_loss(tf.constant(logits), tf.constant(targets), 20.0).numpy()
    np.testing.assert_allclose(got, np_impression_loss(logits, targets, 20.0), rtol=1e-10)


def test_optimiser_is_adam_on_the_impression_objective():
    """A linear teacher (logits = flatten(x) W) has the gradient (softmax(z/T) - y) W^T / T
    + image_l2 * 2x / n; three Adam steps in NumPy must give the same images and losses."""
    rng = np.random.default_rng(4)
    num, classes, temperature, image_l2, rate = 3, 5, 2.0, 0.5, 0.05
    weights = rng.normal(size=(32 * 32 * 3, classes)) * 0.05
    images = rng.normal(size=(num, 32, 32, 3))
    targets = rng.dirichlet(np.ones(classes), size=num)

    def teacher(x):
        return {"logits": tf.reshape(x, [tf.shape(x)[0], -1]) @ tf.constant(weights, tf.float32)}

    options = impressions.ImpressionOptions(num_impressions=num, iterations=3, learning_rate=rate,
                                            temperature=temperature, image_l2=image_l2)
    optimised, final, curve = impressions.make_optimiser(teacher, options)(
        tf.constant(images, tf.float32), tf.constant(targets, tf.float32))

    x, m, v, losses = images.copy(), np.zeros_like(images), np.zeros_like(images), []
    for t in range(1, 4):
        logits = x.reshape(num, -1) @ weights
        losses.append(np_impression_loss(logits, targets, temperature).mean())
        gradient = ((np_softmax(logits / temperature) - targets) / temperature) @ weights.T
        gradient = gradient.reshape(x.shape) + image_l2 * 2 * x / x[0].size
        m = 0.9 * m + 0.1 * gradient
        v = 0.999 * v + 0.001 * gradient ** 2
        x = x - rate * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    last = np_impression_loss(x.reshape(num, -1) @ weights, targets, temperature)
    np.testing.assert_allclose(optimised.numpy(), x, atol=1e-4)
    np.testing.assert_allclose(final.numpy(), last, rtol=1e-4)
    np.testing.assert_allclose(curve.numpy(), [*losses, last.mean()], rtol=1e-4)


def random_teacher(seed: int = 0):
    keras.utils.set_random_seed(seed)
    return models.build_model("resnet8")


def test_impressions_lower_the_teachers_loss_against_their_targets():
    model = random_teacher()

    def teacher(x):
        # Logits as confident as a trained network's (an untrained one's barely move at T = 20).
        return {"logits": 20 * model(x, training=False)["logits"]}

    kernel = model.get_layer("logits").kernel.numpy()
    options = impressions.ImpressionOptions(num_impressions=12, iterations=15, learning_rate=0.3, batch_size=8)
    generated = impressions.generate(teacher, kernel, options, seed=0)
    assert generated.images.shape == (12, 32, 32, 3) and generated.targets.shape == (12, 100)
    curve = generated.loss_curve
    assert len(curve) == 16 and np.all(np.diff(curve) < 0), curve
    # The cross-entropy's excess over its minimum (the targets' entropy), i.e. the KL, falls by a fifth
    # (to 0.74 of its start with the seed initializer's random teacher, measured 2026-11-30).
    entropy = -np.sum(generated.targets * np.log(np.maximum(generated.targets, 1e-30)), axis=1).mean()
    assert curve[-1] - entropy < 0.8 * (curve[0] - entropy), (curve, entropy)
    # The stored pixel values are what was optimised: the teacher's loss on them is the final loss.
    logits = teacher(data.normalize(generated.images))["logits"].numpy()
    np.testing.assert_allclose(np_impression_loss(logits, generated.targets, 20.0), generated.final_loss, rtol=1e-4)
    # Fewer impressions than classes: one per class, all from the first concentration scale.
    assert generated.classes.tolist() == list(range(12)) and generated.betas.tolist() == [1.0] * 12


@pytest.mark.parametrize("field, value, message", [
    ("num_impressions", 0, r"num_impressions must be an integer in \[1, 1000000\]"),
    ("iterations", 1.5, r"iterations must be an integer in \[1, 100000\]"),
    ("learning_rate", 0.0, r"learning_rate must be a finite number in \(0, 10\]"),
    ("temperature", -1.0, r"temperature must be a finite number in \[0.01, 1000\]"),
    ("betas", (), "betas must be a non-empty list"),
    ("betas", (1.0, -0.1), r"betas must be a non-empty list of concentration scales in \(0, 1000\]"),
    ("image_l2", -1.0, r"image_l2 must be a finite number in \[0, 1e\+06\]"),
])
def test_invalid_options_name_the_option(field, value, message):
    with pytest.raises(ValueError, match=message):
        impressions.ImpressionOptions(**{field: value})


# --------------------------------------------------------------------------- the component

@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("teacher") / SERVING_FOLDER)
    export.save(random_teacher(1), path)
    return path


@pytest.fixture(scope="module")
def real_examples(tmp_path_factory, tiny_archive):
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path_factory.mktemp("real") / "examples")
    cifar_example_gen.Executor().Do({}, {"examples": [examples]}, {
        "data_dir": str(tiny_archive), "allow_download": 0, "seed": 0, "require_official_sizes": 0,
        "train_per_class": None, "eval_per_class": None})
    return examples


IMPRESSION_OPTIONS = impressions.ImpressionOptions(num_impressions=70, iterations=3, learning_rate=0.05,
                                                   batch_size=32)


@pytest.fixture(scope="module")
def impression_examples(tmp_path_factory, teacher_dir, real_examples):
    model = standard_artifacts.Model()
    model.uri = os.path.dirname(teacher_dir)
    output = standard_artifacts.Examples()
    output.uri = str(tmp_path_factory.mktemp("impressions") / "impressions")
    data_impressions.Executor().Do({"model": [model], "examples": [real_examples]}, {"impressions": [output]},
                                   data_impressions.exec_properties(IMPRESSION_OPTIONS, seed=3))
    return output


def split_files(examples, split):
    return sorted(tf.io.gfile.glob(os.path.join(artifact_utils.get_split_uri([examples], split), "*")))


def test_classifier_kernel_is_read_from_the_export(teacher_dir):
    _, loaded = export.load_teacher(teacher_dir)
    np.testing.assert_array_equal(export.classifier_kernel(loaded).numpy(),
                                  random_teacher(1).get_layer("logits").kernel.numpy())


def test_artifact_has_the_declared_schema(impression_examples, real_examples):
    assert artifact_utils.decode_split_names(impression_examples.split_names) == ["train", "eval"]
    assert impression_examples.get_string_custom_property("file_format") == "tfrecords_gzip"
    records = [tf.train.Example.FromString(r.numpy()) for r in
               tf.data.TFRecordDataset(split_files(impression_examples, "train"), compression_type="GZIP")]
    assert len(records) == 70
    kinds = {IMPRESSION_IMAGE_KEY: ("float_list", 3072), IMPRESSION_TARGET_KEY: ("float_list", 100),
             IMPRESSION_CLASS_KEY: ("int64_list", 1), IMPRESSION_BETA_KEY: ("float_list", 1)}
    assert set(kinds) == set(data.IMPRESSION_FEATURES)
    for i, record in enumerate(records):
        features = record.features.feature
        assert set(features) == set(kinds)
        for name, (kind, length) in kinds.items():
            assert features[name].WhichOneof("kind") == kind and len(getattr(features[name], kind).value) == length
        assert sum(features[IMPRESSION_TARGET_KEY].float_list.value) == pytest.approx(1.0, abs=1e-5)
        assert features[IMPRESSION_CLASS_KEY].int64_list.value[0] == i % 100
        assert features[IMPRESSION_BETA_KEY].float_list.value[0] == pytest.approx((1.0, 0.1)[(i // 100) % 2])
    # The eval split is the real one, byte for byte; the real training split is not copied.
    copies, originals = split_files(impression_examples, "eval"), split_files(real_examples, "eval")
    assert [os.path.basename(f) for f in copies] == [os.path.basename(f) for f in originals]
    for copy, original in zip(copies, originals):
        assert open(copy, "rb").read() == open(original, "rb").read()
    summary = json.load(open(os.path.join(impression_examples.uri, data_impressions.SUMMARY_FILE)))
    assert len(summary["loss_curve"]) == 4 and summary["options"]["num_impressions"] == 70
    assert impression_examples.get_float_custom_property("final_teacher_loss") == pytest.approx(
        summary["loss_curve"][-1])


def test_impressions_read_back_as_training_records(impression_examples, teacher_dir):
    records = data.load_impressions(split_files(impression_examples, "train"))
    images, classes = next(iter(records.batch(70)))
    assert images.dtype == tf.float32 and images.shape == (70, 32, 32, 3)
    assert classes.numpy().tolist() == [i % 100 for i in range(70)]
    # What the student's pipeline feeds the teacher is what the impressions were optimised on.
    teacher, _ = export.load_teacher(teacher_dir)
    summary = json.load(open(os.path.join(impression_examples.uri, data_impressions.SUMMARY_FILE)))
    targets = np.array([tf.train.Example.FromString(r.numpy()).features.feature[IMPRESSION_TARGET_KEY]
                        .float_list.value
                        for r in tf.data.TFRecordDataset(split_files(impression_examples, "train"), "GZIP")])
    logits = teacher(data.normalize(images))["logits"].numpy()
    assert np_impression_loss(logits, targets, 20.0).mean() == pytest.approx(summary["loss_curve"][-1], rel=1e-4)


def test_real_examples_are_refused_as_impressions(real_examples):
    with pytest.raises(ValueError, match="holds no data impressions .* method 'zero_shot' trains on the DataImpr"):
        data.load_impressions(split_files(real_examples, "train"))


# --------------------------------------------------------------------------- the students

@pytest.mark.parametrize("params", [{}, {"temperature": 4.0, "temperature_squared": False}])
def test_zero_shot_loss_is_softened_kl_without_labels(params):
    rng = np.random.default_rng(5)
    student, teacher = rng.normal(size=(2, 6, 100)) * 10
    method = methods.create("zero_shot", params)
    terms = method.loss_terms(None, None, {"logits": tf.constant(student)}, {"logits": tf.constant(teacher)})
    t = params.get("temperature", 20.0)
    kd = np_kl(np_softmax(teacher / t), np_softmax(student / t)) * (t ** 2 if params.get("temperature_squared", True)
                                                                     else 1)
    assert set(terms) == {"kd"} and float(terms["kd"]) == pytest.approx(kd, rel=1e-9)
    assert method.trains_on == methods.catalog.IMPRESSIONS and method.needs_teacher


def fn_args(tmp_path, train_files, eval_files, config, base_model):
    return types.SimpleNamespace(
        train_files=train_files, eval_files=eval_files, custom_config=config, base_model=base_model,
        serving_model_dir=str(tmp_path / "model" / SERVING_FOLDER), model_run_dir=str(tmp_path / "model_run"))


ZERO_SHOT_TRAINING = {"role": "student", "method": "zero_shot", "model": "resnet8", "epochs": 1, "batch_size": 32,
                      "eval_batch_size": 50}


def test_zero_shot_student_trains_on_impressions(tmp_path, impression_examples, teacher_dir):
    args = fn_args(tmp_path, split_files(impression_examples, "train"), split_files(impression_examples, "eval"),
                   ZERO_SHOT_TRAINING, teacher_dir)
    run_fn(args)
    history = json.load(open(tmp_path / "model" / HISTORY_FILE))
    assert [h["epoch"] for h in history] == [1]
    assert all(h["kd"] > 0 and "ce" not in h and np.isfinite(h["val_loss"]) for h in history)
    assert tf.saved_model.load(args.serving_model_dir).signatures[SERVING_SIGNATURE] is not None


def test_zero_shot_student_refuses_real_training_images(tmp_path, real_examples, teacher_dir):
    args = fn_args(tmp_path, split_files(real_examples, "train"), split_files(real_examples, "eval"),
                   ZERO_SHOT_TRAINING, teacher_dir)
    with pytest.raises(ValueError, match="holds no data impressions"):
        run_fn(args)


# --------------------------------------------------------------------------- presets and pipeline

def test_zero_shot_preset_compares_equal_numbers_of_images():
    preset = presets.resolve("zero_shot")
    assert preset.methods == presets.ZERO_SHOT_METHODS
    assert preset.few_shot_per_class() * models.NUM_CLASSES == preset.zero_shot.num_impressions
    assert preset.zero_shot.temperature == 20.0 and preset.zero_shot.betas == (1.0, 0.1)
    assert preset.trainer_config("student", method="zero_shot").method_params == {}
    assert presets.resolve("zero_shot", ["zero_shot.betas=[1,0.5]"]).zero_shot.betas == (1.0, 0.5)
    # Sizes are checked across fields after all overrides: an intermediate state may be invalid.
    small = presets.resolve("zero_shot", ["data.train_per_class=4", "zero_shot.few_shot_fraction=0.5",
                                          "student.batch_size=64", "zero_shot.num_impressions=64"])
    assert small.few_shot_per_class() == 2


@pytest.mark.parametrize("overrides, message", [
    (["zero_shot.iterations=0"], r"override 'zero_shot.iterations': .*iterations must be an integer in \[1, 100000\], got 0"),
    (["zero_shot.learning_rate=-1"], r"learning_rate must be a finite number in \(0, 10\]"),
    (["zero_shot.betas=[]"], "betas must be a non-empty list"),
    (["zero_shot.few_shot_fraction=1.5"], r"few_shot_fraction must be a finite number in \(0, 1\], got 1.5"),
    (["zero_shot.num_impressions=100"], r"zero_shot.num_impressions \(100\) must be at least student.batch_size"),
    (["zero_shot.few_shot_fraction=0.001"], r"keeps 0 training image\(s\) per class"),
    (["zero_shot.steps=3"], r"unknown key 'zero_shot.steps'.*valid: \['batch_size', 'betas', 'few_shot_fraction'"),
    (["method_params.zero_shot.temperature=0"], r"parameter 'temperature' must be a finite number in \[0.01, 1000\], got 0.0"),
])
def test_invalid_zero_shot_overrides_name_the_option(overrides, message):
    with pytest.raises(presets.PresetError, match=message):
        presets.resolve("zero_shot", overrides)


def test_pipeline_feeds_impressions_and_few_shot_examples_to_their_students(tmp_path):
    preset = presets.resolve("zero_shot", ["trials=2", "methods=zero_shot,soft_logits_fewshot,soft_logits"])
    components = {c.id: c for c in create_pipeline("p", str(tmp_path), preset).components}
    impressions_gen = components["DataImpressions"]
    assert impressions_gen.inputs["model"].producer_component_id == "Trainer.teacher"
    assert impressions_gen.inputs["examples"].producer_component_id == "CifarExampleGen"
    assert impressions_gen.exec_properties["num_impressions"] == 2500
    assert components["CifarExampleGen.fewshot"].exec_properties["train_per_class"] == 25
    for trial in (1, 2):
        producers = {method: components[f"Trainer.{method}_trial{trial}"].inputs["examples"].producer_component_id
                     for method in ("zero_shot", "soft_logits_fewshot", "soft_logits")}
        assert producers == {"zero_shot": "DataImpressions", "soft_logits_fewshot": "CifarExampleGen.fewshot",
                             "soft_logits": "CifarExampleGen"}
        for method in producers:  # every student is evaluated on the real test set
            assert components[f"Evaluator.{method}_trial{trial}"].inputs["examples"].producer_component_id \
                == "CifarExampleGen"
    quick = create_pipeline("q", str(tmp_path), presets.resolve("quick")).components
    assert not {"DataImpressions", "CifarExampleGen.fewshot"} & {c.id for c in quick}
