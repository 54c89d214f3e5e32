"""`make notebook`: notebooks/tfma_results.ipynb in the classic Notebook front-end, for a finished run.

TFMA 0.47 ships the front-end of its slicing-metrics and model-comparison views as a classic
Notebook extension only (an ipywidgets 7 module loaded by requirejs); JupyterLab 4 and Notebook 7
show a placeholder instead. nbclassic serves that front-end on the same Jupyter Server as Lab;
Notebook 6 itself cannot be installed beside ipykernel 7 (it needs jupyter_client < 8).
scripts/setup.sh enables TFMA's extension in the virtual environment, with notebooks/nbextensions/kd_tfma_widgets,
which lets ipywidgets 7.8's front-end construct TFMA's widget classes.

It checks the run first, so a missing run is explained here rather than as a traceback in a cell.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipelines.revision import REPO_ROOT

NOTEBOOK = REPO_ROOT / "notebooks" / "tfma_results.ipynb"


def default_pipeline_root(preset_name: str) -> Path:
    """outputs/kd-<preset>/root, where `kd run --preset <preset>` leaves its run."""
    from pipelines import local_runner, presets
    return local_runner.local_paths(presets.resolve(preset_name)).pipeline_root


def unfinished_run_reason(pipeline_root: Path, metadata_path: Path) -> str | None:
    """Why the run at pipeline_root cannot be shown (None: it finished, with its Leaderboard and a student)."""
    from tfx.orchestration import metadata

    from pipelines import results
    from pipelines.pipeline import evaluator_id

    if not metadata_path.is_file():
        return f"there is no ML Metadata store at {metadata_path}"
    pipeline_name = pipeline_root.parent.name
    try:
        artifacts = results.latest_artifacts(metadata.sqlite_metadata_connection_config(str(metadata_path)),
                                             pipeline_name)
    except results.PipelineNotInStoreError:  # the store holds other pipelines only (broken stores still raise)
        return f"{metadata_path} records no component of the pipeline {pipeline_name}"
    if not any(component.startswith("Evaluator.") and component != evaluator_id("teacher")
               and "ModelEvaluation" in outputs for component, outputs in artifacts.items()):
        return f"{pipeline_name} has no student evaluation yet"
    try:
        results.leaderboard_dir(artifacts)
    except ValueError as error:
        return f"{pipeline_name}: {error}"
    return None


# Server extensions of the venv that the classic front-end does not use; off, the server starts sooner.
UNUSED_SERVER_EXTENSIONS = ("jupyterlab", "jupyter_lsp", "notebook", "jupyter_server_terminals")


def notebook_url_path(name: str) -> str:
    """Where nbclassic serves a notebook of its root folder (under /nbclassic beside Notebook 7)."""
    from nbclassic import nbclassic_path
    return f"{nbclassic_path()}/notebooks/{name}"


def server_command(notebook_dir: Path, *, ip: str = "127.0.0.1", port: int | None = None,
                   token: str | None = None, open_browser: bool = True) -> list[str]:
    """The nbclassic server for the notebooks in notebook_dir, with this interpreter's kernel."""
    command = [sys.executable, "-m", "nbclassic", f"--ServerApp.root_dir={notebook_dir}", f"--ServerApp.ip={ip}",
               f"--ServerApp.open_browser={open_browser}",
               *(f"--ServerApp.jpserver_extensions={name}=False" for name in UNUSED_SERVER_EXTENSIONS)]
    if port is not None:
        command += [f"--ServerApp.port={port}", "--ServerApp.port_retries=0"]
    if token is not None:
        command.append(f"--IdentityProvider.token={token}")
    if os.geteuid() == 0:  # containers and CI run as root, where Jupyter refuses to start without this
        command.append("--ServerApp.allow_root=True")
    return command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make notebook", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--preset", default="quick", help="the run of `kd run --preset PRESET` (default: quick)")
    parser.add_argument("--no-browser", action="store_true", help="print the address instead of opening a browser")
    args = parser.parse_args(argv)
    pipeline_root = Path(os.environ.get("KD_PIPELINE_ROOT") or default_pipeline_root(args.preset)).resolve()
    metadata_path = Path(os.environ.get("KD_METADATA") or pipeline_root.parent / "metadata.sqlite").resolve()
    reason = unfinished_run_reason(pipeline_root, metadata_path)
    if reason:
        print(f"make notebook: no finished run at {pipeline_root.parent} ({reason}).\n"
              f"  Make one with `make run PRESET={args.preset}` (the pipeline, then its Leaderboard), or show "
              f"another run with `make notebook PRESET=<preset>` or KD_PIPELINE_ROOT=<its root/ folder>.",
              file=sys.stderr)
        return 2
    os.environ.update(KD_PIPELINE_ROOT=str(pipeline_root), KD_METADATA=str(metadata_path))  # read by the kernel
    print(f"make notebook: {NOTEBOOK.relative_to(REPO_ROOT)} on the run at {pipeline_root.parent}; "
          f"run all its cells (Cell > Run All)", flush=True)
    command = [*server_command(NOTEBOOK.parent, open_browser=not args.no_browser),
               f"--NotebookApp.default_url={notebook_url_path(NOTEBOOK.name)}"]
    os.execv(command[0], command)  # replaces this process: Ctrl-C stops the server


if __name__ == "__main__":
    sys.exit(main())
