"""Names shared by the components, the Trainer and the results code: written once, here.

As the TFX penguin template keeps its feature keys in one module, every file name of a Model
artifact, every feature key of the examples, every exported signature and output, and the
Leaderboard files that are read back are named here and imported wherever they are read or
written. TensorFlow-free.
"""

from __future__ import annotations

# Files of a Trainer's Model artifact, beside its SavedModel.
SERVING_FOLDER = "Format-Serving"  # where TFX's Trainer puts a Model artifact's SavedModel
CONFIG_FILE = "trainer_config.json"  # the exact TrainerConfig, code revision, outcome
HISTORY_FILE = "history.json"  # per-epoch metrics, learning rate, epoch time

# Features of CifarExampleGen's tf.Examples (components/cifar_example_gen.py).
IMAGE_KEY = "image_raw"  # HWC uint8 bytes
LABEL_KEY = "fine_label"  # the 100-class label every network is trained and evaluated on
SLICE_KEY = "coarse_label"  # the 20 superclasses TFMA slices by
FILENAME_KEY = "filename"
INDEX_KEY = "index"  # position of an example in its split: CRD's memory banks key on it
EXAMPLE_KEYS = (IMAGE_KEY, LABEL_KEY, SLICE_KEY, FILENAME_KEY, INDEX_KEY)

# Features of a DataImpressions artifact's train split (components/data_impressions.py).
IMPRESSION_IMAGE_KEY = "image"  # float pixels, HWC RGB on the 0-255 scale, unclipped
IMPRESSION_TARGET_KEY = "soft_target"
IMPRESSION_CLASS_KEY = "source_class"
IMPRESSION_BETA_KEY = "beta"

# The exported SavedModel (kd_trainer/export.py).
SERVING_SIGNATURE = "serving_default"  # serialized tf.Examples -> logits, probabilities
TAPS_SIGNATURE = "feature_taps"  # normalized images -> every tap of the network
LOGITS_KEY = "logits"
PREDICTION_KEY = "probabilities"  # what TFMA reads
SERVING_OUTPUTS = (LOGITS_KEY, PREDICTION_KEY)

# Files of a Leaderboard artifact (kd_results/report.py) that `kd run` and `kd report` read back.
LEADERBOARD_TABLE = "leaderboard.md"
LEADERBOARD_JSON = "leaderboard.json"  # every number, per model and aggregated
REPORT_PAGE = "report.html"
