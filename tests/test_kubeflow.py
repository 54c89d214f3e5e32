"""Kubeflow / Vertex AI deployment, offline: the compiled KFP v2 definition, the image build
files, and the Trainers' device strategy. `kd submit` against a fake KFP server:
tests/test_kubeflow_submit.py; the compiled tasks executed: tests/test_kubeflow_executed.py."""

import dataclasses
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
from pipelines import cli, kubeflow_ir, kubeflow_runner, presets
from pipelines.kubeflow_submit import OptionError
from pipelines.pipeline import PARAMETER_FIELDS, RUN_FN, evaluator_id, preset_value, trainer_id
from pipelines.revision import PROJECT_PACKAGES

IMAGE = "registry.example.com/team/kd-benchmark:0123abcd"
ROOT = "gs://kd-test-bucket/pipelines"
REVISION = "rev-under-test"
DATA_DIR = "gs://kd-test-bucket/cifar-100"
TFX_ENTRYPOINT = ["python", "-m", "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"]
BEAM_TASKS = ("cifarexamplegen", "evaluator-", "dataimpressions")


def task(component_id: str) -> str:
    return kubeflow_ir.kubernetes_name(component_id)


def compile_to(tmp_path: Path, preset_name: str, overrides=(), name="pipeline.yaml") -> tuple[Path, list[dict]]:
    preset = presets.resolve(preset_name, [f"data.data_dir={DATA_DIR}", *overrides])
    path = kubeflow_runner.compile_pipeline(preset, ROOT, IMAGE, tmp_path / name, REVISION).path
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


# The image is the Beam workers' environment: TFX then does not build an sdist of itself in each pod.
PIPELINE_BEAM_ARGS = [*kubeflow_runner.DEFAULT_BEAM_ARGS, f"--sdk_container_image={IMAGE}"]
BEAM_RESOURCES = {"cpuLimit": 2.0, "cpuRequest": 2.0, "memoryLimit": 8.0, "memoryRequest": 8.0}


def test_image_arguments_and_gpu_requests(seed):
    for name in seed.tasks:
        container = executor(seed.spec, name)
        assert container["image"] == IMAGE and container["command"] == TFX_ENTRYPOINT
        if name.startswith("trainer-"):
            assert container["resources"] == {"accelerator": {"type": "nvidia.com/gpu", "count": "1"}}, name
        elif name.startswith(BEAM_TASKS):  # Beam's workers: one per requested core, not per node core
            assert container["resources"] == BEAM_RESOURCES, name
            assert container["args"][-3:] == [*PIPELINE_BEAM_ARGS, "--direct_num_workers=2"], name
        else:
            assert "resources" not in container, name
        if not name.startswith(BEAM_TASKS):
            assert container["args"][-2:] == PIPELINE_BEAM_ARGS, name
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
    assert json.loads(eval_config["constant"])["metrics_specs"][0]["metrics"][-1]["module"] == "kd_trainer.metrics"


def test_no_path_of_this_machine_leaks(seed, tmp_path):
    local = {str(REPO_ROOT), str(REPO_ROOT.parent), os.getcwd(), str(Path.home()), str(tmp_path.parent),
             "/work/", "/tmp/", "/home/", "file://"}
    leaks = [p for p in local if len(p) > 1 and p in seed.text]
    assert not leaks, leaks


def test_cpu_only_preset_requests_nothing_and_node_selectors_go_to_the_platform_spec(tmp_path):
    _, (smoke,) = compile_to(tmp_path, "smoke", name="cpu.yaml")
    assert all("resources" not in executor(smoke, name) for name in smoke["root"]["dag"]["tasks"]
               if not name.startswith(BEAM_TASKS))

    selector = {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
    path, documents = compile_to(tmp_path, "smoke", ["resources.teacher_gpus=2", "resources.cpu_limit=4",
                                                     "resources.memory_limit_gb=15",
                                                     f"resources.node_selector={json.dumps(selector)}"])
    spec, platform = documents
    assert executor(spec, "trainer-teacher")["resources"] == {
        "cpuLimit": 4.0, "memoryLimit": 15.0, "accelerator": {"type": "nvidia.com/gpu", "count": "2"}}
    assert executor(spec, "trainer-at-trial1")["resources"] == {"cpuLimit": 4.0, "memoryLimit": 15.0}
    assert executor(spec, "evaluator-at-trial1")["resources"] == BEAM_RESOURCES
    trainers = {n for n in spec["root"]["dag"]["tasks"] if n.startswith("trainer-")}
    labels = {kubeflow_ir.executor_label(spec, n) for n in trainers}
    assert len(labels) == 3  # the teacher's (2 GPUs), the baseline's (no base_model), the students' shared one
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert executors == {label: {"nodeSelector": {"labels": selector}} for label in labels}
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
                               (["resources.cpu_limit=-1"], r"cpu_limit must be a finite number in \[0, 1024\]"),
                               (["resources.gpus=1"], r"unknown key 'resources.gpus'.*valid: \['accelerator_type'")]:
        with pytest.raises(presets.PresetError, match=message):
            presets.resolve("seed", overrides)
    assert presets.resolve("quick", ["resources.accelerator_type="]).resources.accelerator_type == ""  # no GPUs


@pytest.mark.parametrize("root, image, option", [("/data/kd", IMAGE, "--pipeline-root"),
                                                  ("outputs/kd", IMAGE, "--pipeline-root"),
                                                  ("file:///data/kd", IMAGE, "--pipeline-root"),
                                                  (ROOT, "", "--image"), (ROOT, "kd benchmark:1", "--image")])
def test_invalid_options_are_named(tmp_path, root, image, option):
    with pytest.raises(OptionError, match=option):
        kubeflow_runner.compile_pipeline(presets.resolve("smoke"), root, image, tmp_path / "x.yaml", REVISION)
    assert not (tmp_path / "x.yaml").exists()


def test_kd_compile_applies_preset_overrides(tmp_path, capsys):
    output = tmp_path / "out" / "kd-smoke.yaml"
    code = cli.main(["compile", "--target", "kubeflow", "--preset", "smoke", "--pipeline-root", ROOT,
                     "--image", IMAGE, "--output", str(output), "--set", "methods=soft_logits,at",
                     "--set", f"data.data_dir={DATA_DIR}",
                     "--set", "resources.student_gpus=1", "--beam-arg=--direct_num_workers=2", "--no-cache"])
    assert code == 0 and str(output) in capsys.readouterr().out
    spec = yaml.safe_load(output.read_text())
    tasks = spec["root"]["dag"]["tasks"]
    assert {n for n in tasks if n.startswith("evaluator-")} == {"evaluator-teacher", "evaluator-soft-logits-trial1",
                                                                 "evaluator-at-trial1"}
    assert not any(t.get("cachingOptions", {}).get("enableCache") for t in tasks.values())
    assert executor(spec, "trainer-at-trial1")["resources"]["accelerator"]["count"] == "1"
    assert "resources" not in executor(spec, "trainer-teacher")
    assert executor(spec, "leaderboard")["args"][-2:] == ["--direct_num_workers=2", f"--sdk_container_image={IMAGE}"]
    assert executor(spec, "cifarexamplegen")["args"][-2:] == executor(spec, "leaderboard")["args"][-2:]  # not added
    assert cli.main(["compile", "--preset", "smoke", "--pipeline-root", "/local", "--image", IMAGE,
                     "--output", str(output)]) == 2
    assert "--pipeline-root" in capsys.readouterr().err


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
    # Runtime dependencies only: the lock file (which pins pytest and jupyter too) is a constraint,
    # never a requirement list.
    assert not any("--requirement" in run or " -r " in run for run in runs)
    assert "pytest" in (REPO_ROOT / "requirements/lock.txt").read_text()
    # The import check runs outside the source tree and proves the installed package loads.
    check = next(i for i, (kind, value) in enumerate(instructions) if kind == "RUN" and "import kd_trainer" in value)
    assert [value for kind, value in instructions[:check] if kind == "WORKDIR"][-1] == "/"
    assert "'/site-packages/' in kd_trainer.__file__" in instructions[check][1]
    assert "components.evaluator" in instructions[check][1]
    copied = {value.split()[0] for kind, value in instructions if kind == "COPY"} | {
        part for kind, value in instructions if kind == "COPY" for part in value.split()[:-1]}
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    for package in PROJECT_PACKAGES:
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


@pytest.mark.parametrize("preset_name", [name for name in presets.PRESETS if name != "seed"])  # seed: fixture
def test_every_preset_compiles_to_a_valid_pipeline_name(tmp_path, preset_name):
    path, (spec,) = compile_to(tmp_path, preset_name)
    name = spec["pipelineInfo"]["name"]
    assert kubeflow_runner.PIPELINE_NAME_PATTERN.fullmatch(name) and name == f"kd-{preset_name.replace('_', '-')}"
    assert kfp.components.load_component_from_file(str(path)).name == name
    json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())


def test_pipeline_names_are_sanitised():
    renamed = dataclasses.replace(presets.resolve("smoke"), name="My_Preset.v2")
    assert kubeflow_runner.pipeline_name(renamed) == "kd-my-preset-v2"
    assert len(kubeflow_runner.pipeline_name(dataclasses.replace(renamed, name="x" * 300))) == 128


def test_seed_spec_shares_definitions(seed):
    # 99 tasks, a handful of distinct components/executors (was one per task: 576 KB). With each
    # component's code fingerprint and the seed-fidelity fields it is about 264 KiB: over the 256 KiB
    # of KFP backends before 2.3, which `kd compile` says (docs/kubeflow.md, minimum versions).
    assert len(seed.tasks) == 99 and len(seed.spec["components"]) <= 8
    assert set(seed.spec["components"]) == {t["componentRef"]["name"] for t in seed.tasks.values()}
    assert set(seed.spec["deploymentSpec"]["executors"]) == {c["executorLabel"] for c in seed.spec["components"].values()}
    assert len(seed.text.encode()) < 300_000


def test_pipeline_parameters_default_to_the_preset(seed):
    declared = seed.spec["root"]["inputDefinitions"]["parameters"]
    preset = presets.resolve("seed", [f"data.data_dir={DATA_DIR}"])
    assert set(declared) == set(PARAMETER_FIELDS)
    kinds = {int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE", str: "STRING"}
    for name, field in PARAMETER_FIELDS.items():
        default = preset_value(preset, field)
        assert declared[name] == {"parameterType": kinds[type(default)], "defaultValue": default,
                                  "isOptional": True}, name
    assert declared["data_dir"]["defaultValue"] == DATA_DIR and declared["student_epochs"]["defaultValue"] == 100

    def bound(task_name):
        return {name: value["componentInputParameter"]
                for name, value in seed.tasks[task_name]["inputs"]["parameters"].items()
                if "componentInputParameter" in value}

    assert bound("cifarexamplegen") == {"data_dir": "data_dir"}
    assert bound("trainer-teacher") == {"epochs": "teacher_epochs", "learning_rate": "teacher_learning_rate",
                                        "batch_size": "teacher_batch_size"}
    for name in ("trainer-baseline-trial1", "trainer-rkd-trial5"):
        assert bound(name) == {"epochs": "student_epochs", "learning_rate": "student_learning_rate",
                               "batch_size": "student_batch_size"}
    assert bound("evaluator-at-trial3") == {"blessing_margin": "blessing_margin"}
    assert bound("evaluator-teacher") == {} and bound("leaderboard") == {}


def test_a_trainer_parameter_replaces_the_preset_value_in_its_config():
    from components import trainer
    config = presets.resolve("smoke").trainer_config("student", method="at").to_dict()
    properties = {"custom_config": json.dumps(config), "epochs": 7, "learning_rate": 0.05, "batch_size": None}
    applied = json.loads(trainer.apply_training_overrides(properties)["custom_config"])
    assert applied == {**config, "epochs": 7, "learning_rate": 0.05}
    assert trainer.apply_training_overrides({"custom_config": "{}"}) == {"custom_config": "{}"}
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['momentum'\]"):
        trainer.KDTrainer(training_overrides={"momentum": 0.5}, run_fn=RUN_FN, examples=None)


def test_the_blessing_margin_parameter_replaces_the_change_threshold():
    from tfx.utils import proto_utils

    from components import evaluator
    from pipelines.pipeline import eval_config
    config = proto_utils.proto_to_json(eval_config(0.0))  # as TFX stores it
    applied = evaluator.apply_blessing_margin({"eval_config": config, "blessing_margin": 0.02})
    parsed = json.loads(applied["eval_config"])
    thresholds = [t["threshold"]["change_threshold"]["absolute"] for m in parsed["metrics_specs"][0]["metrics"]
                  for t in m.get("per_slice_thresholds", [])]
    assert thresholds == [-0.02]
    with pytest.raises(ValueError, match=r"blessing_margin must be in \[0, 1\)"):
        evaluator.apply_blessing_margin({"eval_config": config, "blessing_margin": 1.5})
    with pytest.raises(ValueError, match="no change threshold"):
        evaluator.apply_blessing_margin({"eval_config": proto_utils.proto_to_json(eval_config(None)),
                                         "blessing_margin": 0.1})


@pytest.mark.parametrize("data_dir, allow, message", [
    ("", False, r"data\.data_dir is empty.*kd data upload gs://BUCKET/cifar-100.*--allow-download"),
    ("/work/shared/data", True, r"data\.data_dir='/work/shared/data' is a path on this machine.*kd data upload"),
    ("file:///data/cifar", True, "is a path on this machine")])
def test_compile_refuses_data_pods_cannot_read(tmp_path, data_dir, allow, message):
    preset = presets.resolve("smoke", [f"data.data_dir={data_dir}"])
    with pytest.raises(OptionError, match=message):
        kubeflow_runner.compile_pipeline(preset, ROOT, IMAGE, tmp_path / "x.yaml", REVISION, allow_download=allow)
    assert not (tmp_path / "x.yaml").exists()


def test_downloads_need_both_the_option_and_the_preset(tmp_path, capsys):
    common = ["compile", "--preset", "smoke", "--pipeline-root", ROOT, "--image", IMAGE,
              "--output", str(tmp_path / "x.yaml"), "--set", "methods=at"]
    assert cli.main(common) == 2 and "--allow-download" in capsys.readouterr().err
    assert cli.main([*common, "--allow-download", "--set", "data.allow_download=false"]) == 2
    assert cli.main([*common, "--allow-download"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"written to .*x\.yaml \(\d+ KiB\)", printed) and "data_dir=''" in printed


def test_object_storage_data_dir_reaches_the_example_gen_unchanged(tmp_path):
    for uri in ("gs://bucket/cifar-100", "s3://bucket/data/cifar", "hdfs://namenode:8020/cifar"):
        _, (spec,) = compile_to(tmp_path, "smoke", [f"data.data_dir={uri}", "methods=at"])
        assert spec["root"]["inputDefinitions"]["parameters"]["data_dir"]["defaultValue"] == uri


def test_compile_warns_over_the_annotation_limit(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(kubeflow_runner, "ANNOTATION_LIMIT_BYTES", 10_000)
    assert cli.main(["compile", "--preset", "smoke", "--pipeline-root", ROOT, "--image", IMAGE,
                     "--output", str(tmp_path / "x.yaml"), "--set", f"data.data_dir={DATA_DIR}"]) == 0
    assert re.search(r"warning: the definition is over 9 KiB: .*before 2\.3.*#10968", capsys.readouterr().err)


def test_dataflow_option_gives_a_complete_argument_set(tmp_path):
    output = tmp_path / "df.yaml"
    assert cli.main(["compile", "--preset", "smoke", "--pipeline-root", ROOT, "--image", IMAGE, "--output",
                     str(output), "--set", f"data.data_dir={DATA_DIR}", "--set", "methods=at",
                     "--dataflow", "my-project/us-central1", "--beam-arg=--max_num_workers=4"]) == 0
    spec = yaml.safe_load(output.read_text())
    args = executor(spec, "cifarexamplegen")["args"]
    expected = ["--runner=DataflowRunner", "--project=my-project", "--region=us-central1",
                f"--temp_location={ROOT}/tmp/dataflow", f"--sdk_container_image={IMAGE}", "--sdk_location=container",
                "--experiments=use_runner_v2", "--max_num_workers=4"]
    assert args[-len(expected):] == expected and not any("direct_num_workers" in a for a in args)
    for bad, message in [("my-project", "PROJECT/REGION"), ("a/b/c", "PROJECT/REGION")]:
        with pytest.raises(OptionError, match=message):
            kubeflow_runner.dataflow_args(bad, ROOT, IMAGE)
    with pytest.raises(OptionError, match="gs://"):
        kubeflow_runner.dataflow_args("p/r", "s3://bucket/root", IMAGE)


def test_data_impressions_gets_the_teachers_gpus(tmp_path):
    _, (spec,) = compile_to(tmp_path, "zero_shot", ["resources.teacher_gpus=1", "resources.beam_cpu=4"])
    impressions = executor(spec, "dataimpressions")["resources"]
    assert impressions == {"cpuLimit": 4.0, "cpuRequest": 4.0, "memoryLimit": 8.0, "memoryRequest": 8.0,
                           "accelerator": {"type": "nvidia.com/gpu", "count": "1"}}
    assert executor(spec, "cifarexamplegen")["args"][-1] == "--direct_num_workers=4"
    assert "accelerator" not in executor(spec, "cifarexamplegen")["resources"]


def test_every_artifact_type_resolves_in_the_container_entry_point(seed, tmp_path):
    # TFX's Kubeflow entry point imports each artifact's class by its schema title; a custom type
    # whose TYPE_NAME is not an import path fails only on the cluster (as the Leaderboard's once did).
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils as entrypoint
    from tfx.types import artifact
    from tfx.utils import import_utils

    _, (zero_shot,) = compile_to(tmp_path, "zero_shot")
    titles = set()
    for spec in (seed.spec, zero_shot):
        for component in spec["components"].values():
            for side in ("inputDefinitions", "outputDefinitions"):
                for definition in component.get(side, {}).get("artifacts", {}).values():
                    schema = pipeline_spec_pb2.ArtifactTypeSchema(**{"instance_schema":
                                                                     definition["artifactType"]["instanceSchema"]})
                    path = entrypoint._retrieve_class_path(schema)
                    assert issubclass(import_utils.import_class_by_path(path), artifact.Artifact), path
                    titles.add(yaml.safe_load(schema.instance_schema)["title"])
    assert "components.LeaderboardArtifact" in titles and "tfx.Model" in titles
