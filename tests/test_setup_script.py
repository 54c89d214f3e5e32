"""The setup scripts say what is missing when their Python is not found."""

import os
import subprocess

import pytest

from conftest import REPO_ROOT


@pytest.mark.parametrize("script, version, venv_variable, python_variable, advice", [
    ("scripts/setup.sh", "3.10", "KD_VENV", "KD_PYTHON", "pyenv install 3.10"),
    ("scripts/setup-bench.sh", "3.11", "KD_BENCH_VENV", "KD_BENCH_PYTHON", "pyenv install 3.11"),
])
def test_missing_python_is_explained_and_nothing_is_created(tmp_path, script, version, venv_variable,
                                                            python_variable, advice):
    venv = tmp_path / "venv"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), venv_variable: str(venv),
           python_variable: f"/nonexistent/python{version}"}
    result = subprocess.run(["bash", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"no Python {version} interpreter found" in result.stderr
    assert advice in result.stderr and python_variable in result.stderr
    assert not os.path.exists(venv)


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO_ROOT / "README.md").read_text()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "\nmake test\n" in readme and "\nmake test\n" in ci
