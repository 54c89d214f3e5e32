"""Training-step time of every distillation method against its floor.

Floor = one plain student training step (CE + weight decay) + one teacher forward pass on
the same batch: what any distillation step must at least cost. Some methods do more by
design and have their own floor: DML trains a teacher-sized peer (floor = student step +
plain peer step, + one training-mode peer forward in its default sequential order, where the
student's step sees the updated peer; the simultaneous order is timed too); Jacobian
matching back-propagates through both networks' input gradients (floor = a student step
whose objective includes its input gradient, i.e. a double backward, + a teacher forward and
backward to the input); KD-SVD, KD-EID and MHGD clip the distillation gradient per variable
against the CE gradient, two backward passes (floor = a student step with that clipping on
the cheapest objective of the same taps + teacher forward); ReviewKD trains a fusion network
(floor + that network's own step on fixed features). The teacher is a real export
loaded from disk, as in a student Trainer. Steps run through Keras' compiled train function
(or a tf.function for the Jacobian floor) on an in-memory batch, so the input pipeline is
not measured.

    .venv/bin/python benchmarks/step_time.py                 # quick and seed model pairs
    .venv/bin/python benchmarks/step_time.py --pairs resnet32:resnet8 --steps 20
    .venv/bin/python benchmarks/step_time.py --pairs resnet32:resnet8 --methods crd,vid,ft,reviewkd,dkd
    .venv/bin/python benchmarks/step_time.py --profile   # KD-SVD / RKD breakdown
    .venv/bin/python benchmarks/step_time.py --device gpu --pairs seed_resnet32:seed_resnet8

Every method is timed as its Trainer runs it: prepared for a 240-epoch run (CRD with the
labels of a 50,000-example training set, its batches with example indices), each of its
stages separately. Prints a markdown table (rows for docs/benchmarks.md); --output FILE writes it.
"""

from __future__ import annotations

import os

import pipelines  # noqa: F401  (kd's environment before TensorFlow loads: Keras 2, oneDNN unless =0)

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from kd_trainer import export, methods, models, precision  # noqa: E402
from kd_trainer.distiller import Distiller, with_input_gradient  # noqa: E402
from kd_trainer.methods.base import INPUT_GRADIENT, MAIN_STAGE, DistillationMethod, RunInfo, cross_entropy  # noqa: E402
from kd_trainer.methods.kd_svd import TAPS as KD_SVD_TAPS, clipped_task_gradients  # noqa: E402
from kd_trainer.methods.warmup import REFERENCE_EPOCHS  # noqa: E402
from pipelines.presets import SEED_METHODS  # noqa: E402
from kd_trainer.provenance import code_revision  # noqa: E402


def median_seconds(step, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


# CIFAR-100's training-set size: CRD's memory banks hold one entry per example.
TRAIN_EXAMPLES = 50_000
# --device: what training.mixed_precision / jit_compile "auto" pick on that device (set in main).
DEVICE = {"name": "cpu", "mixed_precision": precision.FLOAT32, "jit_compile": False}


def train_step_fn(distiller: Distiller, images, labels):
    """The compiled train step on one in-memory batch (with example indices for CRD's memory banks)."""
    distiller.jit_compile = DEVICE["jit_compile"]
    method = distiller.method
    batch = (images, labels)
    if method is not None and method.trains_on == methods.catalog.INDEXED_EXAMPLES:
        batch += (tf.range(tf.shape(labels)[0], dtype=tf.int32) * (TRAIN_EXAMPLES // labels.shape[0]),)
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    train_function = distiller.make_train_function()
    return lambda: {k: v.numpy() for k, v in train_function(iterator).items()}


def distiller_for(student_name: str, teacher_name: str, method_name: str | None, teacher, stage: str,
                  params: dict | None = None) -> Distiller:
    student = models.build_model(student_name)
    method = methods.create(method_name, params) if method_name else None
    if method is not None:  # as run_fn does: the run's length (warm-ups), CRD's labels by example index
        method.prepare(RunInfo(main_epochs=REFERENCE_EPOCHS, example_labels=(
            np.arange(TRAIN_EXAMPLES) % models.NUM_CLASSES
            if method.trains_on == methods.catalog.INDEXED_EXAMPLES else None)))
    partner = method.partner(lambda: models.build_model(teacher_name)) if method is not None else None
    distiller = Distiller(student, method=method, teacher=teacher if method and method.needs_teacher else None,
                          partner=partner)
    distiller.stage = stage
    sgd = lambda: keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True)  # noqa: E731
    distiller.compile(optimizer=sgd(), partner_optimizer=sgd() if partner is not None else None)
    return distiller


def double_backward_step_fn(student_name: str, images, labels):
    """A plain student step whose objective also holds the squared input gradient, so that
    its weight gradient needs a double backward, as Jacobian matching's does."""
    student = models.build_model(student_name)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            taps = with_input_gradient(lambda x: student(x, training=True), images, labels)
            objective = (cross_entropy(labels, taps["logits"]) + tf.add_n(student.losses)
                         + tf.reduce_mean(tf.square(taps[INPUT_GRADIENT])))
        optimizer.apply_gradients(zip(tape.gradient(objective, student.trainable_variables),
                                      student.trainable_variables))
        return objective
    return lambda: step().numpy()


class ClippedFloor(DistillationMethod):
    """The cheapest objective on the taps of KD-SVD, KD-EID and MHGD (the mean square of each
    stage output) under their per-variable gradient clipping, whose separate CE and distillation
    gradients cost a second backward pass through the student (the seed's `Optimizer_w_Distillation`)."""

    name = "clipped_floor"
    student_taps = KD_SVD_TAPS
    loss_term_names = ("ce", "taps")
    task_gradients = clipped_task_gradients

    def loss_terms(self, labels, cross_entropy, student, teacher, stage=MAIN_STAGE):
        return {"ce": cross_entropy, "taps": tf.add_n([tf.reduce_mean(tf.square(student[t])) for t in KD_SVD_TAPS])}


def clipped_student_step_fn(student_name: str, images, labels):
    """A student step with the clipping's two backward passes and no teacher."""
    distiller = Distiller(models.build_model(student_name), method=ClippedFloor())
    distiller.stage = MAIN_STAGE
    distiller.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True))
    return train_step_fn(distiller, images, labels)


def fusion_step_fn(student_name: str, teacher_name: str, images, labels):
    """ReviewKD's fusion network (its ABF blocks) trained alone on fixed student features: its
    forward pass, the gradient of its weights and of the student features it reads, an SGD update."""
    student, teacher = models.build_model(student_name), models.build_model(teacher_name)
    method = methods.create("reviewkd")
    method.prepare(RunInfo(main_epochs=REFERENCE_EPOCHS))
    student_taps = {k: tf.identity(v) for k, v in student(images, training=True).items()}
    teacher_taps = {k: tf.identity(v) for k, v in teacher(images).items()}
    method.build({k: v.shape for k, v in student_taps.items()}, {k: v.shape for k, v in teacher_taps.items()})
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(student_taps)
            loss = method.loss_terms(labels, tf.constant(0.0), student_taps, teacher_taps,
                                     epoch=tf.constant(REFERENCE_EPOCHS))["reviewkd"]
        variables = method.trainable_variables
        gradients = tape.gradient(loss, [*variables, *student_taps.values()])
        optimizer.apply_gradients(zip(gradients[:len(variables)], variables))
        return loss
    return lambda: step().numpy()


DEFAULT_FLOOR = ("(student step)", "(teacher forward)")
# Methods that do more than a student step and a teacher forward by design (module docstring).
# DML's default, sequential order (methods/dml.py) runs the updated peer forward once more for
# the student's step, which its floor counts; its simultaneous order does not need that pass.
OWN_FLOORS = {"dml": ("(student step)", "(peer step)", "(peer forward)"),
              "dml update_order=simultaneous": ("(student step)", "(peer step)"),
              "jacobian": ("(student double-backward step)", "(teacher forward + backward)"),
              # Per-variable clipping (seed: KD-SVD and its successors) needs a second backward pass.
              **{name: ("(student step, clipped)", "(teacher forward)") for name in ("kd_svd", "kd_eid", "mhgd")},
              # ReviewKD trains a fusion network about as costly as the student (its 3x3 convs at each
              # stage's resolution).
              "reviewkd": ("(student step)", "(teacher forward)", "(ReviewKD fusion step)")}
# Non-default parameters also timed when the method is: {method: [params]}.
VARIANTS = {"dml": [{"update_order": "simultaneous"}]}


def variant_name(method: str, params: dict) -> str:
    return " ".join([method, *(f"{key}={value}" for key, value in params.items())])


def interleaved_medians(steps: dict, warmup: int, rounds: int, steps_per_round: int) -> dict[str, float]:
    """Median seconds of each step, timed in turns (`steps_per_round` steps of each, `rounds`
    times) so that a shared machine's load drifts over all of them alike."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            for _ in range(steps_per_round):
                started = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def benchmark_pair(teacher_name: str, student_name: str, batch: int, warmup: int, rounds: int, steps: int,
                   method_names: tuple[str, ...] = SEED_METHODS) -> list[dict]:
    images = tf.random.normal((batch, *models.INPUT_SHAPE))
    labels = tf.random.uniform((batch,), 0, models.NUM_CLASSES, tf.int32)
    with tempfile.TemporaryDirectory() as folder:
        export.save(models.build_model(teacher_name), folder)
        teacher, _loaded = export.load_teacher(folder)
        part_steps = {
            "(student step)": train_step_fn(
                distiller_for(student_name, teacher_name, None, teacher, MAIN_STAGE), images, labels),
            "(teacher forward)": lambda: teacher(images)["logits"].numpy(),
        }
        if "dml" in method_names:
            part_steps["(peer step)"] = train_step_fn(
                distiller_for(teacher_name, teacher_name, None, teacher, MAIN_STAGE), images, labels)
            peer = models.build_model(teacher_name)
            peer_forward = tf.function(lambda: peer(images, training=True)["logits"])
            part_steps["(peer forward)"] = lambda: peer_forward().numpy()
        if any(name in method_names for name in ("kd_svd", "kd_eid", "mhgd")):
            part_steps["(student step, clipped)"] = clipped_student_step_fn(student_name, images, labels)
        if "reviewkd" in method_names:
            part_steps["(ReviewKD fusion step)"] = fusion_step_fn(student_name, teacher_name, images, labels)
        if "jacobian" in method_names:
            part_steps["(student double-backward step)"] = double_backward_step_fn(student_name, images, labels)
            teacher_backward = tf.function(lambda: with_input_gradient(teacher, images, labels)[INPUT_GRADIENT])
            part_steps["(teacher forward + backward)"] = lambda: teacher_backward().numpy()
        method_steps = {(variant_name(name, params), stage): train_step_fn(
            distiller_for(student_name, teacher_name, name, teacher, stage, params), images, labels)
            for name in method_names for params in [{}, *VARIANTS.get(name, [])]
            for stage in methods.method_class(name).stages}
        seconds = interleaved_medians({**part_steps, **method_steps}, warmup, rounds, steps)
    rows = [{"method": part, "stage": "", "seconds": seconds[part]} for part in part_steps]
    for name, stage in method_steps:
        floor_parts = OWN_FLOORS.get(name, DEFAULT_FLOOR)
        floor = sum(seconds[part] for part in floor_parts)
        step = seconds[name, stage]
        rows.append({"method": name, "stage": stage, "seconds": step, "floor": floor,
                     "floor_is": " + ".join(floor_parts), "ratio": step / floor})
        print(f"{teacher_name}->{student_name} {name:<12} {stage:<5} {1000 * step:8.1f} ms "
              f"({step / floor:.2f} x floor {1000 * floor:.1f} ms)", flush=True)
    for row in rows:
        row.update(pair=f"{teacher_name} -> {student_name}")
    return rows


def loss_only_step(method, student_taps: dict, teacher_taps: dict, labels):
    """The method's loss and its gradient w.r.t. the student's taps, without any network."""
    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(student_taps)
            terms = method.loss_terms(labels, tf.constant(0.0), student_taps, teacher_taps)
            total = tf.add_n([v for k, v in terms.items() if k != "ce"])
        return tape.gradient(total, student_taps)
    return lambda: [g.numpy() for g in step().values() if g is not None]


def profile_pair(teacher_name: str, student_name: str, batch: int, warmup: int, steps: int,
                 names: tuple[str, ...] = ("kd_svd", "rkd")) -> list[dict]:
    """Where the time of the methods above their floor goes: the loss alone (forward and
    backward on fixed taps), and KD-SVD without its per-variable gradient clipping (which
    needs a second backward pass through the student)."""
    images = tf.random.normal((batch, *models.INPUT_SHAPE))
    labels = tf.random.uniform((batch,), 0, models.NUM_CLASSES, tf.int32)
    student, teacher_net = models.build_model(student_name), models.build_model(teacher_name)
    student_taps = {k: tf.identity(v) for k, v in student(images).items()}
    teacher_taps = {k: tf.identity(v) for k, v in teacher_net(images).items()}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        export.save(teacher_net, folder)
        teacher, _loaded = export.load_teacher(folder)
        for name in names:
            method = methods.create(name)
            method.build({k: v.shape for k, v in student_taps.items()}, {k: v.shape for k, v in teacher_taps.items()})
            rows.append({"method": f"{name}: loss + its gradient only", "stage": MAIN_STAGE,
                         "seconds": median_seconds(loss_only_step(method, student_taps, teacher_taps, labels),
                                                   warmup, steps)})
            if methods.method_class(name).task_gradients is clipped_task_gradients:
                distiller = distiller_for(student_name, teacher_name, name, teacher, MAIN_STAGE)
                distiller.method.task_gradients = lambda gradient, terms, step: gradient(terms.total)
                rows.append({"method": f"{name}: step without gradient clipping", "stage": MAIN_STAGE,
                             "seconds": median_seconds(train_step_fn(distiller, images, labels), warmup, steps)})
    for row in rows:
        row.update(pair=f"{teacher_name} -> {student_name}")
        print(f"{row['pair']} {row['method']:<45} {1000 * row['seconds']:8.1f} ms", flush=True)
    return rows


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = tf.config.list_physical_devices("GPU")
    device = f"{len(gpus)} GPU(s): {', '.join(g.name for g in gpus)}" if gpus else "CPU only"
    return f"{cpu}, {os.cpu_count()} cores visible, {device}; TensorFlow {tf.__version__}"


def threads() -> str:
    """TensorFlow's op thread pools (0: TensorFlow's choice, the visible cores)."""
    return (f"intra-op {tf.config.threading.get_intra_op_parallelism_threads()}, "
            f"inter-op {tf.config.threading.get_inter_op_parallelism_threads()}")


def markdown(rows: list[dict], batch: int, rounds: int, steps: int, revision: str) -> str:
    lines = [
        "# Training-step benchmark",
        "",
        f"- Date: {datetime.date.today().isoformat()}",
        f"- Machine: {machine()}",
        f"- Code revision: {revision} (read when the run started)",
        f"- Device: {DEVICE['name']}, {DEVICE['mixed_precision']}, XLA {'on' if DEVICE['jit_compile'] else 'off'}, "
        f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', '(unset)')}, threads: {threads()}",
        f"- Command: `benchmarks/step_time.py` (batch {batch}, median of {rounds} x {steps} steps after warm-up, "
        "timed in turns; compiled Keras train function, input pipeline excluded)",
        "- Floor = plain student step + teacher forward pass on the same batch, except for methods",
        "  whose definition requires more network work (DML, Jacobian matching, the clipping of KD-SVD,",
        "  KD-EID and MHGD, ReviewKD's fusion network): their floor, named in the last column, counts it.",
        "",
        "| Teacher -> student | Method | Stage | Step (ms) | Floor (ms) | Step / floor | Floor is |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "ratio" in row:
            lines.append(f"| {row['pair']} | {row['method']} | {row['stage']} | {1000 * row['seconds']:.1f} | "
                         f"{1000 * row['floor']:.1f} | {row['ratio']:.2f} | {row['floor_is']} |")
        else:
            lines.append(f"| {row['pair']} | {row['method']} | | {1000 * row['seconds']:.1f} | | | |")
    return "\n".join(lines) + "\n"


def profile_markdown(rows: list[dict]) -> str:
    lines = ["| Teacher -> student | Measurement | Time (ms) |", "|---|---|---|"]
    lines += [f"| {row['pair']} | {row['method']} | {1000 * row['seconds']:.1f} |" for row in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", default="resnet32:resnet8,seed_resnet32:seed_resnet8",
                        help="comma-separated teacher:student model pairs")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round (see --rounds)")
    parser.add_argument("--rounds", type=int, default=3, help="turns each step takes in the comparison table")
    parser.add_argument("--output", default="-",
                        help="a file to write the table to ('-': print only; a .json file gets the rows as JSON)")
    parser.add_argument("--methods", default=",".join(SEED_METHODS), help="comma-separated methods to time")
    parser.add_argument("--profile", action="store_true", help="only the KD-SVD / RKD time breakdown")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                        help="cpu: GPUs hidden, float32, no XLA; gpu: the GPU with the mixed precision and XLA that "
                             "training's 'auto' picks there (kd_trainer/precision.py)")
    args = parser.parse_args()
    method_names = tuple(args.methods.split(","))
    unknown = sorted(set(method_names) - set(methods.CATALOG))
    if unknown:
        parser.error(f"--methods: unknown {', '.join(unknown)}; valid: {', '.join(sorted(methods.CATALOG))}")
    if args.device == "cpu":
        tf.config.set_visible_devices([], "GPU")
    elif not tf.config.list_physical_devices("GPU"):
        parser.error("--device gpu: TensorFlow sees no GPU")
    DEVICE.update(name=args.device, mixed_precision=precision.resolve_precision(precision.AUTO),
                  jit_compile=precision.resolve_jit_compile(precision.AUTO))
    revision = code_revision()
    rows = []
    with precision.policy(DEVICE["mixed_precision"]):  # every network (and connector) built below
        for pair in args.pairs.split(","):
            teacher_name, student_name = pair.split(":")
            if args.profile:
                rows += profile_pair(teacher_name, student_name, args.batch, args.warmup, args.steps)
            else:
                rows += benchmark_pair(teacher_name, student_name, args.batch, args.warmup, args.rounds, args.steps,
                                       method_names)
    table = profile_markdown(rows) if args.profile else markdown(rows, args.batch, args.rounds, args.steps, revision)
    if args.output == "-":
        print(table)
    else:
        Path(args.output).write_text(json.dumps(rows, indent=1) if args.output.endswith(".json") else table)
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
