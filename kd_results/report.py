"""The leaderboard's output folder, written from the records of one run:

    leaderboard.md / .csv   one row per method plus Teacher and Student (baseline)
    leaderboard.json        every number, per model and aggregated
    val_accuracy.png        validation accuracy per epoch, mean over trials with a ± std band
    gains.png               top-1 gain over the baseline per method (± std over trials)
    superclass_gains.png    superclass x method heatmap of top-1 gains
    report.html             all of the above in one self-contained page (no remote resources)
"""

from __future__ import annotations

import base64
import html
import json
import os

import tensorflow as tf

from kd_results import plots
from kd_results.tables import (LITERATURE_COLUMNS, SUPERCLASS_COLUMNS, TABLE_COLUMNS, aggregate, csv_table,
                               literature_rows, markdown, markdown_table, superclass_rows, table_cells)
from kd_trainer.contract import LEADERBOARD_JSON, LEADERBOARD_TABLE, REPORT_PAGE, SLICE_KEY


def _html_table(columns: list[str], cells: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _sortable_cell(value: float | int | str, text: str) -> str:
    return f'<td data-sort="{html.escape(str(value))}">{html.escape(text)}</td>'


# Sorts a table.sortable by the clicked column (numbers by data-sort, text otherwise; a second click reverses)
# and shows the rows of the student chosen in the select.superclass-filter. Inline: the report has no remote resource.
_SORT_SCRIPT = """<script>
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (header, column) {
    header.addEventListener("click", function () {
      var ascending = header.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var body = table.tBodies[0], rows = Array.from(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[column].dataset.sort, y = b.cells[column].dataset.sort;
        var order = isNaN(x) || isNaN(y) ? x.localeCompare(y) : Number(x) - Number(y);
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
document.querySelectorAll("select.superclass-filter").forEach(function (select) {
  select.addEventListener("change", function () {
    document.querySelectorAll("#superclass-table tbody tr").forEach(function (row) {
      row.hidden = select.value !== "" && row.dataset.student !== select.value;
    });
  });
});
</script>"""


def superclass_table_html(records: list[dict]) -> str:
    """The report's section with the per-superclass table ("" without an evaluated student and baseline)."""
    rows = superclass_rows(records)
    if not rows:
        return ""
    headers = ["Student", "Trial", "Superclass", "Examples"]
    for header, _, _, _ in SUPERCLASS_COLUMNS:
        headers += [header, "Baseline", "Difference"]
    body = []
    for row in rows:
        student = f"{row['method']} (trial {row['trial']})"
        cells = [_sortable_cell(row["method"], row["method"]), _sortable_cell(row["trial"], str(row["trial"])),
                 _sortable_cell(row["superclass"], row["superclass"]),
                 _sortable_cell(row["examples"], str(row["examples"]))]
        for _, key, scale, digits in SUPERCLASS_COLUMNS:
            cells += [_sortable_cell(row[key], f"{scale * row[key]:.{digits}f}"),
                      _sortable_cell(row[f"baseline_{key}"], f"{scale * row[f'baseline_{key}']:.{digits}f}"),
                      _sortable_cell(row[f"{key}_diff"], f"{scale * row[f'{key}_diff']:+.{digits}f}")]
        body.append(f'<tr data-student="{html.escape(student)}">{"".join(cells)}</tr>')
    students = sorted({f"{row['method']} (trial {row['trial']})" for row in rows})
    options = "".join(f'<option value="{html.escape(s)}">{html.escape(s)}</option>' for s in students)
    head = "".join(f'<th scope="col">{html.escape(h)}</th>' for h in headers)
    return f"""<h2>Per superclass: each student against its baseline</h2>
<p>TFMA's <code>{SLICE_KEY}</code> slices of the eval split: each student's metrics, the baseline student's
(same trial) and the difference (student minus baseline). Click a column header to sort; click again to reverse.</p>
<p><label>Student: <select class="superclass-filter"><option value="">all</option>{options}</select></label></p>
<table id="superclass-table" class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>
{_SORT_SCRIPT}"""


def html_report(title: str, rows: list[dict], figures: dict[str, bytes], configuration: dict, revisions: list[str],
                superclass_section: str = "") -> str:
    """One page, no external resources: inline CSS, plots as data URIs."""
    literature = literature_rows(rows, configuration)
    literature_section = (f"<h2>Beside the literature (protocol '{html.escape(configuration['protocol'])}')</h2>"
                          + _html_table(LITERATURE_COLUMNS, literature)) if literature else ""
    images = "".join(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,'
                     f'{base64.b64encode(data).decode()}"></figure>' for name, data in figures.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:75em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}td:first-child{{text-align:left}}
img{{max-width:100%}}table.sortable th{{cursor:pointer}}#superclass-table td:nth-child(3){{text-align:left}}
th[aria-sort=ascending]::after{{content:" \\25B2"}}th[aria-sort=descending]::after{{content:" \\25BC"}}
pre{{background:#f4f4f4;padding:1em;overflow:auto}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>Code revision: <code>{html.escape(", ".join(revisions))}</code>. Last / Best: validation top-1
accuracy after the final epoch / maximum over the main stage's epochs; mean ± std over trials.
Top-1, top-5, cross-entropy and expected calibration error (ECE, 15 bins): TFMA on the eval split.
Gain: top-1 minus the baseline student's (same trial). A model whose training loss became
NaN/Inf is not evaluated (never blessed) and is listed under Failures.</p>
{_html_table(TABLE_COLUMNS, [table_cells(row) for row in rows])}
{literature_section}
{images}
{superclass_section}
<h2>Configuration</h2><pre>{html.escape(json.dumps(configuration, indent=2, sort_keys=True))}</pre>
</body></html>
"""


def write_report(output_dir: str, records: list[dict], configuration: dict, title: str) -> list[dict]:
    """Writes every leaderboard file into output_dir; returns the aggregated rows."""
    rows = aggregate(records)
    revisions = sorted({r["code_revision"] for r in records})
    figures = {"val_accuracy.png": plots.plot_curves(records), "gains.png": plots.plot_gains(rows),
               "superclass_gains.png": plots.plot_superclass_gains(records)}
    tf.io.gfile.makedirs(output_dir)
    literature = literature_rows(rows, configuration)
    table = f"# {title}\n\nCode revision: {', '.join(revisions)}\n\n{markdown_table(rows)}\n"
    if literature:
        table += (f"\n## Beside the literature (protocol '{configuration['protocol']}')\n\n"
                  f"{markdown(LITERATURE_COLUMNS, literature)}\n")
    files = {
        LEADERBOARD_TABLE: table,
        "leaderboard.csv": csv_table(rows),
        LEADERBOARD_JSON: json.dumps({"title": title, "code_revisions": revisions, "configuration": configuration,
                                      "rows": rows, "models": records,
                                      "literature": [dict(zip(LITERATURE_COLUMNS, r)) for r in literature]},
                                     indent=2, sort_keys=True),
        REPORT_PAGE: html_report(title, rows, figures, configuration, revisions, superclass_table_html(records)),
    }
    for name, text in files.items():
        with tf.io.gfile.GFile(os.path.join(output_dir, name), "w") as f:
            f.write(text)
    for name, data in figures.items():
        with tf.io.gfile.GFile(os.path.join(output_dir, name), "wb") as f:
            f.write(data)
    return rows
