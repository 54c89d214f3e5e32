"""Soft-logits step time under TensorFlow's op thread-pool sizes and CPU kernels, one process per
setting, in turns.

The intra-op and inter-op pools are sized once, when TensorFlow starts (TF_NUM_INTRAOP_THREADS,
TF_NUM_INTEROP_THREADS; 0 lets TensorFlow pick, i.e. the visible cores), as are its oneDNN
kernels (TF_ENABLE_ONEDNN_OPTS; kd turns them on unless it is set), so every setting runs
`benchmarks/step_time.py` in a process of its own. The settings take turns `--rounds` times so
that a drifting machine load reaches all of them alike; each cell is the median over rounds.

    .venv/bin/python benchmarks/thread_settings.py                      # quick pair, 5 settings
    .venv/bin/python benchmarks/thread_settings.py --settings 0:0,0:0:0 --rounds 2   # oneDNN on / off

Prints a markdown table (docs/benchmarks.md): per setting, the Soft-logits step, its floor's
parts and images/s, and the speed relative to TensorFlow's default (0:0).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

STEP_TIME = Path(__file__).resolve().parent / "step_time.py"
DEFAULT_SETTING = "0:0"
MEASURED = ("soft_logits", "(student step)", "(teacher forward)")


def parse_setting(text: str) -> tuple[int, int, str]:
    """INTRA:INTER[:ONEDNN] -> (intra, inter, oneDNN "0" / "1"; "1", kd's default, when omitted)."""
    parts = text.split(":")
    try:
        intra, inter = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        parts = []
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("0", "1")):
        raise argparse.ArgumentTypeError(f"--settings: expected INTRA:INTER thread counts and optionally :0 or :1 "
                                         f"for oneDNN off / on, e.g. 2:1 or 0:0:0, got {text!r}")
    if min(intra, inter) < 0:
        raise argparse.ArgumentTypeError(f"--settings: thread counts must be >= 0, got {text!r}")
    return intra, inter, parts[2] if len(parts) == 3 else "1"


def run_setting(setting: str, pair: str, batch: int, warmup: int, steps: int, folder: str) -> dict[str, float]:
    """Seconds per step of MEASURED in one fresh process with the given pool sizes."""
    intra, inter, onednn = parse_setting(setting)
    output = os.path.join(folder, f"{setting.replace(':', '_')}.json")
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": str(intra), "TF_NUM_INTEROP_THREADS": str(inter),
           "TF_ENABLE_ONEDNN_OPTS": onednn}
    subprocess.run([sys.executable, str(STEP_TIME), "--pairs", pair, "--methods", "soft_logits", "--rounds", "1",
                    "--batch", str(batch), "--warmup", str(warmup), "--steps", str(steps), "--output", output], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    rows = json.loads(Path(output).read_text())
    return {row["method"]: row["seconds"] for row in rows if row["method"] in MEASURED}


def markdown(pair: str, batch: int, medians: dict[str, dict[str, float]], rounds: int, steps: int) -> str:
    default = medians[DEFAULT_SETTING]["soft_logits"] if DEFAULT_SETTING in medians else None
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    lines = [f"- Machine: {cpu}, {os.cpu_count()} cores visible",
             f"- Command: `benchmarks/thread_settings.py --pair {pair} --batch {batch} --settings {','.join(medians)} "
             f"--rounds {rounds} --steps {steps}` (one process per setting, in turns; median of rounds)",
             "", "| Intra-op : inter-op threads | oneDNN | Soft-logits step (ms) | Student step (ms) "
             "| Teacher forward (ms) | Images/s | Speed vs 0:0, oneDNN on |", "|---|---|---|---|---|---|---|"]
    for setting, seconds in medians.items():
        intra, inter, onednn = parse_setting(setting)
        relative = f"{default / seconds['soft_logits']:.2f}" if default else ""
        lines.append(f"| {intra}:{inter} | {'on' if onednn == '1' else 'off'} | {1000 * seconds['soft_logits']:.1f} | "
                     f"{1000 * seconds['(student step)']:.1f} | "
                     f"{1000 * seconds['(teacher forward)']:.1f} | {batch / seconds['soft_logits']:.0f} | {relative} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", default="resnet32:resnet8", help="teacher:student")
    parser.add_argument("--settings", default="0:0,0:0:0,2:1,1:2,1:1",
                        help="comma-separated INTRA:INTER[:ONEDNN] pool sizes (0: TensorFlow's choice) and oneDNN "
                             "kernels (1 on, kd's default; 0 off, TensorFlow's default without AVX-512)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per process")
    args = parser.parse_args()
    settings = args.settings.split(",")
    for setting in settings:
        try:
            parse_setting(setting)
        except argparse.ArgumentTypeError as error:
            parser.error(str(error))
    times: dict[str, list[dict[str, float]]] = {setting: [] for setting in settings}
    with tempfile.TemporaryDirectory() as folder:
        for round_index in range(args.rounds):
            for setting in settings if round_index % 2 == 0 else reversed(settings):
                times[setting].append(run_setting(setting, args.pair, args.batch, args.warmup, args.steps, folder))
                print(f"round {round_index + 1} {setting}: soft_logits "
                      f"{1000 * times[setting][-1]['soft_logits']:.1f} ms", file=sys.stderr, flush=True)
    medians = {setting: {name: statistics.median(run[name] for run in runs) for name in MEASURED}
               for setting, runs in times.items()}
    print(markdown(args.pair, args.batch, medians, args.rounds, args.steps))


if __name__ == "__main__":
    main()
