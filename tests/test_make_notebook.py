"""`make notebook` (pipelines/notebook.py) explains a run it cannot show instead of failing in a cell."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO_ROOT, SmokeRun
from pipelines import notebook


def test_without_a_finished_run_it_names_the_run_and_how_to_make_one(tmp_path):
    root = tmp_path / "outputs" / "kd-smoke" / "root"
    result = subprocess.run([sys.executable, "-m", "pipelines.notebook", "--preset", "smoke", "--no-browser"],
                            cwd=REPO_ROOT, env={"PATH": "/usr/bin:/bin", "KD_PIPELINE_ROOT": str(root),
                                                "TF_CPP_MIN_LOG_LEVEL": "2", "TF_USE_LEGACY_KERAS": "1",
                                                "PYTHONPATH": str(REPO_ROOT)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    message = result.stderr.strip().splitlines()
    assert message[-2] == (f"make notebook: no finished run at {root.parent} "
                           f"(there is no ML Metadata store at {root.parent / 'metadata.sqlite'}).")
    assert "make run PRESET=smoke" in message[-1] and "KD_PIPELINE_ROOT" in message[-1]
    assert "Traceback" not in result.stderr


def test_a_store_without_that_pipeline_is_not_a_finished_run(smoke_first_run: SmokeRun, tmp_path):
    paths = smoke_first_run.paths
    assert notebook.unfinished_run_reason(paths.pipeline_root, paths.metadata_path) is None
    other = tmp_path / "kd-other" / "root"
    assert notebook.unfinished_run_reason(other, paths.metadata_path) == \
        f"{paths.metadata_path} records no component of the pipeline kd-other"
