#!/usr/bin/env bash
# Creates .venv-bench, the environment of benchmarks/peer_torch.py (our step side by side with
# PyTorch): Python 3.11 with TensorFlow, tf_keras and numpy at the pipeline's versions and PyTorch's
# CPU-only build, every version pinned by requirements/bench-lock.txt. Not the project's .venv:
# PyTorch's CPU-only wheels exist for Python 3.11 where this project is set up, while TFX 1.16 needs
# 3.10 (docs/benchmarks.md says why). The benchmark needs none of TFX: it runs with PYTHONPATH at
# the repository root and imports kd_trainer, pipelines (no TFX) and benchmarks/step_time.py.
#
# Idempotent: a stamp derived from the requirement files and this script skips a finished setup.
#   KD_BENCH_VENV    the environment's folder (default .venv-bench)
#   KD_BENCH_PYTHON  the Python 3.11 interpreter to use (default: pyenv's 3.11, else python3.11 on PATH)
#   KD_TORCH_INDEX   where torch's CPU build comes from (default PyTorch's CPU index,
#                    https://download.pytorch.org/whl/cpu); pip's own configuration (e.g. its
#                    find-links) is consulted too, so a local copy of the wheel also serves.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${KD_BENCH_VENV:-.venv-bench}"
requirements="requirements/bench.txt"
lock="requirements/bench-lock.txt"
stamp="$venv/.kd-bench-setup-$(cat "$requirements" "$lock" "$0" | sha256sum | cut -c1-16)"
[ -f "$stamp" ] && exit 0

source scripts/find-python.sh

if [ -x "$venv/bin/python" ] && is_python 3.11 "$venv/bin/python"; then
  echo "setup-bench: updating $venv to $lock"
else
  if ! python=$(find_python 3.11 "${KD_BENCH_PYTHON:-}"); then
    cat >&2 <<MSG
error: no Python 3.11 interpreter found for $venv (benchmarks/peer_torch.py).
  Install one (pyenv install 3.11, or apt-get install python3.11 python3.11-venv), or point
  KD_BENCH_PYTHON at an existing 3.11 interpreter.
MSG
    exit 1
  fi
  echo "setup-bench: creating $venv with $python ($("$python" --version 2>&1))"
  rm -rf "$venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip)
"${pip[@]}" install --quiet --constraint "$lock" pip wheel
# torch's CPU build first, alone (its index has no other packages we want); then the rest from PyPI.
torch=$(grep -E '^torch==' "$lock")
"${pip[@]}" install --quiet --no-deps --retries 1 --index-url "${KD_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}" \
  "$torch"
"${pip[@]}" install --quiet --constraint "$lock" --requirement "$requirements"
rm -f "$venv"/.kd-bench-setup-*
touch "$stamp"
echo "setup-bench: done"
