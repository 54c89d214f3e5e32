"""SavedModel export with explicit signatures, and loading a teacher from one.

Every trained network (teacher, baseline, student) is exported the same way:
  serving_default  serialized tf.Examples -> {logits, probabilities}   (TFMA, serving)
  feature_taps     normalized images [B, 32, 32, 3] -> every tap        (student Trainers)
A student Trainer therefore needs nothing but the teacher's `base_model` path.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from kd_trainer import data
from kd_trainer.models import INPUT_SHAPE

SERVING_SIGNATURE = "serving_default"
TAPS_SIGNATURE = "feature_taps"
# The final dense layer is named "logits" in models.build_model.
CLASSIFIER_KERNEL = "logits/kernel:0"


class ExportModule(tf.Module):
    """Wraps a tap-dict Keras model with the two exported functions."""

    def __init__(self, model: keras.Model):
        super().__init__(name="kd_export")
        self.model = model

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        features = tf.io.parse_example(examples, {"image_raw": tf.io.FixedLenFeature([], tf.string)})
        logits = self.model(data.normalize(data.decode_images(features["image_raw"])), training=False)["logits"]
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    @tf.function(input_signature=[tf.TensorSpec([None, *INPUT_SHAPE], tf.float32, name="images")])
    def feature_taps(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self.model(images, training=False)


def save(model: keras.Model, export_dir: str) -> None:
    module = ExportModule(model)
    tf.saved_model.save(module, export_dir, signatures={SERVING_SIGNATURE: module.serve_examples,
                                                        TAPS_SIGNATURE: module.feature_taps})


def load_teacher(export_dir: str):
    """Returns the teacher's `feature_taps` function (inference mode, weights frozen).

    The loaded object is returned alongside so that its variables stay alive.
    """
    loaded = tf.saved_model.load(export_dir)
    if not hasattr(loaded, TAPS_SIGNATURE):
        raise ValueError(f"{export_dir}: not a kd_trainer export (no '{TAPS_SIGNATURE}' function)")
    return loaded.feature_taps, loaded


def classifier_kernel(loaded) -> tf.Tensor:
    """The final dense kernel [embedding, classes] of a loaded export, found by name among the
    variables its `feature_taps` signature reads (zero-shot KD derives class similarity from it)."""
    variables = loaded.signatures[TAPS_SIGNATURE].variables
    found = [v for v in variables if v.name == CLASSIFIER_KERNEL]
    if len(found) != 1:
        raise ValueError(f"{len(found)} variables named '{CLASSIFIER_KERNEL}' in the export's '{TAPS_SIGNATURE}' "
                         "signature, expected one (is it a kd_trainer export?)")
    return tf.convert_to_tensor(found[0])
