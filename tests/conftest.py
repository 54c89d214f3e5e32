"""Shared fixtures. TF_USE_LEGACY_KERAS must be set before anything imports TensorFlow."""

from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import io  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import pytest  # noqa: E402

import cifar_fixtures  # noqa: E402

if TYPE_CHECKING:
    from pipelines.local_runner import LocalPaths
    from pipelines.presets import Preset

REPO_ROOT = Path(__file__).resolve().parent.parent
REAL_ARCHIVE = REPO_ROOT.parent / "shared" / "data" / "cifar-100-python.tar.gz"


@pytest.fixture(scope="session")
def real_archive() -> Path:
    if not REAL_ARCHIVE.is_file():
        pytest.fail(f"the real CIFAR-100 archive is expected at {REAL_ARCHIVE} (../shared/data beside the repo)")
    return REAL_ARCHIVE


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory) -> Path:
    """A .tar.gz in the official layout: 4 train / 2 test images per fine class."""
    return cifar_fixtures.write_archive(tmp_path_factory.mktemp("archive"), train_per_class=4, test_per_class=2)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """An extracted cifar-100-python/ folder: 3 train / 1 test images per fine class."""
    return cifar_fixtures.write_folder(tmp_path_factory.mktemp("folder"), train_per_class=3, test_per_class=1)


# The smoke preset on `tiny_archive` (4 train / 2 test images per class).
SMOKE_OVERRIDES = ["data.require_official_sizes=false", "data.train_per_class=4", "data.eval_per_class=2"]


@dataclasses.dataclass(frozen=True)
class SmokeRun:
    """The smoke pipeline's first run with `kd run`: arguments, preset, paths, exit status, printed output."""

    args: list[str]
    preset: Preset
    paths: LocalPaths
    exit_code: int
    printed: str


@pytest.fixture(scope="session")
def smoke_first_run(tmp_path_factory, tiny_archive) -> SmokeRun:
    """Runs the smoke pipeline once per session (minutes); every test that reads a finished run shares it."""
    from pipelines import cli, local_runner, presets

    output_dir = tmp_path_factory.mktemp("outputs")
    overrides = [f"data.data_dir={tiny_archive.parent}", *SMOKE_OVERRIDES]
    args = ["run", "--preset", "smoke", "--output-dir", str(output_dir)]
    for override in overrides:
        args += ["--set", override]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exit_code = cli.main(args)
    preset = presets.resolve("smoke", overrides)
    return SmokeRun(args, preset, local_runner.local_paths(preset, output_dir), exit_code, printed.getvalue())


@pytest.fixture(scope="session")
def smoke_run(smoke_first_run: SmokeRun) -> tuple[list[str], LocalPaths]:
    """(`kd run` arguments, paths) of the finished smoke run."""
    return smoke_first_run.args, smoke_first_run.paths


@pytest.fixture
def float64_layers():
    """Keras layers created inside the test compute in float64 (restored afterwards)."""
    from method_harness import float64_layers as in_float64

    with in_float64():
        yield
