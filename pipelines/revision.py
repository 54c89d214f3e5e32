"""The code revision that results are tied to."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REVISION_ENV = "KD_CODE_REVISION"
REPO_ROOT = Path(__file__).resolve().parent.parent


def code_revision() -> str:
    """`git describe` of this checkout (`-dirty` when modified), else $KD_CODE_REVISION.

    Container images have no .git: their build passes the revision in KD_CODE_REVISION.
    """
    if os.environ.get(REVISION_ENV):
        return os.environ[REVISION_ENV]
    try:
        described = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=REPO_ROOT,
                                   capture_output=True, text=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as error:
        raise RuntimeError(f"cannot determine the code revision: no git checkout at {REPO_ROOT} ({error}); "
                           f"set {REVISION_ENV}") from error
    return described.stdout.strip()
