"""benchmarks/thread_settings.py refuses a malformed --settings entry with what it expected."""

from __future__ import annotations

import argparse
import importlib.util

import pytest
from conftest import REPO_ROOT


def _thread_settings():
    spec = importlib.util.spec_from_file_location("thread_settings", REPO_ROOT / "benchmarks" / "thread_settings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the module level needs no TensorFlow
    return module


def test_settings_are_intra_inter_thread_counts_and_onednn():
    parse = _thread_settings().parse_setting
    assert parse("2:1") == (2, 1, "1") and parse("0:0:0") == (0, 0, "0") and parse("1:1:1") == (1, 1, "1")
    for bad in ("two", "2", "2:1:on", "2:1:0:0"):
        with pytest.raises(argparse.ArgumentTypeError,
                           match=rf"expected INTRA:INTER thread counts and optionally :0 or :1 .*got '{bad}'"):
            parse(bad)
    with pytest.raises(argparse.ArgumentTypeError, match=r"thread counts must be >= 0, got '-1:1'"):
        parse("-1:1")
