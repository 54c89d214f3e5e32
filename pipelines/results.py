"""Reading a finished run back from ML Metadata: the newest artifacts of each component.

`kd report` reads runs it did not write, possibly broken or moved: the store is opened
read-only (never created, migrated or modified), every problem is a `RunFolderError` naming
the file, and artifact paths recorded under another pipeline root are mapped to where the
run folder is now.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import sqlite3
import urllib.parse
from typing import Callable

import tensorflow as tf
from ml_metadata import errors as mlmd_errors
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components.leaderboard import LeaderboardArtifact
from kd_results.records import collect_records
from kd_results.report import write_report
from kd_trainer.contract import LEADERBOARD_JSON

SQLITE_HEADER = b"SQLite format 3\x00"
# Tables every ML Metadata schema has (the rest depend on its version).
MLMD_TABLES = ("Artifact", "Context", "Event", "Execution", "MLMDEnv", "Type")


class RunFolderError(ValueError):
    """A run folder or metadata store is missing, broken or incomplete."""


class PipelineNotInStoreError(RunFolderError):
    """The metadata store is readable but records no run of the pipeline asked for."""


def _pipeline_not_in_store(store: metadata_store.MetadataStore, pipeline_name: str) -> PipelineNotInStoreError:
    pipelines = sorted({c.name.split(".")[0] for c in store.get_contexts_by_type("node")})
    return PipelineNotInStoreError(f"no run of pipeline '{pipeline_name}' in the store (it has: {pipelines or 'none'}; "
                                   f"give --pipeline-name)")


def readonly_connection_config(path: str | os.PathLike) -> metadata_store_pb2.ConnectionConfig:
    """A read-only ConnectionConfig for an existing ML Metadata SQLite file, after checking it
    is one: an empty, garbage or truncated file, or one without MLMD's tables, fails here
    instead of being given a fresh schema."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise RunFolderError(f"{path}: no ML Metadata store there (give --metadata)")
    with open(path, "rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        described = "an empty file" if not header else "not an SQLite database"
        raise RunFolderError(f"{path}: {described}, expected the run's ML Metadata store")
    try:
        with sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro", uri=True) as connection:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            connection.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as error:
        raise RunFolderError(f"{path}: unreadable SQLite database ({error})") from error
    missing = sorted(set(MLMD_TABLES) - tables)
    if missing:
        raise RunFolderError(f"{path}: not a complete ML Metadata store (missing table(s) {missing})")
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return config


def latest_artifacts(connection_config: metadata_store_pb2.ConnectionConfig,
                     pipeline_name: str) -> dict[str, dict[str, metadata_store_pb2.Artifact]]:
    """{component id: {artifact type name: newest LIVE output artifact}} for one pipeline.

    Cached executions publish no new artifacts, so "newest" is the one the latest run used.
    """
    try:
        return _latest_artifacts(metadata_store.MetadataStore(connection_config), pipeline_name)
    except mlmd_errors.StatusError as error:
        raise RunFolderError(f"{connection_config.sqlite.filename_uri}: cannot read the ML Metadata store "
                             f"({error})") from error


def _latest_artifacts(store: metadata_store.MetadataStore,
                      pipeline_name: str) -> dict[str, dict[str, metadata_store_pb2.Artifact]]:
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
    if not result:
        raise _pipeline_not_in_store(store, pipeline_name)
    return result


@dataclasses.dataclass(frozen=True)
class ExecutionRecord:
    """One component's execution in a pipeline run, as ML Metadata recorded it."""

    node: str
    state: str  # COMPLETE, CACHED, FAILED, RUNNING, ...
    seconds: float  # from its creation to its last update


def latest_run_executions(connection_config: metadata_store_pb2.ConnectionConfig,
                          pipeline_name: str) -> list[ExecutionRecord]:
    """The executions of the newest run of `pipeline_name`, in the order they started."""
    store = metadata_store.MetadataStore(connection_config)
    prefix = f"{pipeline_name}."
    node_of = {execution.id: context.name[len(prefix):]
               for context in store.get_contexts_by_type("node") if context.name.startswith(prefix)
               for execution in store.get_executions_by_context(context.id)}
    runs = [run for run in store.get_contexts_by_type("pipeline_run")
            if any(e.id in node_of for e in store.get_executions_by_context(run.id))]
    if not runs:
        raise _pipeline_not_in_store(store, pipeline_name)
    executions = sorted((e for e in store.get_executions_by_context(max(runs, key=lambda c: c.id).id)
                         if e.id in node_of), key=lambda e: (e.create_time_since_epoch, e.id))
    return [ExecutionRecord(node_of[e.id], metadata_store_pb2.Execution.State.Name(e.last_known_state),
                            (e.last_update_time_since_epoch - e.create_time_since_epoch) / 1000)
            for e in executions]


def relocated(artifacts: dict[str, dict[str, metadata_store_pb2.Artifact]],
              pipeline_root: str) -> tuple[dict[str, dict[str, metadata_store_pb2.Artifact]], Callable[[str], str]]:
    """The artifacts with their paths under `pipeline_root`, and the path mapping used.

    TFX records absolute paths `<root>/<component>/<output>/<execution>`; a run folder that was
    moved or copied keeps that layout under its new root.
    """
    roots = collections.Counter(a.uri.rstrip("/").rsplit("/", 3)[0]
                                for outputs in artifacts.values() for a in outputs.values())
    recorded = roots.most_common(1)[0][0] if roots else pipeline_root
    new_root = pipeline_root.rstrip("/")

    def relocate(uri: str) -> str:
        return new_root + uri[len(recorded):] if uri == recorded or uri.startswith(recorded + "/") else uri

    result = {}
    for component, outputs in artifacts.items():
        result[component] = {}
        for type_name, artifact in outputs.items():
            moved = metadata_store_pb2.Artifact()
            moved.CopyFrom(artifact)
            moved.uri = relocate(artifact.uri)
            if "current_model" in moved.custom_properties:
                current = moved.custom_properties["current_model"]
                current.string_value = relocate(current.string_value)
            result[component][type_name] = moved
    return result, relocate


def leaderboard_dir(artifacts: dict[str, dict[str, metadata_store_pb2.Artifact]]) -> str:
    """The folder of the run's Leaderboard output."""
    outputs = artifacts.get("Leaderboard", {})
    for type_name in (LeaderboardArtifact.TYPE_NAME, *LeaderboardArtifact.LEGACY_TYPE_NAMES):
        if type_name in outputs:
            return outputs[type_name].uri
    raise RunFolderError("the run has no Leaderboard output (did the pipeline finish?)")


def _existing(uri: str, component: str, type_name: str) -> str:
    if not tf.io.gfile.isdir(uri):
        raise RunFolderError(f"{uri}: the {type_name} folder of {component} is missing (deleted, or the run "
                             f"folder is incomplete)")
    return uri


def _previous_report(artifacts: dict[str, dict[str, metadata_store_pb2.Artifact]]) -> tuple[dict, str]:
    path = os.path.join(leaderboard_dir(artifacts), LEADERBOARD_JSON)
    try:
        with tf.io.gfile.GFile(path) as f:
            previous = json.load(f)
    except tf.errors.NotFoundError as error:
        raise RunFolderError(f"{path}: missing") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFolderError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(previous, dict) or not isinstance(previous.get("configuration"), dict) \
            or not isinstance(previous.get("title"), str):
        raise RunFolderError(f"{path}: expected an object with 'configuration' (object) and 'title' (string)")
    return previous["configuration"], previous["title"]


def regenerate_report(artifacts: dict[str, dict[str, metadata_store_pb2.Artifact]], output_dir: str,
                      relocate: Callable[[str], str] = str) -> list[dict]:
    """Rebuilds the leaderboard files from the run's Trainer and Evaluator artifacts, with the
    configuration recorded by its Leaderboard (or, for older runs, by its Trainers).
    `relocate` maps paths recorded inside evaluations (see `relocated`)."""
    evaluations, blessings, models = [], {}, []
    for component, outputs in artifacts.items():
        if component.startswith("Trainer.") and "Model" in outputs:
            models.append(_existing(outputs["Model"].uri, component, "Model"))
        if component.startswith("Evaluator.") and "ModelEvaluation" in outputs:
            evaluations.append(_existing(outputs["ModelEvaluation"].uri, component, "ModelEvaluation"))
            blessing = outputs["ModelBlessing"]
            blessings[blessing.custom_properties["current_model"].string_value.rstrip("/")] = \
                blessing.custom_properties["blessed"].int_value == 1
    if "Leaderboard" in artifacts:
        configuration, title = _previous_report(artifacts)
    records = collect_records(evaluations, blessings, models, relocate)
    if "Leaderboard" not in artifacts:  # a run from before the Leaderboard component: each Trainer's own configuration
        configuration = {"trainers": {r["model_uri"].split(os.sep)[-3]: r["config"] for r in records}}
        title = "KD benchmark report"
    return write_report(output_dir, records, configuration, title)
