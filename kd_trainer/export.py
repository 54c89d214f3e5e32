"""SavedModel export with explicit signatures, and loading a teacher from one.

Every trained network (teacher, baseline, student) is exported the same way:
  serving_default  serialized tf.Examples -> {logits, probabilities}   (TFMA, serving)
  feature_taps     normalized images [B, 32, 32, 3] -> every tap        (student Trainers)
  input_normalization()  the name of the normalization both expect (data.normalize)
A student Trainer therefore needs nothing but the teacher's `base_model` path, and a teacher
of an earlier run can be imported (`check_teacher_model` checks it first).
"""

from __future__ import annotations

import json
import os

import tensorflow as tf
import tf_keras as keras

from kd_trainer import data
from kd_trainer.contract import (CONFIG_FILE, HISTORY_FILE, IMAGE_KEY, LOGITS_KEY, PREDICTION_KEY, SERVING_FOLDER,
                                 SERVING_OUTPUTS, SERVING_SIGNATURE, TAPS_SIGNATURE)
from kd_trainer.model_specs import DEFAULT_INPUT_NORMALIZATION
from kd_trainer.models import INPUT_SHAPE

# The final dense layer is named "logits" in models.build_model.
CLASSIFIER_KERNEL = "logits/kernel:0"


class ExportModule(tf.Module):
    """Wraps a tap-dict Keras model with the exported functions (module docstring)."""

    def __init__(self, model: keras.Model, normalization: str = DEFAULT_INPUT_NORMALIZATION):
        super().__init__(name="kd_export")
        self.normalization = normalization
        # The SavedModel tracks the network's variables, not the Keras model: a tracked Keras
        # model makes tf.saved_model.save also trace every layer's call functions for Keras'
        # own loader, which nothing here uses and which took most of the export time (resnet32:
        # 46 s against 17 s, resnet8: 13-31 s against 5 s, on 2 AMD EPYC cores, 2026-11-30).
        self.model = self._no_dependency(model)
        self.network_variables = list(model.variables)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        features = tf.io.parse_example(examples, {IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
        images = data.normalize(data.decode_images(features[IMAGE_KEY]), self.normalization)
        logits = self.model(images, training=False)["logits"]  # a tap of the network (models.build_model)
        logits = tf.cast(logits, tf.float32)  # a mixed-precision network computes in bfloat16/float16
        return {LOGITS_KEY: logits, PREDICTION_KEY: tf.nn.softmax(logits)}

    @tf.function(input_signature=[tf.TensorSpec([None, *INPUT_SHAPE], tf.float32, name="images")])
    def feature_taps(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {name: tf.cast(tap, tf.float32) for name, tap in self.model(images, training=False).items()}

    @tf.function(input_signature=[])
    def input_normalization(self) -> tf.Tensor:
        return tf.constant(self.normalization)


def save(model: keras.Model, export_dir: str, normalization: str = DEFAULT_INPUT_NORMALIZATION) -> None:
    module = ExportModule(model, normalization)
    tf.saved_model.save(module, export_dir, signatures={SERVING_SIGNATURE: module.serve_examples,
                                                        TAPS_SIGNATURE: module.feature_taps})


def load_teacher(export_dir: str):
    """Returns the teacher's `feature_taps` function (inference mode, weights frozen).

    The loaded object is returned alongside so that its variables stay alive.
    """
    loaded = tf.saved_model.load(export_dir)
    if not hasattr(loaded, TAPS_SIGNATURE):
        raise ValueError(f"{export_dir}: not a kd_trainer export (no '{TAPS_SIGNATURE}' function)")
    return getattr(loaded, TAPS_SIGNATURE), loaded


def input_normalization(loaded) -> str:
    """The normalization a loaded export's `feature_taps` expects; exports that predate the
    record used the default."""
    if not hasattr(loaded, "input_normalization"):
        return DEFAULT_INPUT_NORMALIZATION
    return loaded.input_normalization().numpy().decode()


def classifier_kernel(loaded) -> tf.Tensor:
    """The final dense kernel [embedding, classes] of a loaded export, found by name among the
    variables its `feature_taps` signature reads (zero-shot KD derives class similarity from it)."""
    variables = loaded.signatures[TAPS_SIGNATURE].variables
    found = [v for v in variables if v.name == CLASSIFIER_KERNEL]
    if len(found) != 1:
        raise ValueError(f"{len(found)} variables named '{CLASSIFIER_KERNEL}' in the export's '{TAPS_SIGNATURE}' "
                         "signature, expected one (is it a kd_trainer export?)")
    return tf.convert_to_tensor(found[0])


class TeacherImportError(ValueError):
    """`teacher.import_from` names no usable teacher (raised before any component runs)."""


def _signature_outputs(saved_model_dir: str) -> dict[str, tuple[dict, set[str]]]:
    """{signature: ({input name: TensorInfo}, output names)} read from saved_model.pb, no variables loaded."""
    from tensorflow.python.saved_model import loader_impl  # the SavedModel proto reader behind tf.saved_model.load

    meta_graph = loader_impl.parse_saved_model(saved_model_dir).meta_graphs[0]
    return {name: (dict(sig.inputs), set(sig.outputs)) for name, sig in meta_graph.signature_def.items()
            if not name.startswith("__")}  # not TensorFlow's own __saved_model_init_op


def check_teacher_model(uri: str, architecture: str, taps_by_method: dict[str, tuple[str, ...]],
                        normalization: str = DEFAULT_INPUT_NORMALIZATION) -> str:
    """The Model artifact folder behind `uri`, after checking that it holds a teacher this run can use.

    `uri` is a Model artifact folder of an earlier run (trainer_config.json, history.json and
    Format-Serving/) or its Format-Serving SavedModel. Checked: it exists, is a SavedModel with
    this project's two signatures, its `feature_taps` outputs every tap in `taps_by_method`
    ({method: teacher taps}), and its trainer_config.json describes a teacher of `architecture`
    that trained to the end on images normalized as `normalization` (data.normalization; the
    students feed it their batches). Errors name the path, what was expected and what was found.
    """
    uri = uri.rstrip("/")
    if not tf.io.gfile.exists(uri):
        raise TeacherImportError(f"teacher.import_from: {uri} does not exist")
    model_dir = os.path.dirname(uri) if os.path.basename(uri) == SERVING_FOLDER else uri
    serving_dir = os.path.join(model_dir, SERVING_FOLDER)
    if not tf.saved_model.contains_saved_model(serving_dir):
        raise TeacherImportError(
            f"teacher.import_from: {uri} is not a SavedModel exported by this project: expected a Model artifact "
            f"folder holding {SERVING_FOLDER}/saved_model.pb, or that {SERVING_FOLDER} folder; found no "
            f"saved_model.pb in {serving_dir}")
    signatures = _signature_outputs(serving_dir)
    for name in (SERVING_SIGNATURE, TAPS_SIGNATURE):
        if name not in signatures:
            raise TeacherImportError(f"teacher.import_from: {serving_dir} has no '{name}' signature; expected "
                                     f"{[SERVING_SIGNATURE, TAPS_SIGNATURE]}, found {sorted(signatures)}")
    serving_inputs, serving_outputs = signatures[SERVING_SIGNATURE]
    missing_outputs = sorted(set(SERVING_OUTPUTS) - serving_outputs)
    if "examples" not in serving_inputs or missing_outputs:
        raise TeacherImportError(
            f"teacher.import_from: {serving_dir} signature '{SERVING_SIGNATURE}' must map 'examples' to "
            f"{list(SERVING_OUTPUTS)}; found inputs {sorted(serving_inputs)}, outputs {sorted(serving_outputs)}")
    tap_inputs, taps = signatures[TAPS_SIGNATURE]
    image_dims = [d.size for d in tap_inputs["images"].tensor_shape.dim] if "images" in tap_inputs else None
    if image_dims is None or image_dims[1:] != list(INPUT_SHAPE):
        raise TeacherImportError(f"teacher.import_from: {serving_dir} signature '{TAPS_SIGNATURE}' must take "
                                 f"'images' of shape [batch, {', '.join(map(str, INPUT_SHAPE))}]; found inputs "
                                 f"{ {k: [d.size for d in v.tensor_shape.dim] for k, v in tap_inputs.items()} }")
    missing = {method: sorted(set(needed) - taps) for method, needed in taps_by_method.items() if set(needed) - taps}
    if missing:
        raise TeacherImportError(f"teacher.import_from: {serving_dir} signature '{TAPS_SIGNATURE}' lacks the taps "
                                 f"these methods need: {missing}; found {sorted(taps)}")
    config_path = os.path.join(model_dir, CONFIG_FILE)
    if not tf.io.gfile.exists(config_path) or not tf.io.gfile.exists(os.path.join(model_dir, HISTORY_FILE)):
        raise TeacherImportError(f"teacher.import_from: {model_dir} lacks {CONFIG_FILE} or {HISTORY_FILE}; "
                                 "expected the Model artifact folder of a Trainer of this project")
    with tf.io.gfile.GFile(config_path) as f:
        config = json.load(f)
    found = {"role": config.get("role"), "model": config.get("model"), "divergence": config.get("divergence")}
    if found != {"role": "teacher", "model": architecture, "divergence": None}:
        raise TeacherImportError(
            f"teacher.import_from: {config_path}: expected a teacher of architecture '{architecture}' (teacher.model) "
            f"that trained to the end; found role {found['role']!r}, model {found['model']!r}, divergence "
            f"{found['divergence']!r} (set teacher.model to the teacher's architecture)")
    found_normalization = config.get("input_normalization", DEFAULT_INPUT_NORMALIZATION)
    if found_normalization != normalization:
        raise TeacherImportError(
            f"teacher.import_from: {config_path}: the teacher was trained on images normalized as "
            f"'{found_normalization}', this run normalizes them as '{normalization}' (set data.normalization="
            f"{found_normalization})")
    return model_dir
