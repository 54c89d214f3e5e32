"""Training-step time of the part-2 methods (CRD, VID, FT, ReviewKD, KD-EID, MHGD) against
the same floor as benchmarks/step_time.py (plain student step + teacher forward pass),
measured the same way; these methods first need `prepare` (CRD: the labels of a full
50,000-example training set for its memory banks) and CRD's batches carry example indices.

    benchmarks/step_time_part2.py --pairs resnet32:resnet8 --steps 5

Prints a markdown table (rows for docs/benchmarks.md).
"""

from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import argparse  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from kd_trainer import export, methods, models  # noqa: E402
from kd_trainer.distiller import Distiller  # noqa: E402
from kd_trainer.methods.base import MAIN_STAGE, RunInfo  # noqa: E402
from step_time import machine, median_seconds  # noqa: E402

PART2_METHODS = ("crd", "vid", "ft", "reviewkd", "kd_eid", "mhgd")
TRAIN_EXAMPLES = 50_000


def compiled_step(distiller: Distiller, batch: tuple[tf.Tensor, ...]):
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    train_function = distiller.make_train_function()
    return lambda: {k: v.numpy() for k, v in train_function(iterator).items()}


def distiller_for(student_name: str, method_name: str | None, teacher, stage: str) -> Distiller:
    student = models.build_model(student_name)
    method = methods.create(method_name) if method_name else None
    if method is not None:
        labels = np.arange(TRAIN_EXAMPLES) % models.NUM_CLASSES
        method.prepare(RunInfo(main_epochs=240, example_labels=labels if method.uses_example_index else None))
    distiller = Distiller(student, method=method, teacher=teacher if method is not None else None)
    distiller.stage = stage
    distiller.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True))
    return distiller


def benchmark_pair(teacher_name: str, student_name: str, batch: int, warmup: int, steps: int) -> list[dict]:
    images = tf.random.normal((batch, *models.INPUT_SHAPE))
    labels = tf.random.uniform((batch,), 0, models.NUM_CLASSES, tf.int32)
    indices = tf.range(batch, dtype=tf.int32) * (TRAIN_EXAMPLES // batch)
    with tempfile.TemporaryDirectory() as folder:
        export.save(models.build_model(teacher_name), folder)
        teacher, _loaded = export.load_teacher(folder)
        teacher_forward = median_seconds(lambda: teacher(images)["logits"].numpy(), warmup, steps)
        student_step = median_seconds(compiled_step(distiller_for(student_name, None, teacher, MAIN_STAGE),
                                                    (images, labels)), warmup, steps)
        floor = student_step + teacher_forward
        rows = []
        for name in PART2_METHODS:
            for stage in methods.method_class(name).stages:
                distiller = distiller_for(student_name, name, teacher, stage)
                batch_data = (images, labels, indices) if distiller.method.uses_example_index else (images, labels)
                seconds = median_seconds(compiled_step(distiller, batch_data), warmup, steps)
                rows.append({"pair": f"{teacher_name} -> {student_name}", "method": name, "stage": stage,
                             "seconds": seconds, "floor": floor})
                print(f"{teacher_name}->{student_name} {name:<9} {stage:<12} {1000 * seconds:8.1f} ms "
                      f"({seconds / floor:.2f} x floor {1000 * floor:.1f} ms)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", default="resnet32:resnet8", help="comma-separated teacher:student model pairs")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=7)
    args = parser.parse_args()
    rows = []
    for pair in args.pairs.split(","):
        teacher_name, student_name = pair.split(":")
        rows += benchmark_pair(teacher_name, student_name, args.batch, args.warmup, args.steps)
    print(f"\n- Machine: {machine()}\n- batch {args.batch}, median of {args.steps} steps after {args.warmup}\n")
    print("| Teacher -> student | Method | Stage | Step (ms) | Floor (ms) | Step / floor |\n|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['pair']} | {row['method']} | {row['stage']} | {1000 * row['seconds']:.1f} | "
              f"{1000 * row['floor']:.1f} | {row['seconds'] / row['floor']:.2f} |")


if __name__ == "__main__":
    main()
