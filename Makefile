# Entry points. Every target installs what it needs first (scripts/setup.sh is idempotent).
SHELL := /bin/bash
VENV ?= .venv
PRESET ?= quick
# The real dataset: ../shared/data on the project's machines, else $KD_CIFAR100_DIR / a download.
export KD_CIFAR100_DIR ?= $(if $(wildcard ../shared/data/cifar-100-python.tar.gz),$(abspath ../shared/data),)
export TF_USE_LEGACY_KERAS := 1
# oneDNN CPU kernels (TensorFlow enables them itself only with AVX-512/AMX): docs/benchmarks.md.
export TF_ENABLE_ONEDNN_OPTS ?= 1
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup browser run notebook test compile-kfp bench-setup bench-peer clean

setup:
	@bash scripts/setup.sh

run: setup  ## the main job: the pipeline on the $(PRESET) preset (make run PRESET=smoke)
	$(VENV)/bin/kd run --preset $(PRESET) $(ARGS)

# Headless Chromium for the browser tests (tests/test_browser.py): apt-get where it can, else they skip and say why.
browser:
	@bash scripts/setup-browser.sh

# notebooks/tfma_results.ipynb with TFMA's views, in nbclassic, on the $(PRESET) run (outputs/kd-$(PRESET)/)
notebook: setup  ## TFMA's views of a finished run in Jupyter (make notebook PRESET=smoke)
	$(VENV)/bin/python -m pipelines.notebook --preset $(PRESET) $(ARGS)

test: setup browser  ## the whole test suite
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# make compile-kfp PRESET=seed IMAGE=REGISTRY/kd-benchmark:TAG PIPELINE_ROOT=gs://BUCKET/kd (docs/kubeflow.md)
compile-kfp: setup  ## the $(PRESET) pipeline as a KFP v2 definition (outputs/kubeflow/kd-$(PRESET).yaml)
	@[ -n "$(IMAGE)" ] && [ -n "$(PIPELINE_ROOT)" ] || { echo "compile-kfp: set IMAGE=REGISTRY/kd-benchmark:TAG (skaffold build) and PIPELINE_ROOT=gs://BUCKET/PATH" >&2; exit 2; }
	$(VENV)/bin/kd compile --target kubeflow --preset $(PRESET) --image $(IMAGE) --pipeline-root $(PIPELINE_ROOT) $(ARGS)

# .venv-bench: Python 3.11 with TensorFlow and PyTorch's CPU build, for benchmarks/peer_torch.py (docs/benchmarks.md)
bench-setup:
	@bash scripts/setup-bench.sh

# make bench-peer ARGS="--presets quick --rounds 3 --steps 3"
bench-peer: bench-setup  ## our Soft-logits step against the same step in PyTorch (quick and seed pairs)
	PYTHONPATH=$(CURDIR) $(or $(KD_BENCH_VENV),.venv-bench)/bin/python benchmarks/peer_torch.py $(ARGS)

clean:
	rm -rf outputs .pytest_cache
