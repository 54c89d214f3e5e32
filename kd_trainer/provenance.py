"""The git revision a result comes from, read when a component runs (recorded, never a cache key).

Lives in kd_trainer because run_fn records it in every trainer_config.json; pipelines/revision.py
(the per-component code fingerprints that are cache keys) re-exports it for the pipeline side.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

REVISION_ENV = "KD_CODE_REVISION"
REPO_ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
                          timeout=30).stdout.strip()


def code_revision() -> str:
    """The commit of this checkout; with uncommitted changes, `<commit>-dirty-<hash of the diff>`.

    Container images have no .git: their build (and the compiled Kubeflow pipeline) sets KD_CODE_REVISION.
    """
    if os.environ.get(REVISION_ENV):
        return os.environ[REVISION_ENV]
    try:
        commit = _git("rev-parse", "--short=12", "HEAD")
        diff = _git("diff", "HEAD")
    except (OSError, subprocess.SubprocessError) as error:
        raise RuntimeError(f"cannot determine the code revision: no git checkout at {REPO_ROOT} ({error}); "
                           f"set {REVISION_ENV}") from error
    if not diff:
        return commit
    return f"{commit}-dirty-{hashlib.sha256(diff.encode()).hexdigest()[:8]}"
