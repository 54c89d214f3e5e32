"""Models, distillation methods, training loop and the TFX Trainer run_fn."""
import os

# TFX 1.16, TFT and TFMA need Keras 2 (tf_keras) behind tf.keras: set before TensorFlow loads.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
