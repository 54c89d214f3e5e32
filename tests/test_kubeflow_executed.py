"""The compiled Kubeflow definition executed, task by task, as a KFP v2 launcher runs it.

For each task of the compiled `smoke` pipeline (one method), in DAG order, the test builds
the ExecutorInput a launcher would pass (parameters from the task's constants and the
pipeline parameters, input artifacts from the producers' executor outputs, output URIs
under a local pipeline root), puts it in place of `{{$}}` in the task's container
arguments, and runs the container's own command (`python -m
tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor ...`) in a fresh process.
Trigger conditions are evaluated on the producers' output metadata like the backend does.
A broken command line, artifact URI, parameter type or missing module fails here.

Not covered (needs a cluster): the KFP driver and launcher themselves, MLMD, object
storage, pod resources (docs/kubeflow.md, "verified offline vs needs a cluster").
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT, SMOKE_OVERRIDES
from kd_trainer.contract import CONFIG_FILE
from pipelines import kubeflow_runner, presets

TASK_TIMEOUT_S = 900  # one task; minutes on a loaded 2-core machine
# Pipeline parameters this run changes from the compiled defaults.
RUN_TEACHER_LEARNING_RATE = 0.05
CONDITION_TERM = re.compile(r"inputs\.artifacts\['([^']+)'\]\.artifacts\[0\]\.metadata\['([^']+)'\] == ([0-9.]+)")


def topological_order(tasks: dict) -> list[str]:
    order, done = [], set()
    while len(order) < len(tasks):
        ready = sorted(n for n, t in tasks.items() if n not in done and set(t.get("dependentTasks", [])) <= done)
        assert ready, f"cycle among {sorted(set(tasks) - done)}"
        order += ready
        done |= set(ready)
    return order


def parameter_value(parameter: dict, run_parameters: dict):
    if "componentInputParameter" in parameter:
        return run_parameters[parameter["componentInputParameter"]]
    return parameter["runtimeValue"]["constant"]


def condition_holds(condition: str, inputs: dict) -> bool:
    """A TFX trigger condition (`a == x && b == y` on input artifact metadata) on this run's inputs."""
    terms = CONDITION_TERM.findall(condition)
    assert terms and condition.count("==") == len(terms), f"condition not understood: {condition}"
    return all(inputs[name]["artifacts"][0]["metadata"][key] == float(value) for name, key, value in terms)


class LocalLauncher:
    """Runs compiled tasks through their container command, passing artifacts like a KFP launcher."""

    def __init__(self, spec: dict, pipeline_root: Path, run_parameters: dict):
        self.spec, self.root, self.parameters = spec, pipeline_root, run_parameters
        self.outputs: dict[str, dict] = {}  # task -> output key -> ArtifactList (JSON)

    def executor_input(self, name: str) -> dict:
        task = self.spec["root"]["dag"]["tasks"][name]
        component = self.spec["components"][task["componentRef"]["name"]]
        inputs = {"parameterValues": {key: parameter_value(value, self.parameters)
                                      for key, value in task.get("inputs", {}).get("parameters", {}).items()},
                  "artifacts": {}}
        for key, source in task.get("inputs", {}).get("artifacts", {}).items():
            producer = source["taskOutputArtifact"]
            (artifact,) = self.outputs[producer["producerTask"]][producer["outputArtifactKey"]]["artifacts"]
            declared = component["inputDefinitions"]["artifacts"][key]["artifactType"]
            inputs["artifacts"][key] = {"artifacts": [{**artifact, "type": declared}]}
        outputs = {"artifacts": {
            key: {"artifacts": [{"name": f"{name}.{key}", "type": definition["artifactType"],
                                 "uri": str(self.root / name / key), "metadata": {}}]}
            for key, definition in component.get("outputDefinitions", {}).get("artifacts", {}).items()},
            "outputFile": str(self.root / name / "executor_output.json")}
        return {"inputs": inputs, "outputs": outputs}

    def run(self, name: str, log: Path) -> bool:
        """Runs task `name`; False when its trigger condition says it is skipped."""
        task = self.spec["root"]["dag"]["tasks"][name]
        executor_input = self.executor_input(name)
        condition = task.get("triggerPolicy", {}).get("condition")
        if condition and not condition_holds(condition, executor_input["inputs"]["artifacts"]):
            return False
        component = self.spec["components"][task["componentRef"]["name"]]
        container = self.spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
        command = [sys.executable if part == "python" else part for part in container["command"]]
        args = [json.dumps(executor_input) if arg == "{{$}}" else arg for arg in container["args"]]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
               **{entry["name"]: entry["value"] for entry in container.get("env", [])}}  # as the pod's spec sets them
        with log.open("w") as stream:  # a pod's working directory is not the source tree
            result = subprocess.run(command + args, cwd=self.root, env=env, stdout=stream, stderr=subprocess.STDOUT,
                                    timeout=TASK_TIMEOUT_S)
        assert result.returncode == 0, f"task {name} failed:\n{log.read_text()[-4000:]}"
        output = json.loads(Path(executor_input["outputs"]["outputFile"]).read_text())
        self.outputs[name] = {key: output.get("artifacts", {}).get(key, value)
                              for key, value in executor_input["outputs"]["artifacts"].items()}
        return True


@pytest.mark.e2e
def test_compiled_smoke_tasks_run_through_the_container_entry_point(tmp_path, tiny_archive):
    # Compiled as for a cluster (object-storage data, one Beam worker per pod); the run then
    # points the data_dir parameter at the local archive and changes the teacher's learning rate.
    preset = presets.resolve("smoke", [*SMOKE_OVERRIDES, "data.data_dir=gs://kd-test/cifar-100",
                                       "methods=soft_logits", "resources.beam_cpu=1"])
    compiled = kubeflow_runner.compile_pipeline(preset, "gs://kd-test/root", "registry/kd:test",
                                                tmp_path / "kd-smoke.yaml", "rev-executed")
    spec = yaml.safe_load(compiled.path.read_text())
    tasks = spec["root"]["dag"]["tasks"]
    order = topological_order(tasks)
    assert set(order) == {"cifarexamplegen", "trainer-teacher", "evaluator-teacher", "trainer-baseline-trial1",
                          "trainer-soft-logits-trial1", "evaluator-soft-logits-trial1", "leaderboard"}
    run_parameters = {**compiled.parameters, "data_dir": str(tiny_archive.parent),
                      "teacher_learning_rate": RUN_TEACHER_LEARNING_RATE}
    root = tmp_path / "root"
    root.mkdir()
    launcher = LocalLauncher(spec, root, run_parameters)
    for name in order:
        assert launcher.run(name, tmp_path / f"{name}.log"), f"{name} was skipped: a model diverged"

    examples = launcher.outputs["cifarexamplegen"]["examples"]["artifacts"][0]
    assert {p.name for p in Path(examples["uri"]).iterdir()} >= {"Split-train", "Split-eval"}
    teacher = launcher.outputs["trainer-teacher"]["model"]["artifacts"][0]
    assert teacher["metadata"]["diverged"] == 0
    trainer_config = json.loads((Path(teacher["uri"]) / CONFIG_FILE).read_text())
    assert trainer_config["learning_rate"] == RUN_TEACHER_LEARNING_RATE  # the run's parameter, not the preset's
    assert trainer_config["code_revision"] == "rev-executed"
    student = json.loads((Path(launcher.outputs["trainer-soft-logits-trial1"]["model"]["artifacts"][0]["uri"])
                          / CONFIG_FILE).read_text())
    assert (student["method"], student["learning_rate"]) == ("soft_logits", preset.student.learning_rate)
    blessing = Path(launcher.outputs["evaluator-soft-logits-trial1"]["blessing"]["artifacts"][0]["uri"])
    assert {p.name for p in blessing.iterdir()} & {"BLESSED", "NOT_BLESSED"}
    report = Path(launcher.outputs["leaderboard"]["leaderboard"]["artifacts"][0]["uri"])
    table = (report / "leaderboard.md").read_text()
    assert "soft_logits" in table.lower().replace("-", "_") and (report / "report.html").is_file()
