"""Runs the pipeline on this machine with BeamDagRunner and SQLite ML Metadata.

Direct use: `kd run --preset quick` (see pipelines/cli.py). The TFX CLI also works, since
this file builds the pipeline and hands it to BeamDagRunner when executed:

    KD_PRESET=smoke tfx pipeline create --engine beam --pipeline_path pipelines/local_runner.py
    tfx run create --engine beam --pipeline_name kd-smoke

Environment for that path: KD_PRESET (default quick), KD_OVERRIDES (`;`-separated
key=value), KD_OUTPUT_DIR (default ./outputs).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from tfx.orchestration import metadata
from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner

from pipelines import presets
from pipelines.pipeline import create_pipeline
from pipelines.revision import REPO_ROOT

DEFAULT_OUTPUT_DIR = REPO_ROOT / "outputs"


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


def run(preset: presets.Preset, paths: LocalPaths, beam_pipeline_args: list[str] | None = None) -> None:
    BeamDagRunner().run(build(preset, paths, beam_pipeline_args))


if __name__ == "__main__":
    overrides = [o for o in os.environ.get("KD_OVERRIDES", "").split(";") if o.strip()]
    selected = presets.resolve(os.environ.get("KD_PRESET", "quick"), overrides)
    run(selected, local_paths(selected, os.environ.get("KD_OUTPUT_DIR")))
