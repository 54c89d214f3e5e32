"""The whole pipeline with BeamDagRunner on tiny generated CIFAR-100 (smoke preset)."""

import json
import os
import subprocess
import sys

import pytest
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from pipelines import cli, local_runner, presets, results, revision
from pipelines.pipeline import create_pipeline
from conftest import REPO_ROOT

OVERRIDES = ["data.require_official_sizes=false", "data.train_per_class=4", "data.eval_per_class=2"]
METHODS = presets.SEED_METHODS
TRAINERS = ["Trainer.teacher", "Trainer.baseline_trial1", *(f"Trainer.{m}_trial1" for m in METHODS)]
EVALUATORS = ["Evaluator.teacher", *(f"Evaluator.{m}_trial1" for m in METHODS)]


def executions_by_node(paths):
    store = metadata_store.MetadataStore(paths.connection_config())
    prefix = f"{paths.pipeline_name}."
    states = {}
    for context in store.get_contexts_by_type("node"):
        if context.name.startswith(prefix):
            states[context.name[len(prefix):]] = [metadata_store_pb2.Execution.State.Name(e.last_known_state)
                                                  for e in store.get_executions_by_context(context.id)]
    return states


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, tiny_archive):
    output_dir = tmp_path_factory.mktemp("outputs")
    args = ["run", "--preset", "smoke", "--output-dir", str(output_dir), "--set", f"data.data_dir={tiny_archive.parent}"]
    for override in OVERRIDES:
        args += ["--set", override]
    preset = presets.resolve("smoke", [f"data.data_dir={tiny_archive.parent}", *OVERRIDES])
    return args, local_runner.local_paths(preset, output_dir)


def test_first_run_completes_every_component(smoke_run, capsys):
    args, paths = smoke_run
    assert cli.main(args) == 0
    states = executions_by_node(paths)
    assert set(states) == {"CifarExampleGen", *TRAINERS, *EVALUATORS}
    assert all(s == ["COMPLETE"] for s in states.values()), states

    artifacts = results.latest_artifacts(paths.connection_config(), paths.pipeline_name)
    examples = artifacts["CifarExampleGen"]["Examples"]
    assert json.loads(examples.properties["split_names"].string_value) == ["train", "eval"]
    for trainer in TRAINERS:
        model_dir = artifacts[trainer]["Model"].uri
        assert os.path.isfile(os.path.join(model_dir, "Format-Serving", "saved_model.pb"))
        stages = [h["stage"] for h in json.load(open(os.path.join(model_dir, "history.json")))]
        two_stage = trainer.split(".")[1].rsplit("_trial", 1)[0] in ("fitnet", "fsp", "ab")
        assert stages == (["init", "main"] if two_stage else ["main"]), trainer
    for method in METHODS:
        blessing = artifacts[f"Evaluator.{method}_trial1"]["ModelBlessing"]
        assert blessing.custom_properties["blessed"].int_value in (0, 1)

    rows = {row.component: row for row in results.collect(paths.connection_config(), paths.pipeline_name)}
    assert set(rows) == {"teacher", "baseline_trial1", *(f"{m}_trial1" for m in METHODS)}
    for method in METHODS:
        student = rows[f"{method}_trial1"]
        assert student.baseline_accuracy == rows["baseline_trial1"].accuracy
        assert 0 <= student.accuracy <= 1
        assert student.blessed == (student.accuracy >= student.baseline_accuracy), method
        # TFMA counted the whole (tiny) eval split.
        assert results.overall_metrics(student.evaluation_uri, "candidate")["example_count"] == 200

    printed = capsys.readouterr().out
    assert str(paths.pipeline_root) in printed
    assert "| teacher | resnet14 | 1 |" in printed
    assert all(f"| {m} | resnet8 | 1 |" in printed for m in METHODS)


def test_second_run_hits_the_cache(smoke_run):
    args, paths = smoke_run
    assert cli.main(args) == 0
    states = executions_by_node(paths)
    assert all(sorted(s) == ["CACHED", "COMPLETE"] for s in states.values()), states


def test_results_command_reprints_the_table_with_the_code_revision(smoke_run, capsys):
    args, paths = smoke_run
    results_args = ["results", *args[args.index("--preset"):]]
    capsys.readouterr()
    assert cli.main(results_args) == 0
    printed = capsys.readouterr().out
    assert printed.count("| baseline | resnet8 | 1 |") == 1
    assert f"Code revision: {revision.code_revision()}." in printed
    assert cli.main(["results", "--preset", "smoke", "--output-dir", str(paths.output_dir / "none")]) == 2


def test_structure_follows_methods_and_trials(tmp_path):
    preset = presets.resolve("smoke", ["trials=3", "methods=soft_logits,fitnet"])
    pipeline = create_pipeline("p", str(tmp_path), preset, code_revision="test")
    ids = [c.id for c in pipeline.components]
    assert ids.count("Trainer.teacher") == 1
    for trial in (1, 2, 3):
        assert {f"Trainer.baseline_trial{trial}", f"Trainer.soft_logits_trial{trial}",
                f"Evaluator.soft_logits_trial{trial}", f"Trainer.fitnet_trial{trial}",
                f"Evaluator.fitnet_trial{trial}"} <= set(ids)
    assert len(ids) == 3 + 3 * (1 + 2 * 2)
    evaluator = next(c for c in pipeline.components if c.id == "Evaluator.soft_logits_trial2")
    assert evaluator.inputs["baseline_model"].producer_component_id == "Trainer.baseline_trial2"
    assert evaluator.inputs["model"].producer_component_id == "Trainer.soft_logits_trial2"
    student = next(c for c in pipeline.components if c.id == "Trainer.soft_logits_trial2")
    assert student.inputs["base_model"].producer_component_id == "Trainer.teacher"


def test_tfx_cli_creates_the_pipeline_from_the_runner_module(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "KD_PRESET": "smoke", "KD_OUTPUT_DIR": str(tmp_path / "out")}
    tfx_cli = os.path.join(os.path.dirname(sys.executable), "tfx")
    result = subprocess.run([tfx_cli, "pipeline", "create", "--engine", "beam", "--pipeline_path",
                             "pipelines/local_runner.py"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'Pipeline "kd-smoke" created successfully' in result.stdout
    assert (tmp_path / "tfx" / "beam" / "kd-smoke" / "pipeline_args.json").is_file()
