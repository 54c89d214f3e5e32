"""Published CIFAR-100 results to show beside a run's own, kept as data: one CSV per source in
kd_results/published/, whose first line (`# ...`) names the repository, file and commit.

Columns: protocol (the preset field `protocol`: `seed`, `crd`), teacher, student (our model
names), method (ours; `teacher` / `baseline` for the undistilled networks), params (JSON of the
method parameters the figure needs, e.g. logit standardization; empty: the method's protocol
defaults), last, best (top-1 %, either may be empty: each source reports what it reports).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

PUBLISHED_DIR = Path(__file__).resolve().parent / "published"


@dataclasses.dataclass(frozen=True)
class PublishedFigure:
    protocol: str
    teacher: str
    student: str
    method: str
    params: Mapping[str, Any]
    last: float | None
    best: float | None
    source: str


def _number(text: str, where: str) -> float | None:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{where}: expected a top-1 accuracy in percent or nothing, got {text!r}") from None


def load(directory: Path = PUBLISHED_DIR) -> list[PublishedFigure]:
    figures = []
    for path in sorted(directory.glob("*.csv")):
        lines = path.read_text().splitlines()
        if not lines or not lines[0].startswith("# "):
            raise ValueError(f"{path}: the first line must be '# <source: repository, file, commit>'")
        source = lines[0][2:].strip()
        for number, row in enumerate(csv.DictReader(lines[1:]), start=3):
            where = f"{path}:{number}"
            figures.append(PublishedFigure(
                protocol=row["protocol"], teacher=row["teacher"], student=row["student"], method=row["method"],
                params=json.loads(row["params"]) if row["params"] else {}, last=_number(row["last"], where),
                best=_number(row["best"], where), source=source))
    return figures


def beside(protocol: str, teacher: str, student: str, label_params: Mapping[str, Mapping[str, Any]],
           figures: list[PublishedFigure]) -> dict[str, list[PublishedFigure]]:
    """The published figures for each method (or `teacher` / `baseline`) of a run, by method.

    A figure that needs method parameters (e.g. logit standardization on) applies only when the
    run's parameters include them; of a source's figures that apply, the most specific is kept.
    """
    chosen: dict[tuple[str, str], PublishedFigure] = {}
    for figure in figures:
        if (figure.protocol, figure.teacher, figure.student) != (protocol, teacher, student):
            continue
        if figure.method not in label_params:
            continue
        params = label_params[figure.method]
        if any(params.get(key) != value for key, value in figure.params.items()):
            continue
        key = (figure.method, figure.source)
        if key not in chosen or len(figure.params) > len(chosen[key].params):
            chosen[key] = figure
    by_method: dict[str, list[PublishedFigure]] = {}
    for (method, _), figure in sorted(chosen.items()):
        by_method.setdefault(method, []).append(figure)
    return by_method
