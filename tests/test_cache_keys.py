"""Cache keys follow the code each component runs (pipelines/revision.py), and a trained teacher is reused.

The end-to-end test runs the smoke preset (2 methods, 1 trial) twice in a temporary git
clone of this checkout: first run; then, after a commit to one method's module, with the
first run's teacher imported (`teacher.import_from`). A commit to the training loop is then
checked on the Trainers' cache keys.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, SMOKE_OVERRIDES
from pipelines import presets, results, revision
from kd_trainer import methods
from kd_trainer.contract import CONFIG_FILE, LEADERBOARD_JSON
from pipelines.pipeline import EXAMPLE_GEN_MODULE, TRAINER_MODULES, create_pipeline, trainer_code_fingerprint

METHODS = ("soft_logits", "at")
TRAINERS = {"Trainer.teacher", "Trainer.baseline_trial1", "Trainer.soft_logits_trial1", "Trainer.at_trial1"}


def write(root: Path, relative: str, text: str) -> None:
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    (root / relative).write_text(text)


def test_a_trainer_covers_the_training_loop_but_not_the_methods(tmp_path):
    files = {str(p.relative_to(REPO_ROOT)) for p in revision.source_files(TRAINER_MODULES,
                                                                           skip=revision._in_methods_package)}
    assert {"kd_trainer/run_fn.py", "kd_trainer/distiller.py", "kd_trainer/models.py", "kd_trainer/data.py",
            "kd_trainer/export.py", "kd_trainer/config.py", "components/trainer.py", "kd_trainer/__init__.py"} <= files
    assert not any(f.startswith("kd_trainer/methods/") or f.startswith("tests/") or f.endswith(".md") for f in files)
    jacobian = {str(p.relative_to(REPO_ROOT)) for p in revision.source_files(
        ["kd_trainer.methods.jacobian"], skip=lambda m: m in (revision.METHODS_PACKAGE, revision.CATALOG_MODULE))}
    # Its own module and what it imports (attention's terms, the base class with its gradient helpers and
    # the connectors' layer factory), not the registry, the catalog of every method's parameters, or other methods.
    assert jacobian == {"kd_trainer/__init__.py", "kd_trainer/methods/jacobian.py", "kd_trainer/methods/attention.py",
                        "kd_trainer/methods/base.py", "kd_trainer/gradients.py", "kd_trainer/models.py",
                        "kd_trainer/model_specs.py"}
    assert trainer_code_fingerprint("soft_logits") != trainer_code_fingerprint("at") != trainer_code_fingerprint()


def test_the_leaderboard_covers_the_results_library_it_runs():
    files = {str(p.relative_to(REPO_ROOT)) for p in revision.source_files(["components.leaderboard"],
                                                                           skip=revision._in_methods_package)}
    assert {"components/leaderboard.py", "kd_results/__init__.py", "kd_results/records.py", "kd_results/tables.py",
            "kd_results/plots.py", "kd_results/report.py", "kd_results/published.py", "kd_data/cifar100.py",
            "kd_trainer/contract.py"} <= files


def test_walk_resolves_relative_and_submodule_imports(tmp_path):
    write(tmp_path, "requirements/lock.txt", "pkg==1\n")
    write(tmp_path, "kd_trainer/__init__.py", "")
    write(tmp_path, "kd_trainer/a.py", "from . import b\nfrom .c import thing\nimport numpy\n")
    write(tmp_path, "kd_trainer/b.py", "def f():\n    from kd_trainer.methods import d\n")
    write(tmp_path, "kd_trainer/c.py", "thing = 1\n")
    write(tmp_path, "kd_trainer/unused.py", "")
    write(tmp_path, "kd_trainer/methods/__init__.py", "")
    write(tmp_path, "kd_trainer/methods/d.py", "")
    found = [p.relative_to(tmp_path).as_posix() for p in revision.source_files(
        ["kd_trainer.a"], skip=revision._in_methods_package, root=tmp_path)]
    assert found == ["kd_trainer/__init__.py", "kd_trainer/a.py", "kd_trainer/b.py", "kd_trainer/c.py"]
    before = revision.component_fingerprint("kd_trainer.a", root=tmp_path)
    write(tmp_path, "kd_trainer/unused.py", "x = 1\n")
    write(tmp_path, "kd_trainer/methods/d.py", "x = 1\n")
    assert revision.component_fingerprint("kd_trainer.a", root=tmp_path) == before
    write(tmp_path, "kd_trainer/c.py", "thing = 2\n")
    assert revision.component_fingerprint("kd_trainer.a", root=tmp_path) != before
    after = revision.component_fingerprint("kd_trainer.a", root=tmp_path)
    write(tmp_path, "requirements/lock.txt", "pkg==2\n")
    assert revision.component_fingerprint("kd_trainer.a", root=tmp_path) != after


def test_no_component_key_holds_the_git_revision(tmp_path, monkeypatch):
    preset = presets.resolve("smoke", [f"methods={','.join(METHODS)}"])
    keys = []
    for revision_name in ("rev-a", "rev-b"):
        monkeypatch.setenv(revision.REVISION_ENV, revision_name)
        pipeline = create_pipeline("p", str(tmp_path), preset)
        keys.append({c.id: json.dumps(c.exec_properties, sort_keys=True, default=str) for c in pipeline.components})
    assert keys[0] == keys[1]
    assert not any("rev-a" in key for key in keys[0].values())
    assert all("code_fingerprint" in key for key in keys[0].values())


def latest_run_states(metadata_path: Path, pipeline_name: str) -> dict[str, str]:
    """{node id: CACHED / COMPLETE / ...} of the executions of the newest pipeline run."""
    return {record.node: record.state for record in results.latest_run_executions(
        results.readonly_connection_config(metadata_path), pipeline_name)}


def git(clone: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=clone, check=True, capture_output=True, text=True).stdout.strip()


def clone_of_this_checkout(destination: Path) -> Path:
    """The checkout's files (committed or not, minus ignored ones and .venv) as a fresh one-commit repository."""
    listed = git(REPO_ROOT, "ls-files", "--cached", "--others", "--exclude-standard").splitlines()
    for relative in listed:
        source = REPO_ROOT / relative
        if relative == ".venv" or relative.startswith(".venv/") or not source.is_file():
            continue
        (destination / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination / relative)
    git(destination, "init", "-q")
    git(destination, "add", "-A")
    git(destination, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", "clone")
    return destination


def commit_append(clone: Path, relative: str, line: str) -> str:
    with open(clone / relative, "a") as f:
        f.write(f"\n{line}\n")
    git(clone, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qam", f"change {relative}")
    return git(clone, "rev-parse", "--short=12", "HEAD")


def test_a_change_re_runs_only_the_components_that_run_that_code(tmp_path, tiny_archive):
    clone = clone_of_this_checkout(tmp_path / "clone")
    output = tmp_path / "outputs"
    metadata_path = output / "kd-smoke" / "metadata.sqlite"
    overrides = [f"data.data_dir={tiny_archive.parent}", *SMOKE_OVERRIDES, f"methods={','.join(METHODS)}", "trials=1"]
    env = {**os.environ, "PYTHONPATH": str(clone)}
    env.pop(revision.REVISION_ENV, None)

    def kd_run(*extra: str) -> dict[str, str]:
        args = [sys.executable, "-m", "pipelines.cli", "run", "--preset", "smoke", "--output-dir", str(output)]
        for override in [*overrides, *extra]:
            args += ["--set", override]
        result = subprocess.run(args, cwd=clone, env=env, capture_output=True, text=True, timeout=3600)
        assert result.returncode == 0, result.stderr[-4000:]
        return latest_run_states(metadata_path, "kd-smoke")

    everything = {"CifarExampleGen", *TRAINERS, "Evaluator.teacher", "Evaluator.soft_logits_trial1",
                  "Evaluator.at_trial1", "Leaderboard"}
    first = kd_run()
    assert first == {node: "COMPLETE" for node in everything}, first
    first_revision = git(clone, "rev-parse", "--short=12", "HEAD")
    teacher_dir = next((output / "kd-smoke" / "root" / "Trainer.teacher" / "model").iterdir())
    assert json.loads((teacher_dir / CONFIG_FILE).read_text())["code_revision"] == first_revision

    # One method's module changes and the first run's teacher is imported, in one second run:
    # - the changed method's Trainer and Evaluator execute (and the Leaderboard, which reads them);
    # - the Importer finds the first run's artifact, so no other Trainer (nor the teacher) re-trains;
    # - Evaluator.teacher runs once more: its Cond's implicit input is keyed by the producing node
    #   (Importer.teacher instead of Trainer.teacher), which TFX's cache key covers.
    method_revision = commit_append(clone, "kd_trainer/methods/attention.py", "# a change to attention transfer")
    second = kd_run(f"teacher.import_from={teacher_dir}")
    executed = {"Trainer.at_trial1", "Evaluator.at_trial1", "Evaluator.teacher", "Leaderboard"}
    assert second == {"Importer.teacher": "CACHED", **{n: "COMPLETE" for n in executed},
                      **{n: "CACHED" for n in everything - executed - {"Trainer.teacher"}}}, second
    # Provenance: each model's trainer_config.json has the revision it was trained at.
    newest = max((output / "kd-smoke" / "root" / "Leaderboard").rglob(LEADERBOARD_JSON),
                 key=lambda p: int(p.parent.name))
    assert json.loads(newest.read_text())["code_revisions"] == sorted([first_revision, method_revision])

    # The training loop: every Trainer's cache key changes, the data's does not (checked on the keys:
    # a third run would re-train everything, too long for CI).
    before = {method: trainer_code_fingerprint_in(clone, method) for method in ("", *METHODS)}
    example_gen = revision.component_fingerprint(EXAMPLE_GEN_MODULE, root=clone)
    commit_append(clone, "kd_trainer/distiller.py", "# a change to the training loop")
    after = {method: trainer_code_fingerprint_in(clone, method) for method in ("", *METHODS)}
    assert all(after[method] != before[method] for method in before)
    assert revision.component_fingerprint(EXAMPLE_GEN_MODULE, root=clone) == example_gen


def trainer_code_fingerprint_in(root: Path, method: str) -> str:
    """pipelines.pipeline.trainer_code_fingerprint, of the files under `root`."""
    if not method:
        return revision.component_fingerprint(*TRAINER_MODULES, root=root)
    return revision.method_fingerprint(methods.method_class(method).__module__, *TRAINER_MODULES, root=root)


@pytest.mark.parametrize("make, expected", [
    (lambda root: root / "missing", "does not exist"),
    (lambda root: root, "is not a SavedModel exported by this project"),
])
def test_import_from_a_path_that_is_no_teacher_fails_before_anything_runs(tmp_path, make, expected):
    path = make(tmp_path)
    with pytest.raises(presets.PresetError, match=expected) as error:
        presets.resolve("smoke", [f"teacher.import_from={path}"])
    assert str(path) in str(error.value)
