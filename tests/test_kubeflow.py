"""Kubeflow / Vertex AI deployment, offline: the compiled KFP v2 definition, the submit
command against a fake client, the image build files, and the Trainers' device strategy."""

import inspect
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import kfp
import pytest
import tensorflow as tf
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from conftest import REPO_ROOT
from kd_trainer import devices
from pipelines import cli, kubeflow_runner, presets
from pipelines.pipeline import RUN_FN, evaluator_id, trainer_id

IMAGE = "registry.example.com/team/kd-benchmark:0123abcd"
ROOT = "gs://kd-test-bucket/pipelines"
REVISION = "rev-under-test"
TFX_ENTRYPOINT = ["python", "-m", "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"]


def task(component_id: str) -> str:
    return kubeflow_runner.kubernetes_name(component_id)


def compile_to(tmp_path: Path, preset_name: str, overrides=(), name="pipeline.yaml") -> tuple[Path, list[dict]]:
    path = kubeflow_runner.compile_pipeline(presets.resolve(preset_name, list(overrides)), ROOT, IMAGE,
                                            tmp_path / name, REVISION)
    return path, list(yaml.safe_load_all(path.read_text()))


@pytest.fixture(scope="module")
def seed(tmp_path_factory):
    path, documents = compile_to(tmp_path_factory.mktemp("kfp"), "seed")
    return types.SimpleNamespace(path=path, text=path.read_text(), documents=documents, spec=documents[0],
                                 tasks=documents[0]["root"]["dag"]["tasks"], preset=presets.resolve("seed"))


def executor(spec: dict, task_name: str) -> dict:
    component = spec["components"][spec["root"]["dag"]["tasks"][task_name]["componentRef"]["name"]]
    return spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]


def upstream(tasks: dict, name: str) -> set[str]:
    """Every task `name` waits for, directly or not."""
    seen, stack = set(), list(tasks[name].get("dependentTasks", []))
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(tasks[current].get("dependentTasks", []))
    return seen


def test_seed_definition_is_a_kfp_v2_pipeline_spec_the_sdk_loads(seed):
    assert len(seed.documents) == 1  # no node selector: a single document, as Vertex AI reads it
    spec = json_format.ParseDict(seed.spec, pipeline_spec_pb2.PipelineSpec())  # unknown fields fail
    assert spec.pipeline_info.name == "kd-seed" and spec.schema_version == "2.1.0"
    assert spec.default_pipeline_root == ROOT
    loaded = kfp.components.load_component_from_file(str(seed.path))
    assert loaded.name == "kd-seed"
    assert set(loaded.pipeline_spec.root.dag.tasks) == set(seed.tasks)


def test_dag_has_every_task_in_dependency_order(seed):
    methods, trials = seed.preset.methods, range(1, seed.preset.trials + 1)
    students = {(m, k): task(trainer_id(m, k)) for m in methods for k in trials}
    evaluators = {(m, k): task(evaluator_id(m, k)) for m in methods for k in trials}
    baselines = {k: task(trainer_id("baseline", k)) for k in trials}
    teacher, example_gen = task(trainer_id("teacher")), "cifarexamplegen"
    assert students["kd_svd", 3] == "trainer-kd-svd-trial3" and teacher == "trainer-teacher"
    expected = {example_gen, teacher, task(evaluator_id("teacher")), "leaderboard",
                *students.values(), *evaluators.values(), *baselines.values()}
    assert set(seed.tasks) == expected and len(expected) == 3 + 5 * (1 + 2 * 9) + 1
    for (method, trial), student in students.items():
        assert {teacher, example_gen} <= set(seed.tasks[student]["dependentTasks"])
        inputs = seed.tasks[student]["inputs"]["artifacts"]
        assert inputs["base_model"]["taskOutputArtifact"] == {"producerTask": teacher, "outputArtifactKey": "model"}
        evaluator = seed.tasks[evaluators[method, trial]]
        assert {student, baselines[trial]} <= set(evaluator["dependentTasks"])
        assert evaluator["inputs"]["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == student
        assert evaluator["inputs"]["artifacts"]["baseline_model"]["taskOutputArtifact"]["producerTask"] \
            == baselines[trial]
    assert upstream(seed.tasks, "leaderboard") == expected - {"leaderboard"}
    for name, spec in seed.tasks.items():  # Evaluators run on models that trained to the end
        condition = spec.get("triggerPolicy", {}).get("condition", "")
        assert bool(condition) == name.startswith("evaluator-"), name
        read = set(re.findall(r"inputs\.artifacts\['([^']+)'\]\.artifacts\[0\]\.metadata\['diverged'\]", condition))
        if condition:  # inputs the task declares: TFX's own key for them would not resolve
            assert read == ({"model"} if name == "evaluator-teacher" else {"model", "baseline_model"}), condition
    assert not any("leaderboard" in t.get("dependentTasks", []) for t in seed.tasks.values())
    for name, spec in seed.tasks.items():  # references resolve to tasks of this DAG
        assert spec["taskInfo"]["name"] == name and set(spec.get("dependentTasks", [])) <= expected
        assert spec["cachingOptions"]["enableCache"] is True


def test_image_arguments_and_gpu_requests(seed):
    for name in seed.tasks:
        container = executor(seed.spec, name)
        assert container["image"] == IMAGE and container["command"] == TFX_ENTRYPOINT
        assert container["args"][-2:] == list(kubeflow_runner.DEFAULT_BEAM_ARGS)
        if name.startswith("trainer-"):
            assert container["resources"] == {"accelerator": {"type": "nvidia.com/gpu", "count": "1"}}, name
        else:
            assert "resources" not in container, name
    parameters = seed.tasks["trainer-fitnet-trial2"]["inputs"]["parameters"]
    assert parameters["run_fn"]["runtimeValue"]["constant"] == RUN_FN
    config = json.loads(parameters["custom_config"]["runtimeValue"]["constant"])
    assert (config["role"], config["method"], config["trial"], config["model"], config["teacher_model"],
            config["epochs"]) == ("student", "fitnet", 2, "seed_resnet8", "seed_resnet32", 100)
    assert len(config["code_fingerprint"]) == 16 and "code_revision" not in config
    executors = seed.spec["deploymentSpec"]["executors"].values()
    assert all({"name": "KD_CODE_REVISION", "value": REVISION} in e["container"]["env"]
               for e in executors if "container" in e)
    eval_config = seed.tasks["evaluator-at-trial1"]["inputs"]["parameters"]["eval_config"]["runtimeValue"]
    assert '"module": "kd_trainer.metrics"' in eval_config["constant"]


def test_no_path_of_this_machine_leaks(seed, tmp_path):
    local = {str(REPO_ROOT), str(REPO_ROOT.parent), os.getcwd(), str(Path.home()), str(tmp_path.parent),
             "/work/", "/tmp/", "/home/", "file://"}
    leaks = [p for p in local if len(p) > 1 and p in seed.text]
    assert not leaks, leaks


def test_cpu_only_preset_requests_nothing_and_node_selectors_go_to_the_platform_spec(tmp_path):
    _, (smoke,) = compile_to(tmp_path, "smoke", name="cpu.yaml")
    assert all("resources" not in executor(smoke, name) for name in smoke["root"]["dag"]["tasks"])

    selector = {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
    path, documents = compile_to(tmp_path, "smoke", ["resources.teacher_gpus=2", "resources.cpu_limit=4",
                                                     "resources.memory_limit_gb=15",
                                                     f"resources.node_selector={json.dumps(selector)}"])
    spec, platform = documents
    assert executor(spec, "trainer-teacher")["resources"] == {
        "cpuLimit": 4.0, "memoryLimit": 15.0, "accelerator": {"type": "nvidia.com/gpu", "count": "2"}}
    assert executor(spec, "trainer-at-trial1")["resources"] == {"cpuLimit": 4.0, "memoryLimit": 15.0}
    assert "resources" not in executor(spec, "evaluator-at-trial1")
    trainers = {n for n in spec["root"]["dag"]["tasks"] if n.startswith("trainer-")}
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert executors == {f"exec-{n}": {"nodeSelector": {"labels": selector}} for n in trainers}
    json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
    assert kfp.components.load_component_from_file(str(path)).platform_spec.platforms["kubernetes"]
    assert "&id" not in path.read_text()  # no YAML aliases


def test_resources_are_per_preset_and_validated():
    assert presets.resolve("seed").resources == presets.ResourcesConfig(teacher_gpus=1, student_gpus=1)
    assert presets.resolve("quick").resources == presets.ResourcesConfig()  # CPU only
    for overrides, message in [(["resources.student_gpus=-1"], r"student_gpus must be an integer in \[0, 16\]"),
                               (["resources.teacher_gpus=1.5"], "'resources.teacher_gpus': expected an integer"),
                               (["resources.accelerator_type="], "accelerator_type must be set when a Trainer"),
                               (['resources.node_selector={"pool": 1}'], "node_selector must map label names"),
                               (["resources.cpu_limit=-1"], r"cpu_limit must be >= 0"),
                               (["resources.gpus=1"], r"unknown key 'resources.gpus'.*valid: \['accelerator_type'")]:
        with pytest.raises(presets.PresetError, match=message):
            presets.resolve("seed", overrides)
    assert presets.resolve("quick", ["resources.accelerator_type="]).resources.accelerator_type == ""  # no GPUs


@pytest.mark.parametrize("root, image, option", [("/data/kd", IMAGE, "--pipeline-root"),
                                                  ("outputs/kd", IMAGE, "--pipeline-root"),
                                                  ("file:///data/kd", IMAGE, "--pipeline-root"),
                                                  (ROOT, "", "--image"), (ROOT, "kd benchmark:1", "--image")])
def test_invalid_options_are_named(tmp_path, root, image, option):
    with pytest.raises(kubeflow_runner.OptionError, match=option):
        kubeflow_runner.compile_pipeline(presets.resolve("smoke"), root, image, tmp_path / "x.yaml", REVISION)
    assert not (tmp_path / "x.yaml").exists()


def test_kd_compile_applies_preset_overrides(tmp_path, capsys):
    output = tmp_path / "out" / "kd-smoke.yaml"
    code = cli.main(["compile", "--target", "kubeflow", "--preset", "smoke", "--pipeline-root", ROOT,
                     "--image", IMAGE, "--output", str(output), "--set", "methods=soft_logits,at",
                     "--set", "resources.student_gpus=1", "--beam-arg=--direct_num_workers=2", "--no-cache"])
    assert code == 0 and str(output) in capsys.readouterr().out
    spec = yaml.safe_load(output.read_text())
    tasks = spec["root"]["dag"]["tasks"]
    assert {n for n in tasks if n.startswith("evaluator-")} == {"evaluator-teacher", "evaluator-soft-logits-trial1",
                                                                 "evaluator-at-trial1"}
    assert not any(t.get("cachingOptions", {}).get("enableCache") for t in tasks.values())
    assert executor(spec, "trainer-at-trial1")["resources"]["accelerator"]["count"] == "1"
    assert "resources" not in executor(spec, "trainer-teacher")
    assert executor(spec, "leaderboard")["args"][-1] == "--direct_num_workers=2"
    assert cli.main(["compile", "--preset", "smoke", "--pipeline-root", "/local", "--image", IMAGE,
                     "--output", str(output)]) == 2
    assert "--pipeline-root" in capsys.readouterr().err


class FakeClient:
    """Records kfp.Client calls; `existing` is the id of an already uploaded pipeline."""

    def __init__(self, existing: str | None = None):
        self.existing, self.calls = existing, []

    def _record(self, method, *args, **kwargs):
        self.calls.append((method, args, kwargs))

    def get_pipeline_id(self, name):
        self._record("get_pipeline_id", name)
        return self.existing

    def upload_pipeline(self, pipeline_package_path, pipeline_name=None, description=None):
        self._record("upload_pipeline", pipeline_package_path, pipeline_name=pipeline_name, description=description)
        return types.SimpleNamespace(pipeline_id="p-new")

    def list_pipeline_versions(self, pipeline_id):
        self._record("list_pipeline_versions", pipeline_id)
        return types.SimpleNamespace(pipeline_versions=[types.SimpleNamespace(pipeline_version_id="v-first")])

    def upload_pipeline_version(self, pipeline_package_path, pipeline_version_name, pipeline_id=None):
        self._record("upload_pipeline_version", pipeline_package_path, pipeline_version_name=pipeline_version_name,
                     pipeline_id=pipeline_id)
        return types.SimpleNamespace(pipeline_version_id="v-next")

    def create_experiment(self, name, namespace=None):
        self._record("create_experiment", name=name, namespace=namespace)
        return types.SimpleNamespace(experiment_id="e-1")

    def run_pipeline(self, **kwargs):
        self._record("run_pipeline", **kwargs)
        return types.SimpleNamespace(run_id="r-1")


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return compile_to(tmp_path_factory.mktemp("package"), "smoke", ["methods=soft_logits"], "kd-smoke.yaml")[0]


def assert_real_client_accepts(calls):
    """Every recorded call binds to kfp.Client's own signature (the fake cannot drift from it)."""
    for name, args, kwargs in calls:
        inspect.signature(getattr(kfp.Client, name)).bind(None, *args, **kwargs)


def test_submit_uploads_a_new_pipeline_and_runs_its_version(package):
    clients = []

    def factory(host, namespace):
        clients.append((host, namespace, FakeClient()))
        return clients[-1][2]

    result = kubeflow_runner.submit(package, "https://kfp.example.com", experiment="kd", run_name="run 1",
                                    version_name="unused", namespace="team-a", client_factory=factory)
    (host, namespace, client), = clients
    assert (host, namespace) == ("https://kfp.example.com", "team-a")
    assert client.calls == [
        ("get_pipeline_id", ("kd-smoke",), {}),
        ("upload_pipeline", (str(package),), {"pipeline_name": "kd-smoke", "description": "KD benchmark (kd-smoke)"}),
        ("list_pipeline_versions", ("p-new",), {}),
        ("create_experiment", (), {"name": "kd", "namespace": "team-a"}),
        ("run_pipeline", (), {"experiment_id": "e-1", "job_name": "run 1", "pipeline_id": "p-new",
                              "version_id": "v-first", "pipeline_root": None, "enable_caching": None}),
    ]
    assert result == kubeflow_runner.Submission("p-new", "v-first", "e-1", "r-1")
    assert_real_client_accepts(client.calls)


def test_kd_submit_adds_a_version_to_an_existing_pipeline(package, monkeypatch, capsys):
    client = FakeClient(existing="p-old")
    monkeypatch.setattr(kubeflow_runner, "kfp_client", lambda host, namespace: client)
    code = cli.main(["submit", str(package), "--host", "http://localhost:8080", "--version-name", "v2",
                     "--pipeline-root", "gs://other/root", "--no-cache"])
    assert code == 0 and "run r-1 started" in capsys.readouterr().out
    names = [name for name, _, _ in client.calls]
    assert names == ["get_pipeline_id", "upload_pipeline_version", "create_experiment", "run_pipeline"]
    assert client.calls[1][2] == {"pipeline_version_name": "v2", "pipeline_id": "p-old"}
    assert client.calls[2][2] == {"name": "kd-benchmark", "namespace": None}
    run = client.calls[3][2]
    assert (run["pipeline_id"], run["version_id"], run["pipeline_root"], run["enable_caching"]) == \
        ("p-old", "v-next", "gs://other/root", False)
    assert run["job_name"].startswith("kd-smoke ")
    assert_real_client_accepts(client.calls)


def test_submit_needs_a_compiled_package(tmp_path):
    with pytest.raises(kubeflow_runner.OptionError, match="kd compile"):
        kubeflow_runner.submit(tmp_path / "missing.yaml", "http://h", "e", "r", "v",
                               client_factory=lambda *_: pytest.fail("no client without a package"))


def test_skaffold_builds_the_dockerfile_image():
    config = yaml.safe_load((REPO_ROOT / "skaffold.yaml").read_text())
    assert config["apiVersion"].startswith("skaffold/v4") and config["kind"] == "Config"
    (artifact,) = config["build"]["artifacts"]
    assert artifact["image"] == "kd-benchmark"  # no registry: skaffold's --default-repo supplies it
    assert artifact["context"] == "." and artifact["docker"]["dockerfile"] == "Dockerfile"
    assert (REPO_ROOT / artifact["context"] / artifact["docker"]["dockerfile"]).is_file()
    assert "gitCommit" in config["build"]["tagPolicy"]
    assert config["build"]["local"]["push"] is True


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (REPO_ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_installs_the_project_from_the_lock_file():
    instructions = dockerfile_instructions()
    assert ("ARG", "BASE_IMAGE=gcr.io/tfx-oss-public/tfx:1.16.0") in instructions
    assert ("FROM", "${BASE_IMAGE}") in instructions
    env = " ".join(value for kind, value in instructions if kind == "ENV")
    assert "TF_USE_LEGACY_KERAS=1" in env.split()
    runs = [value for kind, value in instructions if kind == "RUN"]
    assert any("pip install --constraint requirements/lock.txt ." in run for run in runs)
    copied = {value.split()[0] for kind, value in instructions if kind == "COPY"} | {
        part for kind, value in instructions if kind == "COPY" for part in value.split()[:-1]}
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    for package in ("components", "kd_trainer", "pipelines"):
        assert f'"{package}*"' in pyproject and package in copied
    assert {"requirements/lock.txt", "pyproject.toml", "README.md"} <= copied
    ignored = {line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert not ignored & copied and {".venv", "outputs", ".git"} <= ignored


@pytest.mark.parametrize("gpus, kind", [([], devices.DEFAULT), (["/device:GPU:0"], devices.ONE_DEVICE),
                                        (["/device:GPU:0", "/device:GPU:1"], devices.MIRRORED)])
def test_strategy_follows_the_visible_gpus(gpus, kind):
    assert devices.strategy_kind(gpus) == kind
    strategy = devices.distribution_strategy(gpus)
    expected = {devices.DEFAULT: type(tf.distribute.get_strategy()),
                devices.ONE_DEVICE: tf.distribute.OneDeviceStrategy,
                devices.MIRRORED: tf.distribute.MirroredStrategy}[kind]
    assert type(strategy) is expected and strategy.num_replicas_in_sync == max(1, len(gpus))
    assert devices.distribution_strategy(tuple(gpus)) is strategy  # one per device set and process
    assert devices.strategy_name(gpus).startswith(kind)


def test_decorated_function_runs_in_the_strategy_scope(monkeypatch):
    @devices.in_distribution_strategy
    def scoped():
        return tf.distribute.get_strategy(), tf.Variable(1.0)

    monkeypatch.setattr(devices, "visible_gpus", lambda: ["/device:CPU:0"])  # stands in for one GPU
    strategy, variable = scoped()
    assert isinstance(strategy, tf.distribute.OneDeviceStrategy) and variable.device.endswith("CPU:0")
    monkeypatch.setattr(devices, "visible_gpus", lambda: [])
    strategy, _ = scoped()
    assert not tf.distribute.has_strategy() and strategy is tf.distribute.get_strategy()
    assert devices.strategy_name() == "default (no GPU)"


MIRRORED_STEP = """
import numpy as np
import tensorflow as tf
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)
import tf_keras as keras
from kd_trainer import devices
from kd_trainer.distiller import Distiller

def step(strategy):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((4, 4, 3))
        student = keras.Model(inputs, {"logits": keras.layers.Dense(10)(keras.layers.Flatten()(inputs))})
        distiller = Distiller(student)
        distiller.compile(optimizer=keras.optimizers.SGD(0.5))
    images = np.random.default_rng(1).normal(size=(8, 4, 4, 3)).astype("float32")
    batches = tf.data.Dataset.from_tensor_slices((images, np.arange(8) % 10)).batch(8)
    distiller.fit(batches, epochs=1, verbose=0)
    return student.get_weights()

cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
mirrored = devices.distribution_strategy(cpus)
assert mirrored.num_replicas_in_sync == 2, mirrored
single, split = step(devices.distribution_strategy([])), step(mirrored)
print("max difference", max(float(np.abs(a - b).max()) for a, b in zip(single, split)))
"""


def test_a_mirrored_step_equals_the_single_device_step():
    # Two logical CPUs stand in for two GPUs; they must be set up before TensorFlow starts,
    # hence a fresh process. Without the Distiller's 1/replicas share the update doubles.
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", MIRRORED_STEP], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    difference = float(re.search(r"max difference (\S+)", result.stdout).group(1))
    assert difference < 1e-6
