"""Reading a finished run back from ML Metadata: the newest artifacts of each component."""

from __future__ import annotations

import json
import os

import tensorflow as tf
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components import leaderboard


def latest_artifacts(connection_config: metadata_store_pb2.ConnectionConfig,
                     pipeline_name: str) -> dict[str, dict[str, metadata_store_pb2.Artifact]]:
    """{component id: {artifact type name: newest LIVE output artifact}} for one pipeline.

    Cached executions publish no new artifacts, so "newest" is the one the latest run used.
    """
    store = metadata_store.MetadataStore(connection_config)
    type_names = {t.id: t.name for t in store.get_artifact_types()}
    prefix = f"{pipeline_name}."
    result: dict[str, dict[str, metadata_store_pb2.Artifact]] = {}
    for context in store.get_contexts_by_type("node"):
        if not context.name.startswith(prefix):
            continue
        outputs = {e.artifact_id for e in store.get_events_by_execution_ids(
            [x.id for x in store.get_executions_by_context(context.id)])
            if e.type == metadata_store_pb2.Event.OUTPUT}
        newest: dict[str, metadata_store_pb2.Artifact] = {}
        for artifact in store.get_artifacts_by_id(sorted(outputs)):
            if artifact.state != metadata_store_pb2.Artifact.LIVE:
                continue
            name = type_names[artifact.type_id]
            if name not in newest or artifact.id > newest[name].id:
                newest[name] = artifact
        result[context.name[len(prefix):]] = newest
    return result


def leaderboard_dir(artifacts: dict[str, dict[str, metadata_store_pb2.Artifact]]) -> str:
    """The folder of the run's Leaderboard output."""
    outputs = artifacts.get("Leaderboard", {})
    for type_name in (leaderboard.LeaderboardArtifact.TYPE_NAME, *leaderboard.LeaderboardArtifact.LEGACY_TYPE_NAMES):
        if type_name in outputs:
            return outputs[type_name].uri
    raise ValueError("the run has no Leaderboard output (did the pipeline finish?)")


def regenerate_report(artifacts: dict[str, dict[str, metadata_store_pb2.Artifact]], output_dir: str) -> list[dict]:
    """Rebuilds the leaderboard files from the run's Trainer and Evaluator artifacts, with the
    configuration recorded by its Leaderboard (or, for older runs, by its Trainers)."""
    evaluations, blessings, models = [], {}, []
    for component, outputs in artifacts.items():
        if component.startswith("Trainer.") and "Model" in outputs:
            models.append(outputs["Model"].uri)
        if component.startswith("Evaluator.") and "ModelEvaluation" in outputs:
            evaluations.append(outputs["ModelEvaluation"].uri)
            blessing = outputs["ModelBlessing"]
            blessings[blessing.custom_properties["current_model"].string_value.rstrip("/")] = \
                blessing.custom_properties["blessed"].int_value == 1
    records = leaderboard.collect_records(evaluations, blessings, models)
    if "Leaderboard" in artifacts:
        with tf.io.gfile.GFile(os.path.join(leaderboard_dir(artifacts), "leaderboard.json")) as f:
            previous = json.load(f)
        configuration, title = previous["configuration"], previous["title"]
    else:  # a run from before the Leaderboard component: each Trainer's own configuration
        configuration = {"trainers": {r["model_uri"].split(os.sep)[-3]: r["config"] for r in records}}
        title = "KD benchmark report"
    return leaderboard.write_report(output_dir, records, configuration, title)
