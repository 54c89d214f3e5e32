"""Rewrites of the KFP v2 PipelineSpec that TFX's KubeflowV2DagRunner compiles (as a dict).

TFX names tasks by component id, writes one component and executor per task, indents JSON
parameters, declares pipeline parameters without defaults and writes some trigger conditions
on inputs the task does not declare. `compile_pipeline` (pipelines/kubeflow_runner.py) applies
these rewrites in turn so that the spec runs on Kubeflow's Argo backend and stays small.
"""

from __future__ import annotations

import json
import re
from typing import Any


def kubernetes_name(component_id: str) -> str:
    """A component id as a KFP task name (`Trainer.fitnet_trial1` -> `trainer-fitnet-trial1`).

    TFX names tasks by component id, but Kubeflow's Argo backend uses task names as
    workflow template and task names, which allow only [a-z0-9-] (as the KFP SDK emits).
    """
    return re.sub(r"[^a-z0-9]+", "-", component_id.lower()).strip("-")


def _condition_on_declared_inputs(task: dict[str, Any]) -> None:
    """Points a task's trigger condition at the inputs it declares.

    TFX 1.16 writes a `tfx.dsl.Cond` on an upstream output that the task also consumes
    (an Evaluator's condition on its model) as `inputs.artifacts['_<producer id>.<output>']`,
    a key the task does not declare; the task's own input name is the one that resolves.
    """
    condition = task.get("triggerPolicy", {}).get("condition")
    if not condition:
        return
    for name, artifact in task.get("inputs", {}).get("artifacts", {}).items():
        producer = artifact["taskOutputArtifact"]
        implicit = f"_{producer['producerTask']}.{producer['outputArtifactKey']}"
        condition = condition.replace(f"inputs.artifacts['{implicit}']", f"inputs.artifacts['{name}']")
    if "inputs.artifacts['_" in condition:
        raise ValueError(f"task {task['taskInfo']['name']}: condition {condition!r} reads an undeclared input")
    task["triggerPolicy"]["condition"] = condition


def rename_tasks(spec: dict[str, Any]) -> dict[str, str]:
    """Renames tasks, components and executors of a TFX-built PipelineSpec (dict) in place.

    Returns {component id: task name}. TFX names each task and component by its component
    id and its executor `<id>_executor`; references between tasks are by task name.
    """
    tasks = spec["root"]["dag"]["tasks"]
    names = {component_id: kubernetes_name(component_id) for component_id in tasks}
    if len(set(names.values())) != len(names):
        raise ValueError(f"component ids collide as Kubernetes names: {sorted(names)}")
    executors = spec["deploymentSpec"]["executors"]
    renamed_tasks, renamed_components, renamed_executors = {}, {}, {}
    for component_id, task in tasks.items():
        name = names[component_id]
        _condition_on_declared_inputs(task)
        component = spec["components"][task["componentRef"]["name"]]
        renamed_executors[f"exec-{name}"] = executors[component["executorLabel"]]
        component["executorLabel"] = f"exec-{name}"
        renamed_components[f"comp-{name}"] = component
        task["componentRef"]["name"] = f"comp-{name}"
        task["taskInfo"]["name"] = name
        task["dependentTasks"] = sorted(names[upstream] for upstream in task.get("dependentTasks", []))
        for artifact in task.get("inputs", {}).get("artifacts", {}).values():
            producer = artifact["taskOutputArtifact"]
            producer["producerTask"] = names[producer["producerTask"]]
        renamed_tasks[name] = task
    spec["root"]["dag"]["tasks"] = renamed_tasks
    spec["components"] = renamed_components
    spec["deploymentSpec"]["executors"] = renamed_executors
    return names


def share_identical_definitions(spec: dict[str, Any]) -> None:
    """Makes tasks with identical executors and components share one definition of each.

    TFX writes one component and one executor per task although every student Trainer (and
    every student Evaluator) has the same ones; the task carries what differs. Shared
    definitions, as the KFP SDK writes for a reused component, keep the seed spec under
    the 256 KiB limit of KFP backends before 2.3.
    """
    def key(value: Any) -> str:
        return json.dumps(value, sort_keys=True)

    executors, executor_names, kept_executors = spec["deploymentSpec"]["executors"], {}, {}
    for label in sorted(executors):
        first = executor_names.setdefault(key(executors[label]), label)
        kept_executors.setdefault(first, executors[label])
        executor_names[label] = first
    components, component_names, kept_components = spec["components"], {}, {}
    for name in sorted(components):
        component = components[name]
        component["executorLabel"] = executor_names[component["executorLabel"]]
        first = component_names.setdefault(key(component), name)
        kept_components.setdefault(first, component)
        component_names[name] = first
    for task in spec["root"]["dag"]["tasks"].values():
        task["componentRef"]["name"] = component_names[task["componentRef"]["name"]]
    spec["deploymentSpec"]["executors"] = kept_executors
    spec["components"] = kept_components


def compact_json_constants(spec: dict[str, Any]) -> None:
    """Rewrites JSON-valued task parameters (TFX writes EvalConfigs indented) without whitespace.

    The executors parse them as JSON, so only the file's size changes (the seed spec's
    EvalConfigs alone take about 70 KB indented).
    """
    for task in spec["root"]["dag"]["tasks"].values():
        for parameter in task.get("inputs", {}).get("parameters", {}).values():
            constant = parameter.get("runtimeValue", {}).get("constant")
            if isinstance(constant, str) and constant.startswith(("{", "[")):
                parameter["runtimeValue"]["constant"] = json.dumps(json.loads(constant), separators=(",", ":"))


def declare_defaults(spec: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Gives each pipeline parameter its preset value as default (TFX declares only the type)."""
    declared = spec["root"]["inputDefinitions"]["parameters"]
    if set(declared) != set(defaults):
        raise ValueError(f"compiled parameters {sorted(declared)} differ from the pipeline's {sorted(defaults)}")
    for name, default in defaults.items():
        declared[name].update(defaultValue=default, isOptional=True)


def executor_label(spec: dict[str, Any], task_name: str) -> str:
    """The label of the executor that a task of the rewritten spec runs."""
    component = spec["root"]["dag"]["tasks"][task_name]["componentRef"]["name"]
    return spec["components"][component]["executorLabel"]
