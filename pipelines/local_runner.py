"""Runs the pipeline on this machine with BeamDagRunner and SQLite ML Metadata.

Direct use: `kd run --preset quick` (see pipelines/cli.py). The TFX CLI also works, since
this file builds the pipeline and hands it to BeamDagRunner when executed:

    KD_PRESET=smoke tfx pipeline create --engine beam --pipeline_path pipelines/local_runner.py
    tfx run create --engine beam --pipeline_name kd-smoke

Environment for that path: KD_PRESET (default quick), KD_OVERRIDES (`;`-separated
key=value), KD_OUTPUT_DIR (default ./outputs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import os
from pathlib import Path
from typing import Iterator

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import metadata
from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner

from pipelines import presets
from pipelines.pipeline import create_pipeline

# Relative to the working directory, as `--output-dir`'s help and the TFX template's local runner
# say (`make run` runs from the repository root, so its runs land in <repository>/outputs).
DEFAULT_OUTPUT_DIR = Path("outputs")


@dataclasses.dataclass(frozen=True)
class LocalPaths:
    """Where one preset's run keeps its artifacts and metadata."""

    output_dir: Path
    pipeline_name: str

    @property
    def pipeline_root(self) -> Path:
        return self.output_dir / self.pipeline_name / "root"

    @property
    def metadata_path(self) -> Path:
        return self.output_dir / self.pipeline_name / "metadata.sqlite"

    def connection_config(self):
        return metadata.sqlite_metadata_connection_config(str(self.metadata_path))


def local_paths(preset: presets.Preset, output_dir: str | os.PathLike | None = None) -> LocalPaths:
    return LocalPaths(Path(output_dir or DEFAULT_OUTPUT_DIR).resolve(), f"kd-{preset.name}")


def build(preset: presets.Preset, paths: LocalPaths, beam_pipeline_args: list[str] | None = None):
    return create_pipeline(
        pipeline_name=paths.pipeline_name, pipeline_root=str(paths.pipeline_root), preset=preset,
        metadata_connection_config=paths.connection_config(),
        beam_pipeline_args=beam_pipeline_args or ["--direct_num_workers=1", "--direct_running_mode=in_memory"])


class RunLockedError(RuntimeError):
    """Another `kd run` of the same pipeline holds its lock."""


@contextlib.contextmanager
def exclusive_run(paths: LocalPaths) -> Iterator[None]:
    """Holds `<pipeline folder>/.kd-run.lock` for one run: while it is held, executions that the
    store says are RUNNING belong to no live process. The kernel frees the lock when its holder
    dies, SIGKILL included."""
    lock_path = paths.metadata_path.parent / ".kd-run.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(f"another run of '{paths.pipeline_name}' is in progress (it holds {lock_path}); "
                                 f"wait for it or stop it first") from None
        yield


ABANDONED_PROPERTY = "kd_abandoned"
_UNFINISHED = (metadata_store_pb2.Execution.NEW, metadata_store_pb2.Execution.RUNNING)


def mark_abandoned_executions(connection_config: metadata_store_pb2.ConnectionConfig,
                              pipeline_name: str) -> list[str]:
    """Marks the pipeline's executions still NEW/RUNNING (their process was killed) as FAILED,
    with a `kd_abandoned` property saying why, and their PENDING outputs as ABANDONED.

    Only call it while holding `exclusive_run`: no live process owns those executions then.
    Returns a description of each one marked.
    """
    store = metadata_store.MetadataStore(connection_config)
    prefix, marked = f"{pipeline_name}.", []
    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    for context in store.get_contexts_by_type("node"):
        if not context.name.startswith(prefix):
            continue
        for execution in store.get_executions_by_context(context.id):
            if execution.last_known_state not in _UNFINISHED:
                continue
            execution.last_known_state = metadata_store_pb2.Execution.FAILED
            execution.custom_properties[ABANDONED_PROPERTY].string_value = (
                f"left {metadata_store_pb2.Execution.State.Name(_UNFINISHED[1])} by an interrupted run; "
                f"marked failed by the next run at {when}")
            outputs = [e.artifact_id for e in store.get_events_by_execution_ids([execution.id])
                       if e.type in (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.PENDING_OUTPUT)]
            artifacts = [a for a in store.get_artifacts_by_id(outputs)
                         if a.state in (metadata_store_pb2.Artifact.PENDING, metadata_store_pb2.Artifact.UNKNOWN)]
            for artifact in artifacts:
                artifact.state = metadata_store_pb2.Artifact.ABANDONED
            store.put_executions([execution])
            if artifacts:
                store.put_artifacts(artifacts)
            marked.append(f"execution {execution.id} of {context.name[len(prefix):]} (left running by an interrupted "
                          f"run) as failed; its folders stay: {', '.join(a.uri for a in artifacts) or 'none'}")
    return marked


def run(preset: presets.Preset, paths: LocalPaths, beam_pipeline_args: list[str] | None = None) -> list[str]:
    """Runs the pipeline; first marks what an interrupted earlier run left RUNNING (returned)."""
    with exclusive_run(paths):
        abandoned = (mark_abandoned_executions(paths.connection_config(), paths.pipeline_name)
                     if paths.metadata_path.is_file() else [])
        for description in abandoned:
            print(f"kd: marked {description}", flush=True)
        BeamDagRunner().run(build(preset, paths, beam_pipeline_args))
    return abandoned


if __name__ == "__main__":
    overrides = [o for o in os.environ.get("KD_OVERRIDES", "").split(";") if o.strip()]
    selected = presets.resolve(os.environ.get("KD_PRESET", "quick"), overrides)
    run(selected, local_paths(selected, os.environ.get("KD_OUTPUT_DIR")))
