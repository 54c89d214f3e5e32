"""The leaderboard's tables: records aggregated over trials, as Markdown and CSV cells, beside
the published figures, and each student against its baseline per superclass.

Last / Best follow the seed: the validation accuracy after the final epoch and the maximum
over the main stage's epochs, each as mean ± std over trials.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import statistics
from typing import Any

from kd_data.cifar100 import COARSE_LABEL_NAMES
from kd_results import published
from kd_results.records import BASELINE, TEACHER, label
from kd_trainer.contract import SLICE_KEY
from kd_trainer.methods import catalog


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(records: list[dict]) -> list[dict]:
    """One row per label (Teacher, Student (baseline), each method), means and stds over trials."""
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(label(record), []).append(record)
    rows = []
    for name, members in groups.items():
        evaluated = [m for m in members if "top1" in m]
        row: dict[str, Any] = {"label": name, "trials": len(members), "network": members[0]["network"],
                               "parameters": members[0]["parameters"],
                               "failures": [m["failure"] for m in members if "failure" in m]}
        row["train_seconds"], row["train_seconds_std"] = _mean_std([m["train_seconds"] for m in members])
        if evaluated:
            for key in ("last", "best", "top1", "top5", "cross_entropy", "ece"):
                row[key], row[f"{key}_std"] = _mean_std([m[key] for m in evaluated])
        if any("gain" in m for m in members):
            row["gain"], row["gain_std"] = _mean_std([m["gain"] for m in members if "gain" in m])
        if members[0]["role"] == "student":
            row["blessed"] = sum(m["blessed"] for m in members)
        rows.append(row)
    return rows


def _pm(row: dict, key: str, scale: float = 100.0, signed: bool = False) -> str:
    """`mean ± std` over trials; the mean alone for one trial (no spread to show)."""
    if key not in row:
        return "failed"
    sign = "+" if signed else ""
    mean = f"{scale * row[key]:{sign}.2f}"
    return mean if row["trials"] == 1 else f"{mean} ± {scale * row[f'{key}_std']:.2f}"


TABLE_COLUMNS = ["Method", "Trials", "Last acc.", "Best acc.", "Top-1 (TFMA)", "Gain", "Top-5", "Cross-entropy",
                 "ECE (%)", "Blessed", "Network", "Parameters", "Train (min)", "Failures"]


def table_cells(row: dict) -> list[str]:
    """An aggregated row as the cells of TABLE_COLUMNS."""
    return [row["label"], str(row["trials"]), _pm(row, "last"), _pm(row, "best"), _pm(row, "top1"),
            _pm(row, "gain", signed=True) if "gain" in row else "", _pm(row, "top5"),
            _pm(row, "cross_entropy", scale=1.0), _pm(row, "ece"),
            f"{row['blessed']}/{row['trials']}" if "blessed" in row else "",
            row["network"], f"{row['parameters']:,}", f"{row['train_seconds'] / 60:.1f}", "; ".join(row["failures"])]


def markdown(columns: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def markdown_table(rows: list[dict]) -> str:
    return markdown(TABLE_COLUMNS, [table_cells(row) for row in rows])


def csv_table(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(TABLE_COLUMNS)
    writer.writerows(table_cells(row) for row in rows)
    return buffer.getvalue()


LITERATURE_COLUMNS = ["Method", "Ours: last", "Ours: best", "Published: last", "Published: best",
                      "Difference (ours − published)", "Source"]


def literature_rows(rows: list[dict], configuration: dict) -> list[list[str]]:
    """Our Last / Best beside each published figure for the preset's protocol and pair (none if the
    preset follows no published protocol). Differences compare like with like: last with last, best with best."""
    protocol = configuration.get("protocol", "")
    if not protocol:
        return []
    label_params = {"teacher": {}, "baseline": {}}
    for method in configuration.get("methods", []):
        defaults = dataclasses.asdict(catalog.entry(method).params())
        label_params[method] = {**defaults, **configuration.get("method_params", {}).get(method, {})}
    figures = published.beside(protocol, configuration["teacher"]["model"], configuration["student"]["model"],
                               label_params, published.load())
    keys = {TEACHER: "teacher", BASELINE: "baseline"}
    table = []
    for row in rows:
        for figure in figures.get(keys.get(row["label"], row["label"]), []):
            differences = [f"{metric} {100 * row[metric] - value:+.2f}" for metric, value
                           in (("last", figure.last), ("best", figure.best)) if value is not None and metric in row]
            table.append([row["label"], _pm(row, "last"), _pm(row, "best"),
                          "" if figure.last is None else f"{figure.last:.2f}",
                          "" if figure.best is None else f"{figure.best:.2f}", ", ".join(differences), figure.source])
    return table


# The per-superclass table: each student against the baseline of its trial.
SUPERCLASS_COLUMNS = [  # (header, record key, scale, decimals)
    ("Top-1 (%)", "top1", 100.0, 2), ("Top-5 (%)", "top5", 100.0, 2), ("Cross-entropy", "cross_entropy", 1.0, 3),
    ("ECE (%)", "ece", 100.0, 2)]


def superclass_rows(records: list[dict]) -> list[dict]:
    """One row per evaluated student and superclass: its metrics, its trial's baseline's and their difference."""
    baselines = {r["trial"]: r for r in records if r["role"] == "baseline" and "superclass_metrics" in r}
    rows = []
    for record in records:
        if record["role"] != "student" or "superclass_metrics" not in record or record["trial"] not in baselines:
            continue
        baseline = baselines[record["trial"]]["superclass_metrics"]
        for superclass, metrics in sorted(record["superclass_metrics"].items()):
            row = {"method": record["method"], "trial": record["trial"], SLICE_KEY: superclass,
                   "superclass": COARSE_LABEL_NAMES[superclass], "examples": int(metrics["examples"])}
            for _, key, _, _ in SUPERCLASS_COLUMNS:
                row.update({key: metrics[key], f"baseline_{key}": baseline[superclass][key],
                            f"{key}_diff": metrics[key] - baseline[superclass][key]})
            rows.append(row)
    return rows
