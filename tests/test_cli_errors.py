"""`kd` reports failures as one clear line, keeps tracebacks in a log file (or prints them with
--verbose), and answers commands that do not train without importing TensorFlow (issue 16,
item 5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, SMOKE_OVERRIDES
from pipelines import cli

_PROBE = """
import json, os, sys
from pipelines import cli
try:
    status = cli.main(sys.argv[1:])
except SystemExit as exit:
    status = exit.code
print(json.dumps({"status": status, "tensorflow": "tensorflow" in sys.modules,
                  "legacy_keras": os.environ.get("TF_USE_LEGACY_KERAS"),
                  "log_level": os.environ.get("TF_CPP_MIN_LOG_LEVEL")}))
"""


def _probe(*argv: str) -> tuple[dict, str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("TF_USE_LEGACY_KERAS", "TF_CPP_MIN_LOG_LEVEL")}
    environment["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=120,
                          env=environment, cwd=REPO_ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.mark.parametrize("argv, status", [
    (["presets"], 0),
    (["presets", "smoke", "--set", "student.epochs=2"], 0),
    (["--help"], 0),
    (["run", "--help"], 0),
    (["run", "--preset", "nope"], 2),
    (["run", "--set", "student.epochs=0"], 2),
    (["report"], 2),  # argparse: a missing argument
])
def test_commands_that_do_not_train_never_import_tensorflow(argv, status):
    result, stderr = _probe(*argv)
    assert result == {"status": status, "tensorflow": False, "legacy_keras": "1", "log_level": "2"}, stderr
    assert "Traceback" not in stderr


def test_configuration_errors_are_one_line(capsys):
    assert cli.main(["run", "--preset", "quick", "--set", "seed=-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kd: error: invalid preset 'quick': ") and "seed must be an integer" in err
    assert "\n" not in err


def test_the_dataset_error_is_dug_out_of_beams_wrapping():
    beam_text = ("Traceback (most recent call last):\n  File ...\nRuntimeError: a pipeline step failed\n"
                 "kd_data.cifar100.DatasetError: /data/cifar-100-python.tar.gz: the archive is corrupt "
                 "[while running 'Read[train]'] [while running 'Run[CifarExampleGen]']")
    assert cli._input_error(RuntimeError(beam_text)) == (
        "DatasetError", "/data/cifar-100-python.tar.gz: the archive is corrupt")
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError as outer:
        assert cli._input_error(outer) is None


def test_failures_log_the_traceback_or_print_it_with_verbose(tmp_path, capsys):
    log = tmp_path / "logs" / "report.log"
    missing = tmp_path / "nowhere" / "root"
    assert cli.main(["report", str(missing), "--log-file", str(log)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [f"kd: error: {missing}: no pipeline root there (e.g. outputs/kd-quick/root)",
                                f"kd: full traceback in {log} (or run with --verbose)"]
    assert "Traceback (most recent call last)" in log.read_text() and "RunFolderError" in log.read_text()
    assert cli.main(["report", str(missing), "--log-file", str(log), "--verbose"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.splitlines()[-1] == f"kd: full traceback in {log}"


@pytest.mark.e2e
def test_kd_run_on_a_corrupt_archive_ends_with_one_clear_message(tmp_path, tiny_archive, capsys):
    """Through BeamDagRunner and the ExampleGen's own Beam pipeline: the last two lines say
    what is wrong with which file and where the traceback is; no split is published."""
    corrupt = tmp_path / "data" / tiny_archive.name
    corrupt.parent.mkdir()
    payload = bytearray(tiny_archive.read_bytes())
    payload[-8] ^= 0xFF  # the gzip CRC-32
    corrupt.write_bytes(bytes(payload))
    output_dir = tmp_path / "outputs"
    argv = ["run", "--preset", "smoke", "--output-dir", str(output_dir), "--set", f"data.data_dir={corrupt.parent}"]
    for override in SMOKE_OVERRIDES:
        argv += ["--set", override]
    assert cli.main(argv) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines[-2].startswith(f"kd: error: {corrupt}: the archive is corrupt or truncated: gzip integrity check "
                                f"(CRC-32 and length trailer) failed: CRC check failed"), lines[-2]
    log = Path(lines[-1].removeprefix("kd: full traceback in ").removesuffix(" (or run with --verbose)"))
    assert log.parent == output_dir / "kd-smoke" / "logs" and "DatasetError" in log.read_text()
    assert not list(output_dir.rglob("Split-train")) and not list(output_dir.rglob("*.gz"))
