#!/usr/bin/env bash
# Creates the project's virtual environment (Python 3.10, every version pinned by
# requirements/lock.txt) and installs the project into it in editable mode.
# Idempotent: a stamp derived from the lock file and pyproject.toml skips a finished setup;
# when either changes, pip brings the existing environment in line (no rebuild).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${KD_VENV:-.venv}"
lock="requirements/lock.txt"
stamp="$venv/.kd-setup-$(cat "$lock" pyproject.toml | sha256sum | cut -c1-16)"
[ -f "$stamp" ] && exit 0

source scripts/find-python.sh

if [ -x "$venv/bin/python" ] && is_python 3.10 "$venv/bin/python"; then
  echo "setup: updating $venv to $lock"
else
  if ! python=$(find_python 3.10 "${KD_PYTHON:-}"); then
    cat >&2 <<MSG
error: no Python 3.10 interpreter found.
  TFX 1.16 supports Python 3.9 and 3.10 only; this project pins 3.10 (.python-version).
  Install one, then re-run this command, with either of:
    pyenv install 3.10        # pyenv reads .python-version in this folder
    apt-get install python3.10 python3.10-venv
  or point KD_PYTHON at an existing 3.10 interpreter: KD_PYTHON=/path/to/python3.10
MSG
    exit 1
  fi
  echo "setup: creating $venv with $python ($("$python" --version 2>&1))"
  rm -rf "$venv"
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade "pip==26.3" "setuptools==69.5.1" "wheel==0.48.0"
"$venv/bin/python" -m pip install --quiet --constraint "$lock" --editable ".[test]"
# TFMA's views in the classic Notebook front-end (nbclassic, `make notebook`): its wheel installs the
# nbextension's files; this enables it in $venv/etc/jupyter/nbconfig/notebook.json, with
# notebooks/nbextensions/kd_tfma_widgets, which makes TFMA's widgets work with ipywidgets 7.8 (see its header).
"$venv/bin/jupyter" nbclassic-extension install --sys-prefix --overwrite notebooks/nbextensions/kd_tfma_widgets >/dev/null
"$venv/bin/jupyter" nbclassic-extension enable --sys-prefix tensorflow_model_analysis/extension >/dev/null
"$venv/bin/jupyter" nbclassic-extension enable --sys-prefix kd_tfma_widgets/extension >/dev/null
rm -f "$venv"/.kd-setup-*
touch "$stamp"
echo "setup: done"
