"""`kd`: the benchmark's command line (run a preset locally, print its results, list presets)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from pipelines import presets


def _run(args: argparse.Namespace) -> int:
    from pipelines import local_runner, results

    preset = presets.resolve(args.preset, args.overrides)
    paths = local_runner.local_paths(preset, args.output_dir)
    print(f"kd: running preset '{preset.name}' -> {paths.pipeline_root}", flush=True)
    started = time.perf_counter()
    local_runner.run(preset, paths, args.beam_args or None)
    elapsed = time.perf_counter() - started
    rows = results.collect(paths.connection_config(), paths.pipeline_name)
    print(f"\nkd: pipeline '{paths.pipeline_name}' finished in {elapsed / 60:.1f} min")
    print(f"  artifacts: {paths.pipeline_root}")
    print(f"  metadata:  {paths.metadata_path}")
    for row in rows:
        print(f"  {row.component:<24} model {row.model_uri}\n  {'':<24} TFMA  {row.evaluation_uri}")
    print("\n" + results.format_table(rows))
    return 0


def _results(args: argparse.Namespace) -> int:
    from pipelines import local_runner, results

    preset = presets.resolve(args.preset, args.overrides)
    paths = local_runner.local_paths(preset, args.output_dir)
    if not paths.metadata_path.is_file():
        print(f"kd: error: no run of preset '{preset.name}' at {paths.metadata_path}", file=sys.stderr)
        return 2
    print(results.format_table(results.collect(paths.connection_config(), paths.pipeline_name)))
    return 0


def _presets(args: argparse.Namespace) -> int:
    if args.name:
        print(json.dumps(presets.to_dict(presets.resolve(args.name, args.overrides)), indent=2))
    else:
        for preset in presets.PRESETS.values():
            print(f"{preset.name:<8} {preset.description}")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="kd", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a preset's pipeline locally (BeamDagRunner)")
    run.add_argument("--preset", default="quick", help=f"one of {', '.join(presets.PRESETS)} (default quick)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a preset field, e.g. --set student.epochs=8 (repeatable)")
    run.add_argument("--output-dir", help="folder for pipeline roots and metadata (default ./outputs)")
    run.add_argument("--beam-arg", dest="beam_args", action="append", default=[],
                     help="Beam pipeline argument for the Beam components (repeatable)")
    run.set_defaults(handler=_run)

    table = commands.add_parser("results", help="print the results table of a finished local run")
    table.add_argument("--preset", default="quick")
    table.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    table.add_argument("--output-dir", help="folder given to `kd run` (default ./outputs)")
    table.set_defaults(handler=_results)

    show = commands.add_parser("presets", help="list presets, or print one resolved as JSON")
    show.add_argument("name", nargs="?")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    show.set_defaults(handler=_presets)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except presets.PresetError as error:
        print(f"kd: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
