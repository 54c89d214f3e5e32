"""The leaderboard's tables and report (kd_results), on synthetic per-model records."""

import io

import numpy as np
import pandas as pd
import pytest

from kd_data.cifar100 import COARSE_LABEL_NAMES
from kd_results import report, tables
from kd_trainer.contract import SLICE_KEY


def record(role, method, trial, top1, curve, gain=None, blessed=None):
    result = {"role": role, "method": method, "trial": trial, "network": "resnet8", "parameters": 83220,
              "code_revision": "abc", "last": curve[-1], "best": max(curve), "val_accuracy_curve": curve,
              "train_seconds": 60.0 * trial, "top1": top1, "top5": top1 + 0.2, "cross_entropy": 3.0 - top1, "ece": 0.1 * top1,
              "superclass_top1": {k: top1 for k in range(20)},
              "superclass_metrics": {k: {"top1": top1 + k / 1000, "top5": top1 + 0.2, "cross_entropy": 3.0 - top1 + k,
                                         "ece": 0.1 * top1, "examples": 100.0 + k} for k in range(20)}}
    if gain is not None:
        result.update(gain=gain, blessed=blessed, superclass_gain={k: gain for k in range(20)})
    return result


RECORDS = [
    record("teacher", "", 1, 0.40, [0.30, 0.41, 0.40]),
    record("baseline", "", 1, 0.20, [0.10, 0.21]),
    record("baseline", "", 2, 0.22, [0.12, 0.22]),
    record("student", "at", 1, 0.25, [0.15, 0.26], gain=0.05, blessed=True),
    record("student", "at", 2, 0.21, [0.11, 0.20], gain=-0.01, blessed=False),
]


def test_rows_average_over_trials():
    rows = {row["label"]: row for row in tables.aggregate(RECORDS)}
    assert list(rows) == ["Teacher", "Student (baseline)", "at"]
    at = rows["at"]
    assert at["trials"] == 2 and at["blessed"] == 1
    assert at["last"] == pytest.approx(0.23) and at["last_std"] == pytest.approx(np.std([0.26, 0.20], ddof=1))
    assert at["best"] == pytest.approx(0.23) and at["gain"] == pytest.approx(0.02)
    assert at["train_seconds"] == pytest.approx(90.0)
    assert rows["Teacher"]["best"] == 0.41 and rows["Teacher"]["last"] == 0.40 and rows["Teacher"]["last_std"] == 0
    assert "gain" not in rows["Student (baseline)"]


def test_markdown_table_has_a_row_per_label():
    table = tables.markdown_table(tables.aggregate(RECORDS))
    lines = table.splitlines()
    assert len(lines) == 2 + 3
    assert lines[4].startswith("| at | 2 | 23.00 ± 4.24 | 23.00 ± 4.24 | 23.00 ± 2.83 | +2.00 ± 4.24 |")
    assert "| 1/2 |" in lines[4]


def test_report_files_are_written(tmp_path):
    rows = report.write_report(str(tmp_path), RECORDS, {"name": "unit"}, "Unit report")
    assert len(rows) == 3
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json", "report.html", "val_accuracy.png",
                 "gains.png", "superclass_gains.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "val_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Code revision: abc" in (tmp_path / "leaderboard.md").read_text()


def test_a_run_whose_every_student_failed_still_gets_its_report(tmp_path):
    diverged = {key: value for key, value in record("student", "at", 1, 0.0, [0.05]).items()
                if key not in ("top1", "top5", "cross_entropy", "ece", "superclass_top1", "superclass_metrics")}
    diverged.update(blessed=False, failure="non-finite loss at stage main, epoch 1, step 3")
    rows = report.write_report(str(tmp_path), [*RECORDS[:2], diverged], {"name": "unit"}, "Unit report")
    assert [row["label"] for row in rows] == ["Teacher", "Student (baseline)", "at"]
    assert rows[2]["failures"] == ["non-finite loss at stage main, epoch 1, step 3"]
    assert (tmp_path / "superclass_gains.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| at | 1 | failed | failed | failed |  | failed | failed | failed | 0/1 |" in (tmp_path / "leaderboard.md").read_text()


def test_one_trial_shows_the_mean_without_a_spread():
    teacher_row = tables.aggregate(RECORDS)[0]
    assert tables.table_cells(teacher_row)[2:4] == ["40.00", "41.00"]


SEED_CONFIGURATION = {"protocol": "seed", "teacher": {"model": "seed_resnet32"}, "student": {"model": "seed_resnet8"},
                      "methods": ["at"], "method_params": {}}


def test_literature_table_puts_the_published_figures_beside_ours(tmp_path):
    rows = tables.aggregate(RECORDS)
    table = {row[0]: row for row in tables.literature_rows(rows, SEED_CONFIGURATION)}
    assert set(table) == {"Teacher", "Student (baseline)", "at"}
    # The seed's AT: 72.31 last / 72.60 best; ours 23.00 / 23.00 (two trials).
    assert table["at"][3:6] == ["72.31", "72.60", "last -49.31, best -49.60"]
    assert "sseung0703/KD_methods_with_TF" in table["at"][6]
    report.write_report(str(tmp_path), RECORDS, SEED_CONFIGURATION, "Seed")
    assert "Beside the literature (protocol 'seed')" in (tmp_path / "report.html").read_text()
    assert "| at | 23.00 ± 4.24 |" in (tmp_path / "leaderboard.md").read_text()


def test_no_literature_without_a_protocol():
    assert tables.literature_rows(tables.aggregate(RECORDS), {"name": "quick"}) == []


def test_superclass_rows_compare_each_student_with_its_trials_baseline():
    rows = tables.superclass_rows(RECORDS)
    assert [(r["method"], r["trial"]) for r in rows[::20]] == [("at", 1), ("at", 2)] and len(rows) == 40
    by_key = {(r["role"], r["trial"]): r["superclass_metrics"] for r in RECORDS if r["role"] != "teacher"}
    for row in rows:
        student, baseline = by_key["student", row["trial"]][row[SLICE_KEY]], \
            by_key["baseline", row["trial"]][row[SLICE_KEY]]
        assert row["superclass"] == COARSE_LABEL_NAMES[row[SLICE_KEY]]
        assert row["examples"] == 100 + row[SLICE_KEY]
        for key in ("top1", "top5", "cross_entropy", "ece"):
            assert (row[key], row[f"baseline_{key}"]) == (student[key], baseline[key])
            assert row[f"{key}_diff"] == pytest.approx(np.float64(student[key]) - np.float64(baseline[key]))


def test_report_has_the_sortable_superclass_table(tmp_path):
    report.write_report(str(tmp_path), RECORDS, {"name": "unit"}, "Unit report")
    page = (tmp_path / "report.html").read_text()
    tables = pd.read_html(io.StringIO(page), attrs={"id": "superclass-table"})
    (table,) = tables
    assert len(table) == 40 and list(table.columns[:4]) == ["Student", "Trial", "Superclass", "Examples"]
    first = table.iloc[0]  # at, trial 1, superclass 0: 0.25 against 0.20
    assert (first["Student"], first["Trial"], first["Superclass"], first["Examples"]) == \
        ("at", 1, COARSE_LABEL_NAMES[0], 100)
    assert list(first.iloc[4:7]) == [25.0, 20.0, 5.0]  # top-1 (%), baseline, difference
    assert list(first.iloc[10:13]) == [2.75, 2.8, -0.05]  # cross-entropy
    assert 'class="sortable"' in page and "<script>" in page
    assert report.superclass_table_html([r for r in RECORDS if r["role"] != "baseline"]) == ""
