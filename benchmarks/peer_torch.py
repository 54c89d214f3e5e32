"""Our Soft-logits training step against the same step in PyTorch, on the same CPU.

Both sides train the same CIFAR ResNet student (kd_trainer/models.py) from a frozen teacher
of the same architecture, on one in-memory augmentation-free batch (batch 128 by default),
with the Soft-logits objective of kd_trainer/methods/soft_logits.py (0.7 CE + 0.3 KL at
T = 3, no T^2), weight decay wd/2 * sum(w^2) over conv and dense kernels (as the Keras
models' L2 regularizers) and SGD with Nesterov momentum 0.9. Ours is the Distiller's
compiled train function with the teacher loaded from a real export (as step_time.py);
PyTorch's is eager, channels-last, the teacher under `torch.no_grad()` in eval mode.

Each side runs in its own worker process, started once: TensorFlow reads
TF_ENABLE_ONEDNN_OPTS at import, so ours is measured twice (oneDNN off and on), and the
frameworks' thread pools do not compete. The workers take turns: every round, each one
times `--steps` steps while the others wait idle, so slow drifts of a shared machine hit
all sides alike. Throughput = batch / median step time over all rounds; the ratio column
is the median over rounds of the per-round ratio.

    .venv/bin/python benchmarks/peer_torch.py                     # quick and seed pairs
    .venv/bin/python benchmarks/peer_torch.py --pairs resnet32:resnet8 --rounds 5

Needs `pip install .[bench]` (PyTorch). Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# Each worker: (label, framework, TF_ENABLE_ONEDNN_OPTS or None).
WORKERS = (("ours, oneDNN off", "tf", "0"), ("ours, oneDNN on", "tf", "1"), ("PyTorch", "torch", None))
TEMPERATURE, CE_WEIGHT, KD_WEIGHT = 3.0, 0.7, 0.3
WEIGHT_DECAY, LEARNING_RATE, MOMENTUM = 5e-4, 0.01, 0.9


# --------------------------------------------------------------------------- PyTorch side

def torch_resnet(name: str):
    """The PyTorch twin of kd_trainer.models.build_model(name): same layers, widths, strides,
    BN momentum / epsilon; returns logits only (the Soft-logits step needs nothing else)."""
    import torch
    from torch import nn

    from kd_trainer.models import BN_EPSILON, BN_MOMENTUM, NUM_CLASSES, model_spec

    spec = model_spec(name)

    def bn(channels: int) -> nn.BatchNorm2d:
        # Keras' momentum m keeps m of the running statistic; PyTorch's momentum is 1 - m.
        return nn.BatchNorm2d(channels, eps=BN_EPSILON, momentum=1 - BN_MOMENTUM)

    class BasicBlock(nn.Module):
        def __init__(self, inputs: int, channels: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(inputs, channels, 3, stride, 1, bias=False)
            self.bn1 = bn(channels)
            self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
            self.bn2 = bn(channels)
            self.shortcut = (nn.Sequential(nn.Conv2d(inputs, channels, 1, stride, bias=False), bn(channels))
                             if stride != 1 or inputs != channels else nn.Identity())

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))

    layers: list[nn.Module] = [nn.Conv2d(3, spec.stem_channels, 3, 1, 1, bias=False), bn(spec.stem_channels),
                               nn.ReLU()]
    inputs = spec.stem_channels
    for channels, stride in zip(spec.stage_channels, (1, 2, 2)):
        for block in range(spec.blocks_per_stage):
            layers.append(BasicBlock(inputs, channels, stride if block == 0 else 1))
            inputs = channels
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(inputs, NUM_CLASSES)]
    model = nn.Sequential(*layers)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return model


def torch_step_fn(teacher_name: str, student_name: str, batch: int):
    import torch
    import torch.nn.functional as functional

    from kd_trainer.models import INPUT_SHAPE, NUM_CLASSES

    torch.manual_seed(0)
    height, width, channels = INPUT_SHAPE
    images = torch.randn(batch, channels, height, width).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, NUM_CLASSES, (batch,))
    teacher = torch_resnet(teacher_name).to(memory_format=torch.channels_last).eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    student = torch_resnet(student_name).to(memory_format=torch.channels_last).train()
    kernels = [m.weight for m in student.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    optimizer = torch.optim.SGD(student.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM, nesterov=True)

    def step() -> float:
        with torch.no_grad():
            teacher_logits = teacher(images)
        logits = student(images)
        cross_entropy = functional.cross_entropy(logits, labels)
        log_p_teacher = functional.log_softmax(teacher_logits / TEMPERATURE, dim=1)
        log_p_student = functional.log_softmax(logits / TEMPERATURE, dim=1)
        kd = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1).mean()
        decay = WEIGHT_DECAY / 2 * sum((kernel * kernel).sum() for kernel in kernels)
        loss = CE_WEIGHT * cross_entropy + KD_WEIGHT * kd + decay
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    student_weights = sum(m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
                          for m in student.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    return step, f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads", student_weights


# --------------------------------------------------------------------------- our side

def tf_step_fn(teacher_name: str, student_name: str, batch: int):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import step_time  # noqa: E402  (sets TF_USE_LEGACY_KERAS before importing TensorFlow)
    import tempfile

    import tensorflow as tf

    from kd_trainer import export, models
    from kd_trainer.methods.base import MAIN_STAGE

    images = tf.random.normal((batch, *models.INPUT_SHAPE))
    labels = tf.random.uniform((batch,), 0, models.NUM_CLASSES, tf.int32)
    with tempfile.TemporaryDirectory() as folder:
        export.save(models.build_model(teacher_name), folder)
        teacher, loaded = export.load_teacher(folder)
    distiller = step_time.distiller_for(student_name, teacher_name, "soft_logits", teacher, MAIN_STAGE)
    train_step = step_time.train_step_fn(distiller, images, labels)
    train_step.teacher_export = loaded  # the teacher's variables live as long as the step
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(unset)")
    return (train_step, f"TensorFlow {tf.__version__}, TF_ENABLE_ONEDNN_OPTS={onednn}",
            models.count_weights_without_bn(distiller.student))


def serve(framework: str, teacher_name: str, student_name: str, batch: int, warmup: int) -> None:
    """Worker loop: builds the step, then answers each line 'N' on stdin with the N step
    times as one JSON line on stdout, until stdin closes."""
    make = tf_step_fn if framework == "tf" else torch_step_fn
    step, description, student_weights = make(teacher_name, student_name, batch)
    for _ in range(warmup):
        step()
    print(json.dumps({"ready": description, "student_weights": student_weights}), flush=True)
    for line in sys.stdin:
        times = []
        for _ in range(int(line)):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        print(json.dumps({"times": times}), flush=True)


# --------------------------------------------------------------------------- orchestration

class Worker:
    def __init__(self, label: str, framework: str, onednn: str | None, pair: tuple[str, str], batch: int,
                 warmup: int):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                                         os.environ.get("PYTHONPATH")])))
        if onednn is not None:
            env["TF_ENABLE_ONEDNN_OPTS"] = onednn
        self.label = label
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", framework, "--pairs", ":".join(pair), "--batch", str(batch),
             "--warmup", str(warmup)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        ready = self._read()
        self.description, self.student_weights = ready["ready"], ready["student_weights"]

    def _read(self) -> dict:
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"benchmark worker '{self.label}' exited with code {self.process.wait()} "
                                   "(its error is above)")
            if line.startswith("{"):  # anything else is the frameworks' own output
                return json.loads(line)

    def times(self, steps: int) -> list[float]:
        self.process.stdin.write(f"{steps}\n")
        self.process.stdin.flush()
        return self._read()["times"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def compare_pair(pair: tuple[str, str], batch: int, warmup: int, rounds: int, steps: int) -> dict:
    # Started one after the other so that no two build or warm up at the same time.
    workers = [Worker(label, framework, onednn, pair, batch, warmup) for label, framework, onednn in WORKERS]
    try:
        counts = {w.label: w.student_weights for w in workers}
        if len(set(counts.values())) != 1:  # the two students must be the same network
            raise RuntimeError(f"{pair[1]}: conv + dense weight counts differ between the workers: {counts}")
        per_round = {w.label: [] for w in workers}
        for round_index in range(rounds):
            for worker in workers:
                per_round[worker.label].append(statistics.median(worker.times(steps)))
            print(f"{pair[0]}->{pair[1]} round {round_index + 1}: "
                  + ", ".join(f"{label} {batch / times[-1]:.1f} img/s" for label, times in per_round.items()),
                  flush=True)
    finally:
        for worker in workers:
            worker.close()
    torch_times = per_round["PyTorch"]
    return {
        "pair": pair,
        "descriptions": {w.label: w.description for w in workers},
        "images_per_second": {label: batch / statistics.median(times) for label, times in per_round.items()},
        "ratio_to_torch": {label: statistics.median(t / o for t, o in zip(torch_times, times))
                           for label, times in per_round.items() if label != "PyTorch"},
    }


def cpu_model() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        return f"{platform.machine()} (lscpu failed: {error})"
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    simd = [flag for flag in ("avx2", "avx512f", "amx_tile") if flag in flags]
    return (f"{fields.get('Model name', '?').strip()} ({fields.get('Vendor ID', '?').strip()}), "
            f"{os.cpu_count()} CPUs visible, {'/'.join(simd) or 'no AVX2'}")


def markdown(results: list[dict], args: argparse.Namespace) -> str:
    revision = subprocess.run(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
                              capture_output=True, text=True).stdout.strip()
    labels = [label for label, _, _ in WORKERS]
    lines = [
        f"- Date: {datetime.date.today().isoformat()}; code revision {revision}",
        f"- CPU: {cpu_model()}",
        f"- Command: `benchmarks/peer_torch.py --pairs {args.pairs} --batch {args.batch} --rounds {args.rounds} "
        f"--steps {args.steps}`",
        f"- {'; '.join(sorted({d for r in results for d in r['descriptions'].values()}))}",
        "",
        "| Teacher -> student | " + " | ".join(f"{label} (img/s)" for label in labels)
        + " | " + " | ".join(f"{label} / PyTorch" for label in labels if label != "PyTorch") + " |",
        "|---" * (2 * len(labels)) + "|",
    ]
    for result in results:
        rates = " | ".join(f"{result['images_per_second'][label]:.1f}" for label in labels)
        ratios = " | ".join(f"{result['ratio_to_torch'][label]:.2f}" for label in labels if label != "PyTorch")
        lines.append(f"| {result['pair'][0]} -> {result['pair'][1]} | {rates} | {ratios} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", default="resnet32:resnet8,seed_resnet32:seed_resnet8",
                        help="comma-separated teacher:student model pairs (kd_trainer.models names)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per worker before the rounds")
    parser.add_argument("--rounds", type=int, default=5, help="turns each worker takes")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per worker and round")
    parser.add_argument("--serve", choices=("tf", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    pairs = [tuple(pair.split(":")) for pair in args.pairs.split(",")]
    for pair in pairs:
        if len(pair) != 2:
            parser.error(f"--pairs: expected teacher:student pairs, got {':'.join(pair)!r}")
    if args.serve:
        serve(args.serve, *pairs[0], args.batch, args.warmup)
        return
    if importlib.util.find_spec("torch") is None:  # checked here: a worker would fail later, less clearly
        sys.exit("benchmarks/peer_torch.py needs PyTorch, which is not installed: pip install '.[bench]'")
    results = [compare_pair(pair, args.batch, args.warmup, args.rounds, args.steps) for pair in pairs]
    print(markdown(results, args))


if __name__ == "__main__":
    main()
