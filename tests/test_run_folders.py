"""`kd report` on broken, moved and copied run folders, and what a killed run leaves behind
(issue 16, items 7 and 8). Every test works on a copy of the shared smoke run."""

from __future__ import annotations

import hashlib
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components import leaderboard
from pipelines import cli, local_runner, presets, results

E2E = pytest.mark.e2e  # reads the smoke pipeline's run


@pytest.fixture
def run_copy(smoke_first_run, tmp_path) -> Path:
    """A copy of the smoke run's folder (pipeline root + metadata.sqlite) somewhere else."""
    assert smoke_first_run.exit_code == 0
    source = smoke_first_run.paths.metadata_path.parent
    copy = tmp_path / "elsewhere" / source.name
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("logs", ".kd-run.lock"))
    return copy


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _report(capsys, *argv: str) -> tuple[int, list[str]]:
    status = cli.main(["report", *argv])
    return status, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@E2E
def test_report_works_on_a_moved_run_folder_and_leaves_its_store_alone(run_copy, smoke_first_run, capsys):
    store = run_copy / "metadata.sqlite"
    before = _digest(store)
    status = cli.main(["report", str(run_copy / "root")])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    assert (run_copy / "report" / "report.html").is_file()
    board = (run_copy / "report" / "leaderboard.md").read_text()
    assert all(f"| {method} " in board for method in smoke_first_run.preset.methods)
    assert _digest(store) == before


def _sqlite_copy_without_table(source: Path, target: Path, table: str) -> Path:
    shutil.copy(source, target)
    with sqlite3.connect(target) as connection:
        connection.execute(f"DROP TABLE {table}")
    return target


@E2E
@pytest.mark.parametrize("make, message", [
    (lambda store, bad: bad.write_bytes(b""), "an empty file, expected the run's ML Metadata store"),
    (lambda store, bad: bad.write_bytes(b"garbage" * 100), "not an SQLite database"),
    (lambda store, bad: bad.write_bytes(store.read_bytes()[: store.stat().st_size // 2]),
     "unreadable SQLite database"),
    (lambda store, bad: _sqlite_copy_without_table(store, bad, "Event"),
     r"not a complete ML Metadata store \(missing table\(s\) \['Event'\]\)"),
])
def test_report_refuses_a_broken_store_without_touching_it(run_copy, tmp_path, capsys, make, message):
    bad = tmp_path / "bad.sqlite"
    make(run_copy / "metadata.sqlite", bad)
    before = _digest(bad)
    status, lines = _report(capsys, str(run_copy / "root"), "--metadata", str(bad), "--log-file",
                            str(tmp_path / "report.log"))
    assert status == 1 and lines[0].startswith(f"kd: error: {bad}: ")
    assert re.search(message, lines[0]), lines[0]
    assert _digest(bad) == before and len(lines) == 2


@E2E
@pytest.mark.parametrize("content, message", [
    ("{", "not valid JSON"),
    ("{}", "expected an object with 'configuration' \\(object\\) and 'title' \\(string\\)"),
])
def test_report_refuses_an_invalid_leaderboard_json(run_copy, tmp_path, capsys, content, message):
    boards = list((run_copy / "root" / "Leaderboard").rglob("leaderboard.json"))
    assert boards
    for board in boards:
        board.write_text(content)
    status, lines = _report(capsys, str(run_copy / "root"), "--log-file", str(tmp_path / "report.log"))
    assert status == 1 and "leaderboard.json: " in lines[0]
    assert re.search(message, lines[0]), lines[0]


@E2E
def test_report_names_a_deleted_artifact_folder(run_copy, tmp_path, capsys):
    teacher_models = run_copy / "root" / "Trainer.teacher" / "model"
    shutil.rmtree(teacher_models)
    status, lines = _report(capsys, str(run_copy / "root"), "--log-file", str(tmp_path / "report.log"))
    assert status == 1
    assert lines[0].startswith(f"kd: error: {teacher_models}/") and \
        lines[0].endswith("the Model folder of Trainer.teacher is missing (deleted, or the run folder is incomplete)")


def _connection(store: Path) -> metadata_store_pb2.ConnectionConfig:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(store)
    return config


@E2E
def test_executions_left_running_by_a_killed_run_are_marked_by_the_next_run(run_copy, smoke_first_run, monkeypatch):
    """A SIGKILLed run leaves its execution RUNNING and its outputs PENDING; the next run (which
    holds the run lock, so no live process owns them) marks them FAILED / ABANDONED."""
    connection = _connection(run_copy / "metadata.sqlite")
    store = metadata_store.MetadataStore(connection)
    context = store.get_context_by_type_and_name("node", "kd-smoke.Trainer.baseline_trial1")
    killed = max(store.get_executions_by_context(context.id), key=lambda e: e.id)
    killed.last_known_state = metadata_store_pb2.Execution.RUNNING
    store.put_executions([killed])
    outputs = store.get_artifacts_by_id([e.artifact_id for e in store.get_events_by_execution_ids([killed.id])
                                         if e.type == metadata_store_pb2.Event.OUTPUT])
    for artifact in outputs:
        artifact.state = metadata_store_pb2.Artifact.PENDING
    store.put_artifacts(outputs)

    paths = local_runner.LocalPaths(run_copy.parent, run_copy.name)
    pipelines_run = []
    monkeypatch.setattr(local_runner.BeamDagRunner, "run", lambda self, pipeline: pipelines_run.append(pipeline))
    marked = local_runner.run(smoke_first_run.preset, paths)
    assert len(pipelines_run) == 1 and len(marked) == 1
    assert marked[0].startswith(
        f"execution {killed.id} of Trainer.baseline_trial1 (left running by an interrupted run) as failed")
    [execution] = store.get_executions_by_id([killed.id])
    assert execution.last_known_state == metadata_store_pb2.Execution.FAILED
    assert "marked failed by the next run" in execution.custom_properties[local_runner.ABANDONED_PROPERTY].string_value
    assert {a.state for a in store.get_artifacts_by_id([a.id for a in outputs])} == {
        metadata_store_pb2.Artifact.ABANDONED}
    assert local_runner.mark_abandoned_executions(connection, "kd-smoke") == []  # nothing left to mark


def test_runs_land_in_outputs_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = local_runner.local_paths(presets.resolve("smoke"))
    assert paths.pipeline_root == tmp_path / "outputs" / "kd-smoke" / "root"
    assert paths.metadata_path == tmp_path / "outputs" / "kd-smoke" / "metadata.sqlite"


def test_a_second_run_of_the_same_pipeline_is_refused_while_one_holds_the_lock(tmp_path):
    paths = local_runner.LocalPaths(tmp_path, "kd-smoke")
    with local_runner.exclusive_run(paths):
        with pytest.raises(local_runner.RunLockedError, match="another run of 'kd-smoke' is in progress"):
            with local_runner.exclusive_run(paths):
                pass
    with local_runner.exclusive_run(paths):  # released when the holder ends
        pass


@E2E
def test_results_reads_a_moved_store_read_only(run_copy):
    config = results.readonly_connection_config(run_copy / "metadata.sqlite")
    assert config.sqlite.connection_mode == metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    artifacts, relocate = results.relocated(results.latest_artifacts(config, "kd-smoke"), str(run_copy / "root"))
    assert artifacts["Trainer.teacher"]["Model"].uri.startswith(str(run_copy / "root") + "/Trainer.teacher/model/")
    assert relocate("/elsewhere/x") == "/elsewhere/x"


def _leaderboard_artifacts(folder: Path) -> dict:
    artifact = metadata_store_pb2.Artifact(uri=str(folder))
    return {"Leaderboard": {leaderboard.LeaderboardArtifact.TYPE_NAME: artifact}}


@pytest.mark.parametrize("content, message", [
    (None, "leaderboard.json: missing"),
    ("{", "leaderboard.json: not valid JSON"),
    ('{"configuration": [], "title": "t"}', r"expected an object with 'configuration' \(object\)"),
])
def test_a_broken_leaderboard_json_is_named(tmp_path, content, message):
    if content is not None:
        (tmp_path / "leaderboard.json").write_text(content)
    with pytest.raises(results.RunFolderError, match=message):
        results.regenerate_report(_leaderboard_artifacts(tmp_path), str(tmp_path / "report"))


def test_paths_under_the_recorded_root_are_relocated():
    artifact = metadata_store_pb2.Artifact(uri="/old/kd-smoke/root/Trainer.teacher/model/3")
    blessing = metadata_store_pb2.Artifact(uri="/old/kd-smoke/root/Evaluator.x/blessing/9")
    blessing.custom_properties["current_model"].string_value = "/old/kd-smoke/root/Trainer.x/model/5"
    moved, relocate = results.relocated({"Trainer.teacher": {"Model": artifact},
                                         "Evaluator.x": {"ModelBlessing": blessing}}, "/new/place/root")
    assert moved["Trainer.teacher"]["Model"].uri == "/new/place/root/Trainer.teacher/model/3"
    assert moved["Evaluator.x"]["ModelBlessing"].custom_properties["current_model"].string_value == \
        "/new/place/root/Trainer.x/model/5"
    assert relocate("/old/kd-smoke/root/Trainer.x/model/5/Format-Serving") == \
        "/new/place/root/Trainer.x/model/5/Format-Serving"
    assert relocate("/old/kd-smoke/rootless") == "/old/kd-smoke/rootless"
    assert artifact.uri == "/old/kd-smoke/root/Trainer.teacher/model/3"  # the originals are untouched
