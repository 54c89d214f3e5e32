"""Pipeline definition, presets, runners and the `kd` command line."""
import os

# TFX 1.16, TFT and TFMA need Keras 2 (tf_keras) behind tf.keras: set before TensorFlow loads.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
# TensorFlow's C++ start-up INFO/WARNING lines (CPU feature guard, TF-TRT) are noise for `kd`.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import warnings

# google-api-core warns on every import that Python 3.10 is old; TFX 1.16 requires it.
warnings.filterwarnings("ignore", message="You are using a non-supported Python version", category=FutureWarning)
