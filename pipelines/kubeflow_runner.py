"""Runs the pipeline on Kubeflow Pipelines (KFP v2) or Vertex AI Pipelines.

`compile_pipeline` hands the same `create_pipeline(...)` as the local runner to TFX's
KubeflowV2DagRunner and writes a KFP v2 pipeline definition (PipelineSpec YAML) that both
`kfp.Client` and `google.cloud.aiplatform.PipelineJob` accept. `submit` uploads it to a
Kubeflow Pipelines host and starts a run. See docs/kubeflow.md.

Every component runs in one image (Dockerfile) that holds this project, so Trainers find
`kd_trainer.run_fn.run_fn` and Evaluators `kd_trainer.metrics` by module path; the pipeline
root must be storage every pod reaches (gs://...). Trainers get the preset's `resources`.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from pathlib import Path
from typing import Any, Callable, Protocol

import kfp
import yaml
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx import v1 as tfx
from tfx.v1.orchestration import experimental as tfx_experimental

from pipelines import presets
from pipelines.pipeline import create_pipeline, trainer_id
from pipelines.revision import REVISION_ENV

ResourceSpec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec

# Beam runs inside each component's pod: all of its cores, one process per core.
DEFAULT_BEAM_ARGS = ("--direct_running_mode=multi_processing", "--direct_num_workers=0")
KUBERNETES_PLATFORM = "kubernetes"


class OptionError(ValueError):
    """A `kd compile` / `kd submit` option is invalid (the message names it)."""


def pipeline_name(preset: presets.Preset) -> str:
    return f"kd-{preset.name}"


def default_output(preset: presets.Preset) -> Path:
    return Path("outputs") / "kubeflow" / f"{pipeline_name(preset)}.yaml"


def kubernetes_name(component_id: str) -> str:
    """A component id as a KFP task name (`Trainer.fitnet_trial1` -> `trainer-fitnet-trial1`).

    TFX names tasks by component id, but Kubeflow's Argo backend uses task names as
    workflow template and task names, which allow only [a-z0-9-] (as the KFP SDK emits).
    """
    return re.sub(r"[^a-z0-9]+", "-", component_id.lower()).strip("-")


def trainer_resources(resources: presets.ResourcesConfig, gpus: int) -> ResourceSpec | None:
    """The container resources of one Trainer, None when it asks for nothing beyond the defaults."""
    if not (gpus or resources.cpu_limit or resources.memory_limit_gb):
        return None
    spec = ResourceSpec(cpu_limit=resources.cpu_limit, memory_limit=resources.memory_limit_gb)
    if gpus:
        spec.accelerator.type = resources.accelerator_type
        spec.accelerator.count = gpus
    return spec


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


def _rename_tasks(spec: dict[str, Any]) -> dict[str, str]:
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


def _check_options(pipeline_root: str, image: str) -> None:
    if "://" not in pipeline_root or pipeline_root.startswith("file://"):
        raise OptionError(f"--pipeline-root must be storage every pod can reach, such as gs://BUCKET/PATH; "
                           f"got {pipeline_root!r} (a path on this machine does not exist in the cluster)")
    if not image or any(c.isspace() for c in image):
        raise OptionError(f"--image must name the pipeline image, e.g. REGISTRY/kd-benchmark:TAG; got {image!r}")


def compile_pipeline(preset: presets.Preset, pipeline_root: str, image: str, output: str | Path,
                     code_revision: str, beam_pipeline_args: list[str] | tuple[str, ...] = DEFAULT_BEAM_ARGS,
                     enable_cache: bool = True) -> Path:
    """Writes the preset's pipeline as a KFP v2 PipelineSpec YAML file to `output`.

    The pipeline root becomes the spec's default (a run may override it). Every container gets
    `code_revision` as KD_CODE_REVISION, which Trainers record (the image has no .git). Node selectors,
    which only Kubernetes has, go into a second YAML document (the platform spec that
    kfp-kubernetes writes); the file then stays single-document for Vertex AI without them.
    """
    _check_options(pipeline_root, image)
    pipeline = create_pipeline(pipeline_name=pipeline_name(preset), pipeline_root=pipeline_root, preset=preset,
                               beam_pipeline_args=list(beam_pipeline_args),
                               enable_cache=enable_cache)
    trainers = [c for c in pipeline.components if isinstance(c, tfx.components.Trainer)]
    for trainer in trainers:
        gpus = preset.resources.teacher_gpus if trainer.id == trainer_id("teacher") else preset.resources.student_gpus
        resources = trainer_resources(preset.resources, gpus)
        if resources is not None:
            trainer.with_platform_config(resources)
    runner = tfx_experimental.KubeflowV2DagRunner(
        config=tfx_experimental.KubeflowV2DagRunnerConfig(default_image=image, use_pipeline_spec_2_1=True))
    spec = runner.run(pipeline, write_out=False)["pipelineSpec"]
    spec["defaultPipelineRoot"] = pipeline_root
    for executor in spec["deploymentSpec"]["executors"].values():
        if "container" in executor:
            executor["container"].setdefault("env", []).append({"name": REVISION_ENV, "value": code_revision})
    names = _rename_tasks(spec)
    documents = [spec]
    if preset.resources.node_selector:  # one copy per executor: no YAML aliases in the file
        documents.append({"platforms": {KUBERNETES_PLATFORM: {"deploymentSpec": {"executors": {
            f"exec-{names[t.id]}": {"nodeSelector": {"labels": dict(preset.resources.node_selector)}}
            for t in trainers}}}}})
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(yaml.safe_dump_all(documents, sort_keys=True))
    return output


class KfpClient(Protocol):
    """The part of kfp.Client that `submit` uses."""

    def get_pipeline_id(self, name: str) -> str | None: ...
    def upload_pipeline(self, pipeline_package_path: str, pipeline_name: str | None = None,
                        description: str | None = None) -> Any: ...
    def upload_pipeline_version(self, pipeline_package_path: str, pipeline_version_name: str,
                                pipeline_id: str | None = None, description: str | None = None) -> Any: ...
    def list_pipeline_versions(self, pipeline_id: str) -> Any: ...
    def create_experiment(self, name: str, description: str | None = None, namespace: str | None = None) -> Any: ...
    def run_pipeline(self, experiment_id: str, job_name: str, pipeline_id: str | None = None,
                     version_id: str | None = None, pipeline_root: str | None = None,
                     enable_caching: bool | None = None) -> Any: ...


def kfp_client(host: str, namespace: str | None) -> KfpClient:
    return kfp.Client(host=host, namespace=namespace) if namespace else kfp.Client(host=host)


@dataclasses.dataclass(frozen=True)
class Submission:
    """What `submit` created on the Kubeflow Pipelines host."""

    pipeline_id: str
    version_id: str
    experiment_id: str
    run_id: str


def submit(package: str | Path, host: str, experiment: str, run_name: str, version_name: str,
           namespace: str | None = None, pipeline_root: str | None = None, enable_caching: bool | None = None,
           client_factory: Callable[[str, str | None], KfpClient] | None = None) -> Submission:
    """Uploads a compiled pipeline (a new pipeline, else a new version of it) and starts a run of that version.

    The pipeline is named by the package (`kd-<preset>`). `pipeline_root` None: the root
    given at compile time; `enable_caching` None: as compiled. `client_factory(host, namespace)`
    builds the client (default kfp_client, looked up at call time so tests can replace it).
    """
    package = Path(package)
    if not package.is_file():
        raise OptionError(f"no compiled pipeline at {package} (run `kd compile` first)")
    spec = next(yaml.safe_load_all(package.read_text()))
    name = spec["pipelineInfo"]["name"]
    client = (client_factory or kfp_client)(host, namespace)
    pipeline_id = client.get_pipeline_id(name)
    if pipeline_id is None:
        pipeline_id = client.upload_pipeline(str(package), pipeline_name=name,
                                             description=f"KD benchmark ({name})").pipeline_id
        # A new pipeline holds exactly the version just uploaded.
        version_id = client.list_pipeline_versions(pipeline_id).pipeline_versions[0].pipeline_version_id
    else:
        version_id = client.upload_pipeline_version(str(package), pipeline_version_name=version_name,
                                                    pipeline_id=pipeline_id).pipeline_version_id
    experiment_id = client.create_experiment(name=experiment, namespace=namespace).experiment_id
    run = client.run_pipeline(experiment_id=experiment_id, job_name=run_name, pipeline_id=pipeline_id,
                              version_id=version_id, pipeline_root=pipeline_root, enable_caching=enable_caching)
    return Submission(pipeline_id=pipeline_id, version_id=version_id, experiment_id=experiment_id, run_id=run.run_id)


def timestamped(name: str) -> str:
    """`name` with the UTC time, for run and version names that must not repeat."""
    return f"{name} {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S}"
