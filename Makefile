# Entry points. Every target installs what it needs first (scripts/setup.sh is idempotent).
SHELL := /bin/bash
VENV ?= .venv
PRESET ?= quick
# The real dataset: ../shared/data on the project's machines, else $KD_CIFAR100_DIR / a download.
export KD_CIFAR100_DIR ?= $(if $(wildcard ../shared/data/cifar-100-python.tar.gz),$(abspath ../shared/data),)
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup run test clean

setup:
	@bash scripts/setup.sh

run: setup  ## the main job: the pipeline on the $(PRESET) preset (make run PRESET=smoke)
	$(VENV)/bin/kd run --preset $(PRESET) $(ARGS)

test: setup  ## the whole test suite
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf outputs .pytest_cache
