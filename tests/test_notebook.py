"""notebooks/tfma_results.ipynb, executed headless against the smoke run (conftest's smoke_first_run)."""

from __future__ import annotations

import io

import nbclient
import nbformat
import pandas as pd
import pytest
import tensorflow_model_analysis as tfma
from ipykernel import kernelspec

from conftest import REPO_ROOT, SmokeRun
from kd_results.records import ACCURACY, CALIBRATION_ERROR, CROSS_ENTROPY, TOP5
from kd_trainer.contract import SLICE_KEY
from pipelines import results

NOTEBOOK = REPO_ROOT / "notebooks" / "tfma_results.ipynb"
KERNEL = "kd-benchmark-test"
METRICS = {"top-1": ACCURACY, "top-5": TOP5, "cross-entropy": CROSS_ENTROPY, "ECE": CALIBRATION_ERROR}
DISPLAYED = 1e-6  # pandas shows 6 decimals


@pytest.fixture(scope="module")
def executed(smoke_first_run: SmokeRun, tmp_path_factory) -> nbformat.NotebookNode:
    """The notebook after a headless run, in a kernel of this interpreter registered in a temporary folder."""
    jupyter = tmp_path_factory.mktemp("jupyter")
    kernelspec.install(kernel_name=KERNEL, prefix=str(jupyter))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("JUPYTER_PATH", str(jupyter / "share" / "jupyter"))
        env.setenv("JUPYTER_RUNTIME_DIR", str(jupyter / "runtime"))
        env.setenv("IPYTHONDIR", str(jupyter / "ipython"))
        env.setenv("KD_PIPELINE_ROOT", str(smoke_first_run.paths.pipeline_root))
        env.setenv("KD_METADATA", str(smoke_first_run.paths.metadata_path))
        env.delenv("KD_STUDENT", raising=False)
        nbclient.NotebookClient(notebook, kernel_name=KERNEL, timeout=600, startup_timeout=300, allow_errors=True,
                                resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    return notebook


def tagged_outputs(notebook: nbformat.NotebookNode, tag: str) -> list[nbformat.NotebookNode]:
    outputs = [o for cell in notebook.cells if tag in cell.metadata.get("tags", []) for o in cell.outputs]
    assert outputs, f"no output in the cells tagged {tag!r}"
    return outputs


def table(notebook: nbformat.NotebookNode, tag: str) -> pd.DataFrame:
    """The DataFrame a tagged cell displays, read back from its HTML."""
    (html,) = [o.data["text/html"] for o in tagged_outputs(notebook, tag) if o.output_type == "execute_result"]
    (frame,) = pd.read_html(io.StringIO(html), index_col=0)
    return frame


def slice_metrics(result: tfma.EvalResult, slice_key: tuple = ()) -> dict[str, float]:
    """{metric: value} of one slice; () is the whole test set."""
    metrics = next(m for key, m in result.slicing_metrics if key == slice_key)
    return {name: value["doubleValue"] for name, value in metrics[""][""].items() if "doubleValue" in value}


def test_runs_headless_without_errors(executed):
    errors = [f"{o.ename}: {o.evalue}\n" + "\n".join(o.traceback) for cell in executed.cells
              if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
    assert not errors, errors[0]
    nbformat.validate(executed)
    assert all(cell.execution_count for cell in executed.cells if cell.cell_type == "code")


def test_overall_table_is_tfmas_per_student(executed, smoke_first_run):
    overall = table(executed, "overall-table")
    assert sorted(overall["method"]) == sorted(smoke_first_run.preset.methods)
    assert set(overall["trial"]) == set(range(1, smoke_first_run.preset.trials + 1))
    paths = smoke_first_run.paths
    artifacts = results.latest_artifacts(paths.connection_config(), paths.pipeline_name)
    for student, row in overall.iterrows():
        evaluator = artifacts[f"Evaluator.{student}"]
        uri = evaluator["ModelEvaluation"].uri
        candidate = slice_metrics(tfma.load_eval_result(uri, model_name="candidate"))
        baseline = slice_metrics(tfma.load_eval_result(uri, model_name="baseline"))
        for label, name in METRICS.items():
            assert row[label] == pytest.approx(candidate[name], abs=DISPLAYED), (student, label)
            assert row[f"baseline {label}"] == pytest.approx(baseline[name], abs=DISPLAYED), (student, label)
        assert row["Δ top-1"] == pytest.approx(candidate[ACCURACY] - baseline[ACCURACY], abs=DISPLAYED)
        assert row["blessed"] == tfma.load_validation_result(uri).validation_ok
        assert row["blessed"] == (evaluator["ModelBlessing"].custom_properties["blessed"].int_value == 1)


def test_superclass_table_is_tfmas_coarse_label_slices(executed, smoke_first_run):
    best = table(executed, "overall-table")["top-1"].idxmax()  # the notebook's default student
    superclasses = table(executed, "superclass-table")
    assert len(superclasses) == 20 and list(superclasses[SLICE_KEY]) == list(range(20))
    paths = smoke_first_run.paths
    uri = results.latest_artifacts(paths.connection_config(), paths.pipeline_name)[f"Evaluator.{best}"][
        "ModelEvaluation"].uri
    candidate = tfma.load_eval_result(uri, model_name="candidate")
    baseline = tfma.load_eval_result(uri, model_name="baseline")
    for _, row in superclasses.iterrows():
        key = ((SLICE_KEY, int(row[SLICE_KEY])),)
        expected = slice_metrics(candidate, key)
        assert row["examples"] == expected["example_count"] == 2 * 5  # 5 fine classes, 2 test images each
        for label, name in METRICS.items():
            assert row[label] == pytest.approx(expected[name], abs=DISPLAYED), (key, label)
        assert row["baseline top-1"] == pytest.approx(slice_metrics(baseline, key)[ACCURACY], abs=DISPLAYED)
        assert row["Δ top-1"] == pytest.approx(expected[ACCURACY] - row["baseline top-1"], abs=2 * DISPLAYED)


def test_tfma_views_and_the_leaderboard_report_are_shown(executed, smoke_first_run):
    views = [o.data["text/plain"] for o in tagged_outputs(executed, "tfma-view")
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert [view.split("(", 1)[0] for view in views] == ["SlicingMetricsViewer", "TimeSeriesViewer"]
    report = tagged_outputs(executed, "leaderboard")
    (markdown,) = [o.data["text/markdown"] for o in report if "text/markdown" in o.get("data", {})]
    assert all(f"| {method} | 1 |" in markdown for method in smoke_first_run.preset.methods)
    assert sum("image/png" in o.get("data", {}) for o in report) == 3
