"""scripts/setup.sh must say what is missing when there is no Python 3.10."""

import os
import subprocess

from conftest import REPO_ROOT


def test_missing_python_310_is_explained_and_nothing_is_created(tmp_path):
    venv = tmp_path / "venv"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KD_VENV": str(venv),
           "KD_PYTHON": "/nonexistent/python3.10"}
    result = subprocess.run(["bash", "scripts/setup.sh"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert "no Python 3.10 interpreter found" in result.stderr
    assert "pyenv install 3.10" in result.stderr and "KD_PYTHON" in result.stderr
    assert not os.path.exists(venv)


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO_ROOT / "README.md").read_text()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "\nmake test\n" in readme and "\nmake test\n" in ci
