"""TFX components of the KD benchmark (spec, executor and component class each): CIFAR-100
ingestion, the Trainer and Evaluator, zero-shot KD's DataImpressions and the Leaderboard."""
import os

# TFX 1.16, TFT and TFMA need Keras 2 (tf_keras) behind tf.keras: set before TensorFlow loads.
os.environ["TF_USE_LEGACY_KERAS"] = "1"


def __getattr__(name: str):
    """`components.LeaderboardArtifact`, the Leaderboard's artifact type by the name TFX imports on Kubeflow
    (its TYPE_NAME); loaded on first use so that importing `components` stays light."""
    if name == "LeaderboardArtifact":
        from components.leaderboard import LeaderboardArtifact
        return LeaderboardArtifact
    raise AttributeError(f"module 'components' has no attribute {name!r}")
