"""Leaderboard: the benchmark's results from the pipeline's own artifacts.

Inputs are every Trainer's Model (for history.json and trainer_config.json) and every
Evaluator's ModelEvaluation and ModelBlessing. Each evaluation names the models it scored
(TFMA's model_locations), which ties it to its Trainer. Output folder:

    leaderboard.md / .csv   one row per method plus Teacher and Student (baseline)
    leaderboard.json        every number, per model and aggregated
    val_accuracy.png        validation accuracy per epoch, mean over trials with a ± std band
    gains.png               top-1 gain over the baseline per method (± std over trials)
    superclass_gains.png    superclass x method heatmap of top-1 gains
    report.html             all of the above in one self-contained page (no remote resources)

Last / Best follow the seed: the validation accuracy after the final epoch and the
maximum over the main stage's epochs, each as mean ± std over trials.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import html
import io
import json
import os
import statistics
from typing import Any, Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_analysis as tfma  # noqa: E402
from tensorflow_model_analysis.writers import eval_config_writer  # noqa: E402
from tfx import types  # noqa: E402
from tfx.dsl.components.base import base_component, base_executor, executor_spec  # noqa: E402
from tfx.types import standard_artifacts  # noqa: E402
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter  # noqa: E402

from components import published  # noqa: E402
from components.cifar100 import COARSE_LABEL_NAMES  # noqa: E402
from kd_trainer.methods import catalog  # noqa: E402

ACCURACY = "sparse_categorical_accuracy"
TOP5 = "sparse_top_k_categorical_accuracy"
CROSS_ENTROPY = "sparse_categorical_crossentropy"
CALIBRATION_ERROR = "expected_calibration_error"
SLICE_FEATURE = "coarse_label"
TEACHER, BASELINE = "Teacher", "Student (baseline)"
# A record's per-superclass metrics: its key -> TFMA's metric name.
SUPERCLASS_METRICS = {"top1": ACCURACY, "top5": TOP5, "cross_entropy": CROSS_ENTROPY, "ece": CALIBRATION_ERROR,
                      "examples": "example_count"}


class LeaderboardArtifact(types.Artifact):
    """A folder with the leaderboard tables, plots and HTML report."""

    # KFP v2 (Kubeflow, Vertex AI) accepts custom artifact types named `<namespace>.<Name>` only.
    # On Kubeflow, TFX's entry point imports a custom type by its name, which must also be a
    # KFP schema title (`namespace.Title`, one dot): `components.LeaderboardArtifact`, which
    # components/__init__.py resolves (tests/test_kubeflow_executed.py runs it).
    TYPE_NAME = "components.LeaderboardArtifact"
    # The names runs recorded before the renames carry in ML Metadata.
    LEGACY_TYPE_NAMES = ("kd_benchmark.Leaderboard", "KDLeaderboard")


def _read_json(path: str) -> Any:
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def _model_dir(serving_dir: str) -> str:
    return os.path.dirname(serving_dir.rstrip("/"))


def _sliced_metrics(evaluation_uri: str, model_name: str | None
                    ) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    """(overall metrics, {superclass: its metrics}) of one model in one evaluation."""
    result = tfma.load_eval_result(evaluation_uri, model_name=model_name)
    overall, superclasses = {}, {}
    for slice_key, metrics in result.slicing_metrics:
        values = {k: v["doubleValue"] for k, v in metrics[""][""].items() if "doubleValue" in v}
        if slice_key == ():
            overall = values
        elif len(slice_key) == 1 and slice_key[0][0] == SLICE_FEATURE:
            superclasses[int(slice_key[0][1])] = values
    return overall, superclasses


def _trained_record(model_uri: str) -> dict[str, Any]:
    config = _read_json(os.path.join(model_uri, "trainer_config.json"))
    history = _read_json(os.path.join(model_uri, "history.json"))
    main = [epoch for epoch in history if epoch.get("stage", "main") == "main"]
    curve = [epoch["val_accuracy"] for epoch in main]
    record = {
        "role": config["role"], "method": config["method"], "trial": config["trial"], "network": config["model"],
        "parameters": config["num_weights_without_bn"], "code_revision": config["code_revision"],
        "config": config, "val_accuracy_curve": curve,
        "train_seconds": sum(epoch["epoch_seconds"] for epoch in history),
    }
    if config.get("divergence"):
        where = config["divergence"]
        record["failure"] = f"non-finite loss at stage {where['stage']}, epoch {where['epoch']}, step {where['step']}"
    else:
        record.update(last=curve[-1], best=max(curve))
    return record


def collect_records(evaluation_uris: list[str], blessings: dict[str, bool], model_uris: list[str],
                    relocate: Callable[[str], str] = str) -> list[dict]:
    """One record per evaluated model (teacher, each trial's baseline, every student).

    `blessings` maps a candidate model's uri to its blessing. `relocate` maps the model paths
    recorded inside each evaluation to where the run folder is now (`kd report` on a moved run).
    """
    known_models = {uri.rstrip("/") for uri in model_uris}
    records: dict[str, dict] = {}
    for evaluation in sorted(evaluation_uris):  # a baseline is read from the same evaluation every time
        locations = eval_config_writer.load_eval_run(evaluation)[3]
        for name, serving_dir in locations.items():
            model_uri = relocate(_model_dir(serving_dir))
            if model_uri not in known_models:
                raise ValueError(f"{evaluation}: evaluated model {model_uri} is not among the Leaderboard's inputs")
            if model_uri in records:
                continue
            overall, superclasses = _sliced_metrics(evaluation, name or None)
            record = _trained_record(model_uri)
            record.update(model_uri=model_uri, evaluation_uri=evaluation, top1=overall[ACCURACY], top5=overall[TOP5],
                          cross_entropy=overall[CROSS_ENTROPY], ece=overall[CALIBRATION_ERROR],
                          superclass_top1={k: v[ACCURACY] for k, v in superclasses.items()},
                          superclass_metrics={k: {key: v[name] for key, name in SUPERCLASS_METRICS.items()}
                                              for k, v in superclasses.items()})
            if record["role"] == "student":
                record["blessed"] = blessings[model_uri]
            records[model_uri] = record
    for model_uri in sorted(known_models - set(records)):  # not evaluated: training diverged
        record = _trained_record(model_uri)
        record.update(model_uri=model_uri, blessed=False)
        record.setdefault("failure", "not evaluated (its baseline diverged)")
        records[model_uri] = record
    baselines = {r["trial"]: r for r in records.values() if r["role"] == "baseline" and "top1" in r}
    for record in records.values():
        if record["role"] == "student" and "top1" in record and record["trial"] in baselines:
            baseline = baselines[record["trial"]]
            record["gain"] = record["top1"] - baseline["top1"]
            record["superclass_gain"] = {k: v - baseline["superclass_top1"][k]
                                         for k, v in record["superclass_top1"].items()}
    return sorted(records.values(), key=lambda r: (r["role"] != "teacher", r["role"] != "baseline",
                                                   r["method"], r["trial"]))


def _label(record: dict) -> str:
    return {"teacher": TEACHER, "baseline": BASELINE}.get(record["role"], record["method"])


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(records: list[dict]) -> list[dict]:
    """One row per label (Teacher, Student (baseline), each method), means and stds over trials."""
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(_label(record), []).append(record)
    rows = []
    for label, members in groups.items():
        evaluated = [m for m in members if "top1" in m]
        row: dict[str, Any] = {"label": label, "trials": len(members), "network": members[0]["network"],
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
    return [row["label"], str(row["trials"]), _pm(row, "last"), _pm(row, "best"), _pm(row, "top1"),
            _pm(row, "gain", signed=True) if "gain" in row else "", _pm(row, "top5"),
            _pm(row, "cross_entropy", scale=1.0), _pm(row, "ece"),
            f"{row['blessed']}/{row['trials']}" if "blessed" in row else "",
            row["network"], f"{row['parameters']:,}", f"{row['train_seconds'] / 60:.1f}", "; ".join(row["failures"])]


def markdown_table(rows: list[dict]) -> str:
    return _markdown(TABLE_COLUMNS, [table_cells(row) for row in rows])


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


def _markdown(columns: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def plot_curves(records: list[dict]) -> bytes:
    figure, axes = plt.subplots(figsize=(8, 5))
    groups: dict[str, list[list[float]]] = {}
    for record in records:
        if "failure" not in record:
            groups.setdefault(_label(record), []).append(record["val_accuracy_curve"])
    for label, curves in groups.items():
        length = min(len(c) for c in curves)
        values = 100 * np.array([c[:length] for c in curves])
        epochs = np.arange(1, length + 1)
        mean, std = values.mean(axis=0), values.std(axis=0)
        # A one-epoch curve is a single point: draw it as a marker, or it is invisible.
        axes.plot(epochs, mean, label=label, linewidth=2.2 if label in (TEACHER, BASELINE) else 1.4,
                  marker="o" if length == 1 else None)
        axes.fill_between(epochs, mean - std, mean + std, alpha=0.15)
    axes.set(xlabel="epoch (main stage)", ylabel="validation top-1 accuracy (%)",
             title="Validation accuracy per epoch (mean ± std over trials)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, ncol=2)
    return _png(figure)


def plot_gains(rows: list[dict]) -> bytes:
    students = [row for row in rows if "gain" in row]
    figure, axes = plt.subplots(figsize=(8, 4))
    gains = [100 * row["gain"] for row in students]
    axes.bar([row["label"] for row in students], gains, yerr=[100 * row["gain_std"] for row in students],
             color=["tab:green" if g >= 0 else "tab:red" for g in gains], capsize=4)
    axes.axhline(0, color="black", linewidth=0.8)
    axes.set(ylabel="top-1 gain over baseline (points)", title="Gain over the undistilled student")
    axes.tick_params(axis="x", rotation=30)
    return _png(figure)


def plot_superclass_gains(records: list[dict]) -> bytes:
    compared = [r for r in records if "superclass_gain" in r]
    methods = sorted({r["method"] for r in compared})
    if not methods:  # e.g. every student diverged: the report still has the figure, saying why it is empty
        figure, axes = plt.subplots(figsize=(6, 2))
        axes.text(0.5, 0.5, "no student was evaluated against its baseline", ha="center", va="center")
        axes.set_axis_off()
        return _png(figure)
    matrix = np.array([[100 * statistics.fmean(r["superclass_gain"].get(k, np.nan) for r in compared
                                               if r["method"] == method)
                        for method in methods] for k in range(len(COARSE_LABEL_NAMES))])
    limit = max(np.nanmax(np.abs(matrix)), 1e-9)
    figure, axes = plt.subplots(figsize=(1.0 + 0.9 * len(methods), 7))
    image = axes.imshow(matrix, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    axes.set_xticks(range(len(methods)), methods, rotation=40, ha="right")
    axes.set_yticks(range(len(COARSE_LABEL_NAMES)), COARSE_LABEL_NAMES, fontsize=8)
    figure.colorbar(image, ax=axes, label="top-1 gain over baseline (points)")
    axes.set_title("Gain per superclass")
    return _png(figure)


def _html_table(columns: list[str], cells: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# The report's per-superclass table: each student against the baseline of its trial.
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
            row = {"method": record["method"], "trial": record["trial"], "coarse_label": superclass,
                   "superclass": COARSE_LABEL_NAMES[superclass], "examples": int(metrics["examples"])}
            for _, key, _, _ in SUPERCLASS_COLUMNS:
                row.update({key: metrics[key], f"baseline_{key}": baseline[superclass][key],
                            f"{key}_diff": metrics[key] - baseline[superclass][key]})
            rows.append(row)
    return rows


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
<p>TFMA's <code>{SLICE_FEATURE}</code> slices of the eval split: each student's metrics, the baseline student's
(same trial) and the difference (student minus baseline). Click a column header to sort; click again to reverse.</p>
<p><label>Student: <select class="superclass-filter"><option value="">all</option>{options}</select></label></p>
<table id="superclass-table" class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>
{_SORT_SCRIPT}"""


def html_report(title: str, rows: list[dict], plots: dict[str, bytes], configuration: dict, revisions: list[str],
                superclass_section: str = "") -> str:
    """One page, no external resources: inline CSS, plots as data URIs."""
    literature = literature_rows(rows, configuration)
    literature_section = (f"<h2>Beside the literature (protocol '{html.escape(configuration['protocol'])}')</h2>"
                          + _html_table(LITERATURE_COLUMNS, literature)) if literature else ""
    images = "".join(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,'
                     f'{base64.b64encode(data).decode()}"></figure>' for name, data in plots.items())
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
    plots = {"val_accuracy.png": plot_curves(records), "gains.png": plot_gains(rows),
             "superclass_gains.png": plot_superclass_gains(records)}
    tf.io.gfile.makedirs(output_dir)
    literature = literature_rows(rows, configuration)
    markdown = f"# {title}\n\nCode revision: {', '.join(revisions)}\n\n{markdown_table(rows)}\n"
    if literature:
        markdown += (f"\n## Beside the literature (protocol '{configuration['protocol']}')\n\n"
                     f"{_markdown(LITERATURE_COLUMNS, literature)}\n")
    files = {
        "leaderboard.md": markdown,
        "leaderboard.json": json.dumps({"title": title, "code_revisions": revisions, "configuration": configuration,
                                        "rows": rows, "models": records,
                                        "literature": [dict(zip(LITERATURE_COLUMNS, r)) for r in literature]},
                                       indent=2, sort_keys=True),
        "report.html": html_report(title, rows, plots, configuration, revisions, superclass_table_html(records)),
    }
    csv_buffer = io.StringIO()
    writer = csv.writer(csv_buffer)
    writer.writerow(TABLE_COLUMNS)
    writer.writerows(table_cells(row) for row in rows)
    files["leaderboard.csv"] = csv_buffer.getvalue()
    for name, text in files.items():
        with tf.io.gfile.GFile(os.path.join(output_dir, name), "w") as f:
            f.write(text)
    for name, data in plots.items():
        with tf.io.gfile.GFile(os.path.join(output_dir, name), "wb") as f:
            f.write(data)
    return rows


# Input kinds; each upstream output is its own input `<kind>_<i>`, since KFP v2 (Kubeflow,
# Vertex AI) compiles single channels only, not unions. Every input is optional: the
# Evaluator of a diverged model is skipped and leaves its inputs here empty.
INPUT_TYPES = {"model": standard_artifacts.Model, "evaluation": standard_artifacts.ModelEvaluation,
               "blessing": standard_artifacts.ModelBlessing}


class LeaderboardSpec(ComponentSpec):
    PARAMETERS = {"configuration": ExecutionParameter(type=str), "title": ExecutionParameter(type=str)}
    INPUTS: dict = {}  # per pipeline: see Leaderboard
    OUTPUTS = {"leaderboard": ChannelParameter(type=LeaderboardArtifact)}


def _inputs_of_kind(input_dict: dict[str, list[types.Artifact]], kind: str) -> list[types.Artifact]:
    return [artifact for key, artifacts in sorted(input_dict.items()) if key.rsplit("_", 1)[0] == kind
            for artifact in artifacts]


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict, output_dict, exec_properties) -> None:
        blessings = {b.get_string_custom_property("current_model").rstrip("/"):
                     bool(b.get_int_custom_property("blessed")) for b in _inputs_of_kind(input_dict, "blessing")}
        records = collect_records([e.uri for e in _inputs_of_kind(input_dict, "evaluation")], blessings,
                                  [m.uri for m in _inputs_of_kind(input_dict, "model")])
        output = output_dict["leaderboard"][0]
        write_report(output.uri, records, json.loads(exec_properties["configuration"]), exec_properties["title"])


class Leaderboard(base_component.BaseComponent):
    """Aggregates every Trainer and Evaluator of the run into tables, plots and a report.

    Args:
      models / evaluations / blessings: every Trainer's and Evaluator's output channel.
      configuration: JSON of the preset that produced the run (shown in the report).
      title: report title.
    """

    SPEC_CLASS = LeaderboardSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, models: Sequence[types.BaseChannel], evaluations: Sequence[types.BaseChannel],
                 blessings: Sequence[types.BaseChannel], configuration: str, title: str):
        inputs = {f"{kind}_{i}": channel for kind, channels in
                  (("model", models), ("evaluation", evaluations), ("blessing", blessings))
                  for i, channel in enumerate(channels)}
        spec_class = type(LeaderboardSpec.__name__, (LeaderboardSpec,), {
            "INPUTS": {key: ChannelParameter(type=INPUT_TYPES[key.rsplit("_", 1)[0]], optional=True)
                       for key in inputs}})
        super().__init__(spec_class(**inputs, configuration=configuration, title=title,
                                    leaderboard=types.Channel(type=LeaderboardArtifact)))
