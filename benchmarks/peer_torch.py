"""Our Soft-logits training step side by side with the same step in PyTorch, on the same CPU.

For each preset's pair (quick: resnet32 -> resnet8; seed: seed_resnet32 -> seed_resnet8), both
frameworks train the same student from a frozen teacher of the same architecture on one fixed
in-memory batch of random images (no augmentation, no input pipeline), with the preset's
Soft-logits objective and student optimiser:

- ours: the student Trainer's step, built as kd_trainer/run_fn.py builds it (the preset's
  TrainerConfig, models.build_model with its weight decay scope, the Distiller, the stage's
  SGD with its learning-rate schedule) and run through Keras' compiled train function, the
  teacher exported and loaded back as a Trainer loads its base_model (as step_time.py does);
- PyTorch: a twin of kd_trainer/models.py in eager mode, channels-last, the teacher in eval
  mode under torch.no_grad(), CE + KL of kd_trainer/methods/soft_logits.py (its parameters read
  from the same method object), SGD with the same Nesterov momentum, and the same weight
  decay, applied by the optimizer per parameter group (the usual PyTorch form; the same
  gradient as our L2 loss term).

Before timing, the script checks that the twin is faithful: same parameter counts, and (with
our weights copied in and TensorFlow's "same" padding) the same loss terms and the same
weight update after one step. Then it times both steps in turns in this one process (warm-up
excluded, `--rounds` rounds of `--steps` steps each, the order alternating between rounds),
both frameworks on the same thread count, and prints a Markdown table (docs/benchmarks.md):
images/s = batch / median step time, and ours / PyTorch.

    make bench-peer                                             # both pairs, defaults
    make bench-peer ARGS="--presets quick --rounds 2 --steps 2"

`make bench-peer` runs it in .venv-bench (Python 3.11, TensorFlow + PyTorch's CPU build;
scripts/setup-bench.sh); by hand: PYTHONPATH=. .venv-bench/bin/python benchmarks/peer_torch.py
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
METHOD = "soft_logits"
DEFAULT_PRESETS = ("quick", "seed")


# --------------------------------------------------------------------------- helpers (no TF, no torch)

def cpu_description(cpuinfo: str, cpus: int) -> str:
    """'AMD EPYC (family 23, model 1; AVX2, no AVX-512), 2 CPUs' from /proc/cpuinfo's text."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    simd = ", ".join(["AVX2" if "avx2" in flags else "no AVX2", "AVX-512" if "avx512f" in flags else "no AVX-512"]
                     + (["AMX"] if "amx_tile" in flags else []))
    family = f"family {fields['cpu family']}, model {fields.get('model', '?')}; " if "cpu family" in fields else ""
    name = fields.get("model name", platform.processor() or platform.machine())
    return f"{name} ({family}{simd}), {cpus} CPU{'s' if cpus != 1 else ''}"


def visible_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def summarize(batch: int, ours: list[float], torch_times: list[float]) -> dict[str, float]:
    """Images/s of each side (batch / median step seconds) and ours / PyTorch."""
    ours_rate, torch_rate = batch / statistics.median(ours), batch / statistics.median(torch_times)
    return {"ours": ours_rate, "torch": torch_rate, "ratio": ours_rate / torch_rate}


def markdown(rows: list[dict], context: dict[str, str]) -> str:
    lines = [f"- {key}: {value}" for key, value in context.items()]
    lines += ["", "| Preset | Teacher -> student | Ours (img/s) | PyTorch (img/s) | Ours / PyTorch |",
              "|---|---|---|---|---|"]
    lines += [f"| {row['preset']} | {row['teacher']} -> {row['student']} | {row['ours']:.1f} | {row['torch']:.1f} | "
              f"{row['ratio']:.2f} |" for row in rows]
    return "\n".join(lines) + "\n"


# Keras layer name -> (module path in the PyTorch twin); the twin names its modules after ours.
_BLOCK_LAYER = re.compile(r"(stage\d+_block\d+)_(.+)")


def torch_module_name(keras_layer: str) -> str:
    match = _BLOCK_LAYER.fullmatch(keras_layer)
    return f"{match[1]}.{match[2]}" if match else keras_layer


# --------------------------------------------------------------------------- the PyTorch twin

def torch_resnet(name: str, tf_padding: bool = False):
    """kd_trainer.models.build_model(name)'s ResNet in PyTorch, returning the logits: same layers,
    widths, strides, BN momentum / epsilon, initialisation; modules named after our layers.

    A stride-2 3x3 conv pads (1, 1) as PyTorch models do; TensorFlow's "same" pads (0, 1) there
    (the same shapes and work, other pixels). `tf_padding` pads as TensorFlow does, for the check."""
    import torch
    from torch import nn

    from kd_trainer import models

    spec = models.model_spec(name)
    if not isinstance(spec, models.ResNetSpec):
        raise ValueError(f"{name}: only the CIFAR ResNets (kd_trainer/models.py _resnet) have a PyTorch twin here")

    def conv(inputs: int, channels: int, kernel: int, stride: int) -> nn.Module:
        if kernel == 3 and stride == 2 and tf_padding:
            return nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(inputs, channels, 3, 2, 0, bias=False))
        return nn.Conv2d(inputs, channels, kernel, stride, kernel // 2, bias=False)

    def bn(channels: int) -> nn.BatchNorm2d:
        # Keras keeps `momentum` of the moving statistic; PyTorch's momentum weighs the batch's.
        return nn.BatchNorm2d(channels, eps=models.BN_EPSILON, momentum=1 - models.BN_MOMENTUM)

    class BasicBlock(nn.Module):
        def __init__(self, inputs: int, channels: int, stride: int):
            super().__init__()
            self.conv1, self.bn1 = conv(inputs, channels, 3, stride), bn(channels)
            self.conv2, self.bn2 = conv(channels, channels, 3, 1), bn(channels)
            self.project = stride != 1 or inputs != channels
            if self.project:
                self.proj_conv, self.proj_bn = conv(inputs, channels, 1, stride), bn(channels)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            shortcut = self.proj_bn(self.proj_conv(x)) if self.project else x
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            y += shortcut
            return self.relu(y)

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem_conv = conv(models.INPUT_SHAPE[-1], spec.stem_channels, 3, 1)
            self.stem_bn = bn(spec.stem_channels)
            self.relu = nn.ReLU(inplace=True)
            self.block_names = []
            inputs = spec.stem_channels
            for stage, (channels, stride) in enumerate(zip(spec.stage_channels, (1, 2, 2)), start=1):
                for block in range(spec.blocks_per_stage):
                    self.block_names.append(f"stage{stage}_block{block + 1}")
                    self.add_module(self.block_names[-1], BasicBlock(inputs, channels, stride if block == 0 else 1))
                    inputs = channels
            self.logits = nn.Linear(inputs, models.NUM_CLASSES)

        def forward(self, x):
            x = self.relu(self.stem_bn(self.stem_conv(x)))
            for block in self.block_names:
                x = getattr(self, block)(x)
            return self.logits(x.mean(dim=(2, 3)))

    model = ResNet()
    # The seed's initialisation (models.seed_initializer): normal cut at 2 standard deviations,
    # stddev sqrt(1.3 * 2 / fan_out) for convs, sqrt(1.3 / fan_in) for the classifier.
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            is_conv = isinstance(module, nn.Conv2d)
            fan = module.weight[0].numel() if not is_conv else module.weight.shape[0] * module.weight[0, 0].numel()
            std = (1.3 * (2.0 if is_conv else 1.0) / fan) ** 0.5
            nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model.to(memory_format=torch.channels_last)


def copy_keras_weights(keras_model, torch_model) -> None:
    """Our weights into the twin: conv kernels HWIO -> OIHW, dense (in, out) -> (out, in), BN's four."""
    import torch
    from torch import nn

    modules = dict(torch_model.named_modules())
    with torch.no_grad():
        for layer in keras_model.layers:
            if not layer.weights:
                continue
            module = modules[torch_module_name(layer.name)]
            if isinstance(module, nn.Sequential):  # ZeroPad2d + Conv2d (tf_padding)
                module = module[1]
            values = [torch.from_numpy(w.numpy()) for w in layer.weights]
            if isinstance(module, nn.Conv2d):
                module.weight.copy_(values[0].permute(3, 2, 0, 1))
            elif isinstance(module, nn.Linear):
                module.weight.copy_(values[0].T)
                module.bias.copy_(values[1])
            else:  # gamma, beta, moving mean, moving variance
                for target, value in zip((module.weight, module.bias, module.running_mean, module.running_var), values):
                    target.copy_(value)


def decayed_parameters(model, scope: str) -> list:
    """The parameters weight decay reaches (model_specs.WEIGHT_DECAY_SCOPES): kernels or all."""
    from torch import nn

    if scope == "all":
        return list(model.parameters())
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


class TorchStep:
    """One Soft-logits training step of the twin student on a fixed batch."""

    def __init__(self, teacher, student, config, params, images, labels):
        import torch

        if params.logit_standardization:
            raise ValueError("soft_logits with logit_standardization has no PyTorch twin here")
        self.torch, self.teacher, self.student, self.params = torch, teacher.eval(), student.train(), params
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)
        self.images, self.labels = images, labels
        decayed = decayed_parameters(student, config.weight_decay_scope)
        decayed_ids = {id(p) for p in decayed}
        others = [p for p in student.parameters() if id(p) not in decayed_ids]
        self.decayed, self.weight_decay = decayed, config.weight_decay
        # Keras' L2(wd / 2) regulariser has gradient wd * w: PyTorch's weight_decay=wd adds the same.
        self.optimizer = torch.optim.SGD([{"params": decayed, "weight_decay": config.weight_decay},
                                          {"params": others, "weight_decay": 0.0}],
                                         lr=config.learning_rate, momentum=config.momentum, nesterov=config.nesterov)
        self.correct = torch.zeros((), dtype=torch.int64)
        self.correct_top5 = torch.zeros((), dtype=torch.int64)

    def terms(self, logits):
        """(weighted CE, weighted KL) as SoftLogits.loss_terms."""
        functional = self.torch.nn.functional
        p = self.params
        with self.torch.no_grad():
            teacher_logits = self.teacher(self.images)
        temperature = p.temperature
        kd = functional.kl_div(functional.log_softmax(logits / temperature, dim=1),
                               functional.log_softmax(teacher_logits / temperature, dim=1),
                               reduction="batchmean", log_target=True)
        if p.temperature_squared:
            kd = kd * temperature ** 2
        return p.ce_weight * functional.cross_entropy(logits, self.labels), p.kd_weight * kd

    def __call__(self) -> float:
        logits = self.student(self.images)
        ce, kd = self.terms(logits)
        loss = ce + kd
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with self.torch.no_grad():  # our step's accuracy metrics
            top5 = logits.topk(5, dim=1).indices
            self.correct += (top5[:, 0] == self.labels).sum()
            self.correct_top5 += (top5 == self.labels[:, None]).any(dim=1).sum()
        return loss.item()

    def objective_terms(self) -> dict[str, float]:
        """The loss terms of our step's metrics, on the current weights, without a step."""
        with self.torch.no_grad():
            ce, kd = self.terms(self.student(self.images))
            decay = self.weight_decay / 2 * sum((p * p).sum() for p in self.decayed)
        return {"ce": float(ce), "kd": float(kd), "loss": float(ce + kd + decay)}


# --------------------------------------------------------------------------- our side

class OurStep:
    """The Trainer's Soft-logits step (kd_trainer/run_fn.py), through Keras' compiled train function."""

    def __init__(self, preset_name: str, images_np, labels_np, export_dir: str):
        import tensorflow as tf

        import step_time  # benchmarks/: the compiled train step on an in-memory batch
        from kd_trainer import export, methods, models, precision, run_fn
        from kd_trainer.distiller import Distiller
        from kd_trainer.methods.base import MAIN_STAGE, RunInfo
        from pipelines import presets

        preset = presets.resolve(preset_name)
        config = preset.trainer_config("student", method=METHOD)
        self.config = config
        policy = precision.resolve_precision(config.mixed_precision)
        if policy != precision.FLOAT32 or precision.resolve_jit_compile(config.jit_compile):
            raise RuntimeError(f"{preset_name}: expected float32 without XLA on the CPU, got {policy}")
        self.teacher_net = models.build_model(config.teacher_model)
        export.save(self.teacher_net, export_dir)
        teacher, self._loaded = export.load_teacher(export_dir)  # the loaded object keeps its variables alive
        self.method = methods.create(METHOD, config.method_params)
        self.method.prepare(RunInfo(config.epochs, config.seed))
        decay = (config.weight_decay, config.weight_decay_scope)
        self.student = models.build_model(config.model, decay[0], weight_decay_scope=decay[1])
        self.distiller = Distiller(self.student, method=self.method, teacher=teacher,
                                   connector_layers=models.layer_factory(*decay))
        self.distiller.stage = MAIN_STAGE
        train_images = (preset.data.train_per_class or presets.TRAIN_IMAGES_PER_CLASS) * models.NUM_CLASSES
        schedule = run_fn.stage_schedule(config, MAIN_STAGE, train_images // config.batch_size, self.method)
        self.distiller.compile(optimizer=run_fn._optimizer(config, schedule), jit_compile=False)
        self.distiller.optimizer.build(self.distiller.trainable_student_variables())
        self.step = step_time.train_step_fn(self.distiller, tf.constant(images_np), tf.constant(labels_np))

    def __call__(self) -> dict:
        return self.step()

    def decayed_elements(self) -> int:
        """Elements of the student variables that our weight decay reaches (a gradient from student.losses)."""
        import tensorflow as tf

        with tf.GradientTape() as tape:
            decay = tf.add_n(self.student.losses)
        gradients = tape.gradient(decay, self.student.trainable_variables)
        return sum(int(v.shape.num_elements()) for v, g in zip(self.student.trainable_variables, gradients)
                   if g is not None)


# --------------------------------------------------------------------------- check and timing

def parameter_counts(keras_model=None, torch_model=None) -> tuple[int, int]:
    """(trainable, non-trainable: BN moving statistics) elements."""
    if keras_model is not None:
        return (sum(int(w.shape.num_elements()) for w in keras_model.trainable_weights),
                sum(int(w.shape.num_elements()) for w in keras_model.non_trainable_weights))
    return (sum(p.numel() for p in torch_model.parameters()),
            sum(b.numel() for name, b in torch_model.named_buffers() if not name.endswith("num_batches_tracked")))


def check_twin(ours: OurStep, images, labels, tolerance: float) -> str:
    """Our weights in the twin (TensorFlow's padding): the same loss terms (within `tolerance`) and
    the same weight update (within 10 x `tolerance`, relative to its norm) in one step.

    Consumes our step's first (untimed) call. Returns a one-line summary."""
    import numpy as np
    import torch

    config = ours.config
    student, teacher = torch_resnet(config.model, tf_padding=True), torch_resnet(config.teacher_model, tf_padding=True)
    copy_keras_weights(ours.student, student)
    copy_keras_weights(ours.teacher_net, teacher)
    step = TorchStep(teacher, student, config, ours.method.params, images, labels)
    expected = step.objective_terms()
    before = {v.name: v.numpy().copy() for v in ours.student.trainable_variables}
    metrics = ours()
    step()
    problems = [f"{name}: ours {float(metrics[name]):.6g}, PyTorch {value:.6g}" for name, value in expected.items()
                if abs(float(metrics[name]) - value) > tolerance * max(abs(value), 1e-3)]
    # The update of every student weight: ours (after - before) against the twin's.
    twin = dict(student.named_modules())
    ours_deltas, torch_deltas, errors = [], [], {}
    for layer in ours.student.layers:
        if not layer.trainable_weights:
            continue
        module = twin[torch_module_name(layer.name)]
        module = module[1] if isinstance(module, torch.nn.Sequential) else module
        for variable, parameter in zip(layer.trainable_weights, (module.weight, module.bias)):
            value = parameter.detach().numpy()
            value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T if value.ndim == 2 else value
            ours_deltas.append((variable.numpy() - before[variable.name]).ravel())
            torch_deltas.append((value - before[variable.name]).ravel())
            errors[variable.name] = np.linalg.norm(ours_deltas[-1] - torch_deltas[-1]) / np.linalg.norm(ours_deltas[-1])
    ours_delta, torch_delta = np.concatenate(ours_deltas), np.concatenate(torch_deltas)
    update_error = float(np.linalg.norm(ours_delta - torch_delta) / np.linalg.norm(ours_delta))
    # Float32 gradients summed in another order: 1.1e-3 (quick) and 2.2e-4 (seed) measured; a wrong
    # momentum, learning rate or decay is off by far more (Nesterov off: 47%).
    if update_error > 10 * tolerance:
        worst = sorted(errors, key=errors.get, reverse=True)[:3]
        problems.append(f"weight update differs: |ours - PyTorch| / |ours| = {update_error:.2e} (worst: "
                        + ", ".join(f"{name} {errors[name]:.1e}" for name in worst) + ")")
    if problems:
        raise RuntimeError(f"{config.teacher_model} -> {config.model}: the PyTorch twin does not match ours: "
                           + "; ".join(problems))
    return (f"loss {float(metrics['loss']):.5f} (PyTorch {expected['loss']:.5f}), "
            f"relative update difference {update_error:.1e}")


def time_in_turns(steps: dict, warmup: int, rounds: int, per_round: int, label: str) -> dict[str, list[float]]:
    """Per-step seconds of each step, `per_round` steps at a time in turns (order alternating)."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steps}
    names = list(steps)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            for _ in range(per_round):
                started = time.perf_counter()
                steps[name]()
                times[name].append(time.perf_counter() - started)
        print(f"{label} round {round_index + 1}/{rounds}: " + ", ".join(
            f"{name} {statistics.median(t[-per_round:]) * 1000:.0f} ms/step" for name, t in times.items()), flush=True)
    return times


def benchmark_preset(preset_name: str, batch: int, warmup: int, rounds: int, per_round: int, tolerance: float) -> dict:
    import numpy as np
    import torch

    from kd_trainer import models

    rng = np.random.default_rng(0)
    images_np = rng.standard_normal((batch, *models.INPUT_SHAPE), dtype=np.float32)
    labels_np = rng.integers(0, models.NUM_CLASSES, batch).astype(np.int32)
    # NHWC memory seen as NCHW: exactly PyTorch's channels-last layout, the same bytes as ours.
    images = torch.from_numpy(images_np).permute(0, 3, 1, 2)
    assert images.is_contiguous(memory_format=torch.channels_last)
    labels = torch.from_numpy(labels_np.astype(np.int64))
    with tempfile.TemporaryDirectory() as export_dir:
        ours = OurStep(preset_name, images_np, labels_np, export_dir)
        config = ours.config
        if batch != config.batch_size:
            print(f"note: --batch {batch}, the {preset_name} preset trains with batch {config.batch_size}")
        label = f"{preset_name} ({config.teacher_model} -> {config.model})"
        teacher, student = torch_resnet(config.teacher_model), torch_resnet(config.model)
        for role, keras_model, torch_model in (("teacher", ours.teacher_net, teacher),
                                               ("student", ours.student, student)):
            counts = parameter_counts(keras_model), parameter_counts(torch_model=torch_model)
            if counts[0] != counts[1]:
                raise RuntimeError(f"{label}: {role} (trainable, BN statistics) elements: ours {counts[0]}, "
                                   f"PyTorch {counts[1]}")
        decayed = sum(p.numel() for p in decayed_parameters(student, config.weight_decay_scope))
        if decayed != ours.decayed_elements():
            raise RuntimeError(f"{label}: weight decay reaches {ours.decayed_elements()} of our student's elements, "
                               f"{decayed} of PyTorch's")
        print(f"{label}: parameters equal (student {parameter_counts(ours.student)[0]:,} trainable, teacher "
              f"{parameter_counts(ours.teacher_net)[0]:,}), weight decay on {config.weight_decay_scope} "
              f"({decayed:,} elements); twin check: {check_twin(ours, images, labels, tolerance)}", flush=True)
        torch_step = TorchStep(teacher, student, config, ours.method.params, images, labels)
        times = time_in_turns({"ours": ours, "PyTorch": torch_step}, warmup, rounds, per_round, label)
    return {"preset": preset_name, "teacher": config.teacher_model, "student": config.model,
            **summarize(batch, times["ours"], times["PyTorch"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default=",".join(DEFAULT_PRESETS),
                        help="comma-separated presets whose teacher -> student pair and student training to use")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each side before the rounds")
    parser.add_argument("--rounds", type=int, default=5, help="turns each side takes")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side and round")
    parser.add_argument("--threads", type=int, default=visible_cpus(),
                        help="intra-op threads of both frameworks (and inter-op; default: the CPUs visible)")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="relative tolerance of the twin check's loss terms (10 x this for the weight update)")
    parser.add_argument("--output", default="-", help="a file to write the table to ('-': print only)")
    args = parser.parse_args()

    sys.path[:0] = [str(REPO_ROOT), str(Path(__file__).resolve().parent)]
    import pipelines  # noqa: F401  (kd's environment before TensorFlow loads: Keras 2, oneDNN unless =0)

    try:
        import torch
    except ImportError:
        sys.exit("benchmarks/peer_torch.py needs PyTorch: run it with `make bench-peer` (.venv-bench, "
                 "docs/benchmarks.md)")
    import numpy as np
    import tensorflow as tf
    import tf_keras

    from kd_trainer.provenance import code_revision

    # Before either framework runs anything: both read their pool sizes once.
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    tf.config.set_visible_devices([], "GPU")
    torch.manual_seed(0)
    tf.keras.utils.set_random_seed(0)

    load_before = os.getloadavg()
    rows = [benchmark_preset(name, args.batch, args.warmup, args.rounds, args.steps, args.tolerance)
            for name in args.presets.split(",")]
    load_after = os.getloadavg()
    mkldnn = torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    context = {
        "Date": f"{datetime.datetime.now().astimezone().isoformat(timespec='minutes')}; "
                f"code revision {code_revision()}",
        "CPU": cpu_description(cpuinfo, visible_cpus()),
        "Load average (1 min) before / after": f"{load_before[0]:.2f} / {load_after[0]:.2f}",
        "Versions": (f"Python {platform.python_version()}, TensorFlow {tf.__version__} "
                     f"(tf_keras {tf_keras.__version__}), "
                     f"PyTorch {torch.__version__}, numpy {np.__version__}"),
        "Threads": (f"TensorFlow intra-op {tf.config.threading.get_intra_op_parallelism_threads()} / inter-op "
                    f"{tf.config.threading.get_inter_op_parallelism_threads()}, "
                    f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', '(unset)')}; PyTorch "
                    f"{torch.get_num_threads()} / inter-op {torch.get_num_interop_threads()}, "
                    f"oneDNN (mkldnn) {'on' if mkldnn else 'off'}"),
        "Command": f"`{' '.join(['benchmarks/peer_torch.py', *sys.argv[1:]])}` (batch {args.batch}; warm-up steps: "
                   f"{args.warmup}, then rounds x steps of each side in turns: {args.rounds} x {args.steps}; "
                   "img/s = batch / median step time)",
    }
    table = markdown(rows, context)
    print(table)
    if args.output != "-":
        Path(args.output).write_text(table)
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
