"""benchmarks/peer_torch.py's helpers, its environment's pins and set-up script. The benchmark
itself needs PyTorch, which only .venv-bench has (`make bench-peer`, docs/benchmarks.md)."""

from __future__ import annotations

import importlib.util
import re

import pytest
from conftest import REPO_ROOT


def _peer_torch():
    spec = importlib.util.spec_from_file_location("peer_torch", REPO_ROOT / "benchmarks" / "peer_torch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the module level needs neither TensorFlow nor PyTorch
    return module


def _pins(path) -> dict[str, str]:
    pins = {}
    for line in (REPO_ROOT / path).read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip())
        if match:
            pins[match[1].lower().replace("_", "-")] = match[2]
    return pins


def test_bench_environment_pins_agree_with_the_pipeline_and_pyproject():
    bench, bench_lock, lock = _pins("requirements/bench.txt"), _pins("requirements/bench-lock.txt"), _pins(
        "requirements/lock.txt")
    # TensorFlow, tf_keras and numpy as the pipeline's; every direct requirement pinned alike in the lock.
    for package in ("tensorflow", "tf-keras", "numpy"):
        assert bench[package] == lock[package]
    assert all(bench_lock[package] == version for package, version in bench.items())
    # Every package both locks name, torch aside (the CPU build), has the pipeline's version.
    assert {p: v for p, v in bench_lock.items() if p in lock and p != "torch" and lock[p] != v} == {}
    # pyproject's `bench` extra names the same PyTorch release as the environment's CPU build.
    extra = re.search(r'^bench = \["torch==([^"]+)"\]', (REPO_ROOT / "pyproject.toml").read_text(), re.M)
    assert extra and bench["torch"] == f"{extra[1]}+cpu"


def test_cpu_description_names_the_model_and_its_vector_units():
    peer_torch = _peer_torch()
    cpuinfo = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 23\nmodel\t\t: 49\n"
               "model name\t: AMD EPYC 7B12\nflags\t\t: fpu sse avx avx2 fma\n\nprocessor\t: 1\n"
               "model name\t: AMD EPYC 7B12\n")
    assert peer_torch.cpu_description(cpuinfo, 2) == "AMD EPYC 7B12 (family 23, model 49; AVX2, no AVX-512), 2 CPUs"
    assert "AVX-512, AMX" in peer_torch.cpu_description("model name : Xeon\nflags : avx2 avx512f amx_tile\n", 1)


def test_summary_and_table():
    peer_torch = _peer_torch()
    row = peer_torch.summarize(128, ours=[0.5, 0.4, 0.6], torch_times=[1.0, 0.8, 0.9])
    assert row == pytest.approx({"ours": 128 / 0.5, "torch": 128 / 0.9, "ratio": 0.9 / 0.5})
    table = peer_torch.markdown([{"preset": "quick", "teacher": "resnet32", "student": "resnet8", **row}],
                                {"CPU": "AMD EPYC", "Command": "`benchmarks/peer_torch.py`"})
    assert table.splitlines() == [
        "- CPU: AMD EPYC", "- Command: `benchmarks/peer_torch.py`", "",
        "| Preset | Teacher -> student | Ours (img/s) | PyTorch (img/s) | Ours / PyTorch |", "|---|---|---|---|---|",
        "| quick | resnet32 -> resnet8 | 256.0 | 142.2 | 1.80 |"]


def test_twin_module_names_cover_every_layer_with_weights():
    """The PyTorch twin names its modules after our layers (weights are copied by name for its check)."""
    from kd_trainer import models

    peer_torch = _peer_torch()
    block_parts = {"conv1", "bn1", "conv2", "bn2", "proj_conv", "proj_bn"}
    for name in ("resnet8", "resnet32", "seed_resnet8"):
        spec = models.model_spec(name)
        expected = {"stem_conv", "stem_bn", "logits"} | {
            f"stage{stage}_block{block}.{part}" for stage in (1, 2, 3) for block in range(1, spec.blocks_per_stage + 1)
            for part in block_parts if not part.startswith("proj") or (block == 1 and stage > 1)
            or (block == 1 and stage == 1 and spec.stem_channels != spec.stage_channels[0])}
        names = {peer_torch.torch_module_name(layer.name) for layer in models.build_model(name).layers if layer.weights}
        assert names == expected
