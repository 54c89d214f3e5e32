"""Wall time of each component of a finished local run, read from its ML Metadata store.

    .venv/bin/python benchmarks/component_times.py outputs/kd-quick/root

Prints a markdown table (component, state, minutes) of the newest run of that pipeline, in
the order the components started, and the sum of their times: the rows for docs/results.md.
Cached components show how long finding the cache hit took.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines import results  # its package sets kd's environment before TensorFlow loads


def markdown(records: list[results.ExecutionRecord]) -> str:
    lines = ["| Component | State | Minutes |", "|---|---|---|"]
    lines += [f"| {r.node} | {r.state} | {r.seconds / 60:.1f} |" for r in records]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline_root", help="the run's pipeline root, e.g. outputs/kd-quick/root")
    parser.add_argument("--metadata", help="its ML Metadata store (default: metadata.sqlite beside the root)")
    args = parser.parse_args()
    root = Path(args.pipeline_root).resolve()
    metadata = Path(args.metadata) if args.metadata else root.parent / "metadata.sqlite"
    records = results.latest_run_executions(results.readonly_connection_config(metadata), root.parent.name)
    print(markdown(records))
    busy = sum(r.seconds for r in records)
    print(f"{len(records)} components, {sum(r.state == 'CACHED' for r in records)} cached; "
          f"sum of component times {busy / 60:.1f} min")


if __name__ == "__main__":
    main()
