"""The benchmark's results, read from a run's artifacts: records, tables, plots, the HTML report,
and the published figures of the literature they are shown beside.

The Leaderboard component (components/leaderboard.py) and `kd report` (pipelines/results.py) both
write their reports with this package.
"""
import os

# TFMA, which reads the evaluations, needs Keras 2 (tf_keras) behind tf.keras: set before TensorFlow loads.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
