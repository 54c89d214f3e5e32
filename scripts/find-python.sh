# Sourced by scripts/setup.sh and scripts/setup-bench.sh: where to find a Python X.Y interpreter.

# is_python X.Y PATH: PATH runs, is Python X.Y and has venv.
is_python() { "$2" -c "import sys, venv; sys.exit('%d.%d' % sys.version_info[:2] != '$1')" 2>/dev/null; }

# find_python X.Y [EXPLICIT]: prints the interpreter to use, or fails. An EXPLICIT one (the user's
# KD_PYTHON / KD_BENCH_PYTHON) is that one or none; otherwise pyenv's X.Y, then pythonX.Y on PATH.
find_python() {
  local version="$1" explicit="${2:-}" candidate
  if [ -n "$explicit" ]; then
    is_python "$version" "$explicit" && echo "$explicit"
    return
  fi
  for candidate in "$(command -v pyenv >/dev/null && echo "$(pyenv prefix "$version" 2>/dev/null)/bin/python$version" || true)" \
                   "$(command -v "python$version" || true)"; do
    if [ -n "$candidate" ] && is_python "$version" "$candidate"; then echo "$candidate"; return 0; fi
  done
  return 1
}
