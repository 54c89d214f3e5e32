"""Pipeline definition, presets, runners and the `kd` command line."""
import os

# TFX 1.16, TFT and TFMA need Keras 2 (tf_keras) behind tf.keras: set before TensorFlow loads.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
# TensorFlow's C++ start-up INFO/WARNING lines (CPU feature guard, TF-TRT) are noise for `kd`.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN's CPU kernels: TensorFlow turns them on by itself only on CPUs with AVX-512/AMX, and
# they made the Soft-logits step ~1.5x faster on a 2-core AVX2 EPYC (docs/benchmarks.md).
# Read when TensorFlow loads, so set before anything imports it; an explicit 0 still wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import warnings

# google-api-core warns on every import that Python 3.10 is old; TFX 1.16 requires it.
warnings.filterwarnings("ignore", message="You are using a non-supported Python version", category=FutureWarning)
