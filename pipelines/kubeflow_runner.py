"""Runs the pipeline on Kubeflow Pipelines (KFP v2) or Vertex AI Pipelines.

`compile_pipeline` hands the same `create_pipeline(...)` as the local runner to TFX's
KubeflowV2DagRunner, rewrites the spec it compiles (pipelines/kubeflow_ir.py) and writes a KFP
v2 pipeline definition (PipelineSpec YAML) that both `kfp.Client` and
`google.cloud.aiplatform.PipelineJob` accept; `kd submit` (pipelines/kubeflow_submit.py) uploads
it to a Kubeflow Pipelines host and starts a run. See docs/kubeflow.md.

Every component runs in one image (Dockerfile) that holds this project, so Trainers find
`kd_trainer.run_fn.run_fn` and Evaluators `kd_trainer.metrics` by module path; the pipeline
root and `data.data_dir` must be storage every pod reaches (gs://...). Trainers get the
preset's `resources`, the Beam components (ExampleGen, Evaluators, DataImpressions) its
`beam_*` requests. The fields in pipeline.PARAMETER_FIELDS become pipeline parameters.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import yaml
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx import v1 as tfx
from tfx.dsl.components.base.base_beam_component import BaseBeamComponent
from tfx.orchestration import data_types
from tfx.v1.orchestration import experimental as tfx_experimental

from components.data_impressions import DataImpressions
from pipelines import cluster_data, presets
from pipelines.kubeflow_ir import (compact_json_constants, declare_defaults, executor_label, rename_tasks,
                                   share_identical_definitions)
from pipelines.kubeflow_submit import OptionError
from pipelines.pipeline import PARAMETER_FIELDS, create_pipeline, preset_value, trainer_id
from pipelines.revision import REVISION_ENV

ResourceSpec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec

# Beam runs inside each Beam component's pod, one process per core it requests
# (`--direct_num_workers=0` would start one per core of the node, not of the pod).
DEFAULT_BEAM_ARGS = ("--direct_running_mode=multi_processing",)
KUBERNETES_PLATFORM = "kubernetes"
# KFP backends 2.0-2.2 store the spec in Workflow annotations capped at 256 KiB
# (kubeflow/pipelines#10968, fixed in 2.3).
ANNOTATION_LIMIT_BYTES = 262_144
YAML_WIDTH = 1 << 16  # long strings on one line: folding them would add escapes and bytes
PIPELINE_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")


def pipeline_name(preset: presets.Preset) -> str:
    """`kd-<preset>` in the form TFX and KFP accept ([a-z0-9][a-z0-9-]{0,127}): `kd-zero_shot` -> `kd-zero-shot`."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"kd-{preset.name}".lower()).strip("-")[:128].rstrip("-")
    if not PIPELINE_NAME_PATTERN.fullmatch(name):
        raise OptionError(f"preset name {preset.name!r} gives no valid pipeline name ({name!r})")
    return name


def default_output(preset: presets.Preset) -> Path:
    return Path("outputs") / "kubeflow" / f"{pipeline_name(preset)}.yaml"


def trainer_resources(resources: presets.ResourcesConfig, gpus: int) -> ResourceSpec | None:
    """The container resources of one Trainer, None when it asks for nothing beyond the defaults."""
    if not (gpus or resources.cpu_limit or resources.memory_limit_gb):
        return None
    spec = ResourceSpec(cpu_limit=resources.cpu_limit, memory_limit=resources.memory_limit_gb)
    if gpus:
        spec.accelerator.type = resources.accelerator_type
        spec.accelerator.count = gpus
    return spec


def beam_resources(resources: presets.ResourcesConfig, gpus: int = 0) -> ResourceSpec | None:
    """The container resources of a Beam component or DataImpressions (requests and limits alike), None when unset."""
    if not (gpus or resources.beam_cpu or resources.beam_memory_gb):
        return None
    spec = ResourceSpec(cpu_limit=resources.beam_cpu, cpu_request=resources.beam_cpu,
                        memory_limit=resources.beam_memory_gb, memory_request=resources.beam_memory_gb)
    if gpus:
        spec.accelerator.type = resources.accelerator_type
        spec.accelerator.count = gpus
    return spec


def runtime_parameters(preset: presets.Preset) -> dict[str, data_types.RuntimeParameter]:
    """One pipeline parameter per PARAMETER_FIELDS entry, with the preset's value as default."""
    parameters = {}
    for name, field in PARAMETER_FIELDS.items():
        default = preset_value(preset, field)
        parameters[name] = data_types.RuntimeParameter(name=name, ptype=type(default), default=default)
    return parameters


def dataflow_args(option: str, pipeline_root: str, image: str) -> list[str]:
    """The Beam arguments that run the Beam components on Dataflow, from `--dataflow PROJECT/REGION`."""
    project, _, region = option.partition("/")
    if not project or not region or "/" in region:
        raise OptionError(f"--dataflow must be PROJECT/REGION, e.g. my-project/us-central1; got {option!r}")
    if not pipeline_root.startswith("gs://"):
        raise OptionError(f"--dataflow needs a gs:// --pipeline-root (its temp_location); got {pipeline_root!r}")
    return ["--runner=DataflowRunner", f"--project={project}", f"--region={region}",
            f"--temp_location={pipeline_root.rstrip('/')}/tmp/dataflow", f"--sdk_container_image={image}",
            "--sdk_location=container", "--experiments=use_runner_v2"]


def _check_options(pipeline_root: str, image: str) -> None:
    if "://" not in pipeline_root or pipeline_root.startswith("file://"):
        raise OptionError(f"--pipeline-root must be storage every pod can reach, such as gs://BUCKET/PATH; "
                           f"got {pipeline_root!r} (a path on this machine does not exist in the cluster)")
    if not image or any(c.isspace() for c in image):
        raise OptionError(f"--image must name the pipeline image, e.g. REGISTRY/kd-benchmark:TAG; got {image!r}")


@dataclasses.dataclass(frozen=True)
class Compiled:
    """What `compile_pipeline` wrote."""

    path: Path
    name: str
    size_bytes: int
    parameters: dict[str, Any]  # pipeline parameter -> default

    @property
    def over_annotation_limit(self) -> bool:
        return self.size_bytes > ANNOTATION_LIMIT_BYTES


def _beam_workers_args(beam_pipeline_args: list[str] | tuple[str, ...]) -> bool:
    """Whether the Beam components should get `--direct_num_workers` from their CPU request."""
    return not any(arg.startswith(("--direct_num_workers", "--runner")) for arg in beam_pipeline_args)


# Beam arguments with which TFX does not package itself for Beam workers (dependency_utils).
PACKAGING_ARGS = ("--extra_package", "--setup_file", "--requirements_file", "--worker_harness_container_image",
                  "--sdk_container_image")


def _with_image_as_beam_environment(beam_pipeline_args: list[str] | tuple[str, ...], image: str) -> list[str]:
    """The arguments plus `--sdk_container_image=<image>` unless they name packages already.

    Without any of PACKAGING_ARGS, every Beam executor builds an sdist of TFX for its
    workers first (tens of seconds per pod), which the DirectRunner in a pod that already
    runs the image does not need; a remote runner gets the image, which holds everything.
    """
    if any(arg.startswith(PACKAGING_ARGS) for arg in beam_pipeline_args):
        return list(beam_pipeline_args)
    return [*beam_pipeline_args, f"--sdk_container_image={image}"]


def compile_pipeline(preset: presets.Preset, pipeline_root: str, image: str, output: str | Path,
                     code_revision: str, beam_pipeline_args: list[str] | tuple[str, ...] = DEFAULT_BEAM_ARGS,
                     enable_cache: bool = True, allow_download: bool = False) -> Compiled:
    """Writes the preset's pipeline as a KFP v2 PipelineSpec YAML file to `output`.

    The pipeline root becomes the spec's default (a run may override it). Every container gets
    `code_revision` as KD_CODE_REVISION, which Trainers record (the image has no .git). Node selectors,
    which only Kubernetes has, go into a second YAML document (the platform spec that
    kfp-kubernetes writes); the file then stays single-document for Vertex AI without them.
    `allow_download`: accept an empty data.data_dir (the ExampleGen pod downloads CIFAR-100).
    """
    _check_options(pipeline_root, image)
    problem = cluster_data.cluster_data_problem(preset.data.data_dir, preset.data.allow_download, allow_download)
    if problem:
        raise OptionError(problem)
    name = pipeline_name(preset)
    parameters = runtime_parameters(preset)
    pipeline = create_pipeline(pipeline_name=name, pipeline_root=pipeline_root, preset=preset,
                               beam_pipeline_args=_with_image_as_beam_environment(beam_pipeline_args, image),
                               enable_cache=enable_cache, parameters=parameters)
    trainers = [c for c in pipeline.components if isinstance(c, tfx.components.Trainer)]
    for trainer in trainers:
        gpus = preset.resources.teacher_gpus if trainer.id == trainer_id("teacher") else preset.resources.student_gpus
        resources = trainer_resources(preset.resources, gpus)
        if resources is not None:
            trainer.with_platform_config(resources)
    workers = max(1, math.floor(preset.resources.beam_cpu))
    for component in pipeline.components:
        if isinstance(component, (BaseBeamComponent, DataImpressions)):
            gpus = preset.resources.teacher_gpus if isinstance(component, DataImpressions) else 0
            resources = beam_resources(preset.resources, gpus)
            if resources is not None:
                component.with_platform_config(resources)
        if (isinstance(component, BaseBeamComponent) and preset.resources.beam_cpu
                and _beam_workers_args(beam_pipeline_args)):
            component.with_beam_pipeline_args([f"--direct_num_workers={workers}"])
    runner = tfx_experimental.KubeflowV2DagRunner(
        config=tfx_experimental.KubeflowV2DagRunnerConfig(default_image=image, use_pipeline_spec_2_1=True))
    spec = runner.run(pipeline, write_out=False)["pipelineSpec"]
    spec["defaultPipelineRoot"] = pipeline_root
    for executor in spec["deploymentSpec"]["executors"].values():
        if "container" in executor:
            executor["container"].setdefault("env", []).append({"name": REVISION_ENV, "value": code_revision})
    names = rename_tasks(spec)
    share_identical_definitions(spec)
    compact_json_constants(spec)
    defaults = {n: p.default for n, p in parameters.items()}
    declare_defaults(spec, defaults)
    documents = [spec]
    if preset.resources.node_selector:  # one copy per executor: no YAML aliases in the file
        labels = sorted({executor_label(spec, names[t.id]) for t in trainers})
        documents.append({"platforms": {KUBERNETES_PLATFORM: {"deploymentSpec": {"executors": {
            label: {"nodeSelector": {"labels": dict(preset.resources.node_selector)}} for label in labels}}}}})
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump_all(documents, sort_keys=True, width=YAML_WIDTH)
    output.write_text(text)
    return Compiled(path=output, name=name, size_bytes=len(text.encode()), parameters=defaults)
