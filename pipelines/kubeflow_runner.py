"""Runs the pipeline on Kubeflow Pipelines (KFP v2) or Vertex AI Pipelines.

`compile_pipeline` hands the same `create_pipeline(...)` as the local runner to TFX's
KubeflowV2DagRunner and writes a KFP v2 pipeline definition (PipelineSpec YAML) that both
`kfp.Client` and `google.cloud.aiplatform.PipelineJob` accept. `submit` uploads it to a
Kubeflow Pipelines host and starts a run. See docs/kubeflow.md.

Every component runs in one image (Dockerfile) that holds this project, so Trainers find
`kd_trainer.run_fn.run_fn` and Evaluators `kd_trainer.metrics` by module path; the pipeline
root and `data.data_dir` must be storage every pod reaches (gs://...). Trainers get the
preset's `resources`, the Beam components (ExampleGen, Evaluators, DataImpressions) its
`beam_*` requests. The fields in pipeline.PARAMETER_FIELDS become pipeline parameters.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import kfp
import kfp_server_api
import urllib3
import yaml
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx import v1 as tfx
from tfx.dsl.components.base.base_beam_component import BaseBeamComponent
from tfx.orchestration import data_types
from tfx.v1.orchestration import experimental as tfx_experimental

from components.data_impressions import DataImpressions
from pipelines import cluster_data, presets
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


class OptionError(ValueError):
    """A `kd compile` / `kd submit` option is invalid (the message names it)."""


def pipeline_name(preset: presets.Preset) -> str:
    """`kd-<preset>` in the form TFX and KFP accept ([a-z0-9][a-z0-9-]{0,127}): `kd-zero_shot` -> `kd-zero-shot`."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"kd-{preset.name}".lower()).strip("-")[:128].rstrip("-")
    if not PIPELINE_NAME_PATTERN.fullmatch(name):
        raise OptionError(f"preset name {preset.name!r} gives no valid pipeline name ({name!r})")
    return name


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


def _share_identical_definitions(spec: dict[str, Any]) -> None:
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


def _compact_json_constants(spec: dict[str, Any]) -> None:
    """Rewrites JSON-valued task parameters (TFX writes EvalConfigs indented) without whitespace.

    The executors parse them as JSON, so only the file's size changes (the seed spec's
    EvalConfigs alone take about 70 KB indented).
    """
    for task in spec["root"]["dag"]["tasks"].values():
        for parameter in task.get("inputs", {}).get("parameters", {}).values():
            constant = parameter.get("runtimeValue", {}).get("constant")
            if isinstance(constant, str) and constant.startswith(("{", "[")):
                parameter["runtimeValue"]["constant"] = json.dumps(json.loads(constant), separators=(",", ":"))


def _declare_defaults(spec: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Gives each pipeline parameter its preset value as default (TFX declares only the type)."""
    declared = spec["root"]["inputDefinitions"]["parameters"]
    if set(declared) != set(defaults):
        raise ValueError(f"compiled parameters {sorted(declared)} differ from the pipeline's {sorted(defaults)}")
    for name, default in defaults.items():
        declared[name].update(defaultValue=default, isOptional=True)


def executor_label(spec: dict[str, Any], task_name: str) -> str:
    component = spec["root"]["dag"]["tasks"][task_name]["componentRef"]["name"]
    return spec["components"][component]["executorLabel"]


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
    names = _rename_tasks(spec)
    _share_identical_definitions(spec)
    _compact_json_constants(spec)
    defaults = {n: p.default for n, p in parameters.items()}
    _declare_defaults(spec, defaults)
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


class SubmitError(RuntimeError):
    """A request to the Kubeflow Pipelines host failed (one line: the step, the HTTP status, what to do)."""


STATUS_HINTS = {
    401: "the host wants credentials: give --token, --token-file, --cookies, --iap-client-id or --sa-token-path",
    403: "the credentials are not allowed this: check the profile / --namespace they may use",
    404: "no Kubeflow Pipelines API at this path: --host must be the API endpoint (e.g. http://localhost:8080 "
         "after `kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`)",
    409: "the name exists already: choose another --version-name",
}


def _hint(status: int) -> str:
    if status in STATUS_HINTS:
        return STATUS_HINTS[status]
    if status >= 500:
        return "the server failed: see the ml-pipeline pod's log (kubectl logs -n kubeflow deploy/ml-pipeline)"
    return "see the server's message above"


def _server_message(body: Any) -> str:
    """The `message` / `error` of a KFP error body, else its start (bodies may be JSON or text)."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    text = str(body or "").strip()
    try:
        parsed = json.loads(text)
        text = str(parsed.get("message") or parsed.get("error") or text) if isinstance(parsed, dict) else text
    except json.JSONDecodeError:
        pass
    return " ".join(text.split())[:300]


@dataclasses.dataclass(frozen=True)
class Auth:
    """How `kd submit` authenticates, as kfp.Client supports it (at most one of the first four)."""

    token: str | None = None  # an existing bearer token
    token_file: str | None = None  # a file holding one (e.g. a service account token)
    iap_client_id: str | None = None  # OAuth client id of an IAP-protected endpoint (Google Cloud)
    sa_token_path: str | None = None  # a projected service account token, re-read on every request
    cookies: str | None = None  # e.g. "authservice_session=..." (Dex / oauth2-proxy login)
    ssl_ca_cert: str | None = None

    def client_arguments(self) -> dict[str, Any]:
        chosen = [name for name in ("token", "token_file", "iap_client_id", "sa_token_path") if getattr(self, name)]
        if len(chosen) > 1:
            raise OptionError(f"give one of --token, --token-file, --iap-client-id, --sa-token-path; got {chosen}")
        arguments: dict[str, Any] = {}
        if self.token:
            arguments["existing_token"] = self.token
        if self.token_file:
            path = Path(self.token_file).expanduser()
            token = path.read_text().strip() if path.is_file() else ""
            if not token:
                raise OptionError(f"--token-file {self.token_file}: no such file, or it is empty")
            arguments["existing_token"] = token
        if self.iap_client_id:
            arguments["client_id"] = self.iap_client_id
        if self.sa_token_path:
            if not Path(self.sa_token_path).is_file():
                raise OptionError(f"--sa-token-path {self.sa_token_path}: no such file")
            arguments["credentials"] = kfp.client.ServiceAccountTokenVolumeCredentials(path=self.sa_token_path)
        if self.cookies:
            arguments["cookies"] = self.cookies
        if self.ssl_ca_cert:
            arguments["ssl_ca_cert"] = self.ssl_ca_cert
        return arguments


class _OneAttemptClient(kfp.Client):
    """kfp.Client (2.5) that asks once and lets errors through.

    kfp.Client checks the host's health five times, 5 s apart, and then raises a
    TimeoutError that hides the HTTP status (401 reads as a time-out); urllib3 retries a
    refused connection. `submit` reports the first failure with its status instead.
    """

    def _load_config(self, *args: Any, **kwargs: Any) -> Any:
        config = super()._load_config(*args, **kwargs)
        config.retries = urllib3.Retry(total=1, backoff_factor=0, raise_on_status=False)
        return config

    def get_kfp_healthz(self, sleep_duration: int = 5) -> Any:
        return self._healthz_api.get_healthz()


def kfp_client(host: str, namespace: str | None, auth: Auth) -> kfp.Client:
    arguments = auth.client_arguments()
    if namespace:
        arguments["namespace"] = namespace
    return _OneAttemptClient(host=host, **arguments)


def _request(step: str, host: str, call: Callable[[], Any]) -> Any:
    """`call()`, its failure as one SubmitError line naming the step, the HTTP status and what to do."""
    try:
        return call()
    except kfp_server_api.ApiException as error:
        if not error.status:  # kfp_server_api's code for a TLS failure
            raise SubmitError(f"{step}: TLS error talking to {host} ({error.reason}): check --ssl-ca-cert") from error
        message = _server_message(error.body)
        raise SubmitError(f"{step}: HTTP {error.status} {error.reason or ''} from {host}"
                          f"{': ' + message if message else ''}; {_hint(error.status)}") from error
    except urllib3.exceptions.HTTPError as error:
        reason = getattr(error, "reason", None) or error
        raise SubmitError(f"{step}: no answer from {host} ({type(reason).__name__}): check --host, or reach the "
                          f"cluster with `kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`") from error


@dataclasses.dataclass(frozen=True)
class Submission:
    """What `submit` created on the Kubeflow Pipelines host."""

    pipeline_id: str
    version_id: str
    experiment_id: str
    run_id: str


def parse_parameters(spec: dict[str, Any], assignments: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`NAME=VALUE` strings as typed values of the package's pipeline parameters."""
    declared = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    kinds = {"NUMBER_INTEGER": int, "NUMBER_DOUBLE": float, "STRING": str}
    values = {}
    for assignment in assignments:
        name, separator, raw = assignment.partition("=")
        if not separator or name not in declared:
            raise OptionError(f"--param {assignment!r}: expected NAME=VALUE with NAME one of {sorted(declared)}")
        kind = kinds[declared[name]["parameterType"]]
        try:
            values[name] = kind(raw)
        except ValueError:
            raise OptionError(f"--param {name}: expected {kind.__name__}, got {raw!r}") from None
    return values


def _with_caching(spec_text: str, enable_caching: bool) -> str:
    """The package with every task's caching set: kfp.Client 2.5 drops `enable_caching` for an uploaded version."""
    documents = list(yaml.safe_load_all(spec_text))
    for task in documents[0]["root"]["dag"]["tasks"].values():
        task["cachingOptions"] = {"enableCache": enable_caching}
    return yaml.safe_dump_all(documents, sort_keys=True)


def submit(package: str | Path, host: str, experiment: str, run_name: str, version_name: str,
           namespace: str | None = None, pipeline_root: str | None = None, enable_caching: bool | None = None,
           parameters: dict[str, Any] | None = None, auth: Auth = Auth(),
           client_factory: Callable[[str, str | None, Auth], Any] | None = None) -> Submission:
    """Uploads a compiled pipeline (a new pipeline, else a new version of it) and starts a run of that version.

    The pipeline is named by the package (`kd-<preset>`); in multi-user Kubeflow it is looked
    up and uploaded in `namespace`. `pipeline_root` None: the root given at compile time;
    `enable_caching` None: as compiled, else written into every task of the uploaded version.
    `parameters`: pipeline parameter values of this run. Failures raise SubmitError.
    `client_factory(host, namespace, auth)` builds the client (default kfp_client, looked up
    at call time so tests can replace it).
    """
    package = Path(package)
    if not package.is_file():
        raise OptionError(f"no compiled pipeline at {package} (run `kd compile` first)")
    text = package.read_text()
    spec = next(yaml.safe_load_all(text))
    name = spec["pipelineInfo"]["name"]
    client = _request("connecting", host, lambda: (client_factory or kfp_client)(host, namespace, auth))
    with tempfile.TemporaryDirectory(prefix="kd-submit-") as folder:
        upload = package
        if enable_caching is not None:
            upload = Path(folder, package.name)
            upload.write_text(_with_caching(text, enable_caching))
        name_filter = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})
        found = _request("looking up the pipeline", host,
                         lambda: client.list_pipelines(filter=name_filter, namespace=namespace)).pipelines or []
        if len(found) > 1:
            raise SubmitError(f"{len(found)} pipelines are named {name} on {host}; delete all but one")
        if not found:
            pipeline_id = _request("uploading the pipeline", host, lambda: client.upload_pipeline(
                str(upload), pipeline_name=name, description=f"KD benchmark ({name})",
                namespace=namespace)).pipeline_id
            # A new pipeline holds exactly the version just uploaded.
            version_id = _request("reading the pipeline's version", host, lambda: client.list_pipeline_versions(
                pipeline_id)).pipeline_versions[0].pipeline_version_id
        else:
            pipeline_id = found[0].pipeline_id
            version_id = _request("uploading a pipeline version", host, lambda: client.upload_pipeline_version(
                str(upload), pipeline_version_name=version_name, pipeline_id=pipeline_id)).pipeline_version_id
    experiment_id = _request("creating the experiment", host,
                             lambda: client.create_experiment(name=experiment, namespace=namespace)).experiment_id
    run = _request("starting the run", host, lambda: client.run_pipeline(
        experiment_id=experiment_id, job_name=run_name, pipeline_id=pipeline_id, version_id=version_id,
        pipeline_root=pipeline_root, params=parameters or {}))
    return Submission(pipeline_id=pipeline_id, version_id=version_id, experiment_id=experiment_id, run_id=run.run_id)


def timestamped(name: str) -> str:
    """`name` with the UTC time, for run and version names that must not repeat."""
    return f"{name} {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S}"
