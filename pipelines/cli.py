"""`kd`: the benchmark's command line (run a preset locally, compile it for Kubeflow and submit
it, regenerate a run's report, list presets and recorded teachers)."""

from __future__ import annotations

import os

# oneDNN's CPU kernels: TensorFlow turns them on by itself only on CPUs with AVX-512/AMX, and
# they made the Soft-logits step ~1.5x faster on a 2-core AVX2 EPYC (docs/benchmarks.md).
# Read when TensorFlow loads, so set before anything imports it; an explicit 0 still wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from pipelines import presets  # noqa: E402


def _run(args: argparse.Namespace) -> int:
    from pipelines import local_runner, results

    preset = presets.resolve(args.preset, args.overrides)
    paths = local_runner.local_paths(preset, args.output_dir)
    print(f"kd: running preset '{preset.name}' -> {paths.pipeline_root}", flush=True)
    started = time.perf_counter()
    local_runner.run(preset, paths, args.beam_args or None)
    elapsed = time.perf_counter() - started
    report = results.leaderboard_dir(results.latest_artifacts(paths.connection_config(), paths.pipeline_name))
    print(f"\nkd: pipeline '{paths.pipeline_name}' finished in {elapsed / 60:.1f} min")
    print(f"  artifacts:   {paths.pipeline_root}")
    print(f"  metadata:    {paths.metadata_path}")
    print(f"  leaderboard: {report}  (report.html, leaderboard.md/.csv/.json, plots)\n")
    print(Path(report, "leaderboard.md").read_text())
    return 0


def _report(args: argparse.Namespace) -> int:
    from tfx.orchestration import metadata

    from components.leaderboard import markdown_table
    from pipelines import results

    root = Path(args.pipeline_root).resolve()
    metadata_path = Path(args.metadata) if args.metadata else root.parent / "metadata.sqlite"
    if not metadata_path.is_file():
        print(f"kd: error: no ML Metadata store at {metadata_path} (give --metadata)", file=sys.stderr)
        return 2
    artifacts = results.latest_artifacts(metadata.sqlite_metadata_connection_config(str(metadata_path)),
                                         args.pipeline_name or root.parent.name)
    output = args.output or str(root.parent / "report")
    rows = results.regenerate_report(artifacts, output)
    print(f"kd: report written to {output}/report.html\n\n{markdown_table(rows)}")
    return 0


def _compile(args: argparse.Namespace) -> int:
    from pipelines import kubeflow_runner
    from pipelines.revision import code_revision

    preset = presets.resolve(args.preset, args.overrides)
    output = args.output or kubeflow_runner.default_output(preset)
    try:
        path = kubeflow_runner.compile_pipeline(
            preset, args.pipeline_root, args.image, output, code_revision(),
            beam_pipeline_args=args.beam_args or kubeflow_runner.DEFAULT_BEAM_ARGS, enable_cache=not args.no_cache)
    except kubeflow_runner.OptionError as error:
        print(f"kd: error: {error}", file=sys.stderr)
        return 2
    print(f"kd: pipeline '{kubeflow_runner.pipeline_name(preset)}' ({args.target}) written to {path}\n"
          f"  image:         {args.image}\n  pipeline root: {args.pipeline_root}\n"
          f"  submit:        kd submit {path} --host KFP_HOST  (or upload it in the Kubeflow or Vertex AI UI)")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from pipelines import kubeflow_runner

    try:
        submission = kubeflow_runner.submit(
            args.package, args.host, experiment=args.experiment,
            run_name=args.run_name or kubeflow_runner.timestamped(Path(args.package).stem),
            version_name=args.version_name or kubeflow_runner.timestamped(Path(args.package).stem),
            namespace=args.namespace, pipeline_root=args.pipeline_root,
            enable_caching=False if args.no_cache else None)
    except kubeflow_runner.OptionError as error:
        print(f"kd: error: {error}", file=sys.stderr)
        return 2
    print(f"kd: run {submission.run_id} started on {args.host} (experiment {submission.experiment_id}, "
          f"pipeline {submission.pipeline_id}, version {submission.version_id})\n"
          f"  follow it at {args.host.rstrip('/')}/#/runs/details/{submission.run_id}")
    return 0


TEACHER_NODE_SUFFIX = ".Trainer.teacher"


def recorded_teachers(metadata_path: Path) -> list[dict]:
    """Every live teacher Model that a Trainer.teacher recorded in one ML Metadata store, oldest first,
    with its configuration (trainer_config.json) and validation top-1 (history.json)."""
    import tensorflow as tf
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tfx.orchestration import metadata

    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(str(metadata_path)))
    teachers = []
    for context in store.get_contexts_by_type("node"):
        if not context.name.endswith(TEACHER_NODE_SUFFIX):
            continue
        executions = store.get_executions_by_context(context.id)
        outputs = sorted({e.artifact_id for e in store.get_events_by_execution_ids([x.id for x in executions])
                          if e.type == metadata_store_pb2.Event.OUTPUT})
        for artifact in store.get_artifacts_by_id(outputs):
            config_path = os.path.join(artifact.uri, "trainer_config.json")
            if artifact.state != metadata_store_pb2.Artifact.LIVE or not tf.io.gfile.exists(config_path):
                continue  # not a Model (e.g. the ModelRun), or one whose Trainer did not finish
            with tf.io.gfile.GFile(config_path) as f:
                config = json.load(f)
            with tf.io.gfile.GFile(os.path.join(artifact.uri, "history.json")) as f:
                curve = [epoch["val_accuracy"] for epoch in json.load(f) if epoch.get("stage", "main") == "main"]
            teachers.append({"uri": artifact.uri, "pipeline": context.name.removesuffix(TEACHER_NODE_SUFFIX),
                             "created": time.strftime("%Y-%m-%d %H:%M", time.gmtime(
                                 artifact.create_time_since_epoch / 1000)),
                             "last": curve[-1] if curve else None, "best": max(curve) if curve else None,
                             "config": config})
    return teachers


def _teachers(args: argparse.Namespace) -> int:
    from pipelines import local_runner

    if args.metadata:
        stores = [Path(args.metadata)]
    else:
        stores = sorted(Path(args.output_dir or local_runner.DEFAULT_OUTPUT_DIR).glob("*/metadata.sqlite"))
    missing = [str(s) for s in stores if not s.is_file()]
    if missing or not stores:
        print(f"kd: error: no ML Metadata store at {', '.join(missing) or f'{args.output_dir or local_runner.DEFAULT_OUTPUT_DIR}/*/metadata.sqlite'}"
              " (give --metadata or --output-dir)", file=sys.stderr)
        return 2
    teachers = [t for store in stores for t in recorded_teachers(store)]
    if args.json:
        print(json.dumps(teachers, indent=2, sort_keys=True))
        return 0
    print("| Trained (UTC) | Pipeline | Model | Epochs | Val. top-1 last / best | Diverged | Revision | URI |")
    print("|---|---|---|---|---|---|---|---|")
    for t in teachers:
        config, accuracy = t["config"], ("-" if t["last"] is None else f"{t['last']:.4f} / {t['best']:.4f}")
        print(f"| {t['created']} | {t['pipeline']} | {config['model']} | {config['epochs']} | {accuracy} | "
              f"{'yes' if config.get('divergence') else 'no'} | {config.get('code_revision', '?')} | {t['uri']} |")
    print(f"\n{len(teachers)} teacher(s). Reuse one: kd run --set teacher.import_from=URI --set teacher.model=MODEL "
          "(--json prints every configuration)")
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

    compile_ = commands.add_parser("compile", help="compile a preset's pipeline for Kubeflow Pipelines / Vertex AI")
    compile_.add_argument("--target", choices=["kubeflow"], default="kubeflow",
                          help="kubeflow: a KFP v2 pipeline definition (YAML) for Kubeflow Pipelines and Vertex AI")
    compile_.add_argument("--preset", default="quick", help=f"one of {', '.join(presets.PRESETS)} (default quick)")
    compile_.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="override a preset field, e.g. --set resources.student_gpus=0 (repeatable)")
    compile_.add_argument("--pipeline-root", required=True, help="where artifacts go, e.g. gs://BUCKET/kd")
    compile_.add_argument("--image", required=True,
                          help="the pipeline image built from the Dockerfile, e.g. REGISTRY/kd-benchmark:TAG")
    compile_.add_argument("--beam-arg", dest="beam_args", action="append", default=[],
                          help="Beam pipeline argument for the Beam components (repeatable; default: the "
                               "DirectRunner in multi-processing mode on all cores of each pod)")
    compile_.add_argument("--output", help="the YAML file to write (default outputs/kubeflow/kd-<preset>.yaml)")
    compile_.add_argument("--no-cache", action="store_true", help="compile with caching off for every task")
    compile_.set_defaults(handler=_compile)

    submit = commands.add_parser("submit", help="upload a compiled pipeline to Kubeflow Pipelines and start a run")
    submit.add_argument("package", help="the YAML file written by `kd compile`")
    submit.add_argument("--host", required=True, help="the Kubeflow Pipelines API endpoint, e.g. http://localhost:8080")
    submit.add_argument("--experiment", default="kd-benchmark", help="experiment of the run (default kd-benchmark)")
    submit.add_argument("--run-name", help="default: the pipeline name and the time")
    submit.add_argument("--version-name", help="name of the uploaded pipeline version (default: name and time)")
    submit.add_argument("--namespace", help="Kubernetes namespace (multi-user Kubeflow)")
    submit.add_argument("--pipeline-root", help="override the pipeline root given at compile time")
    submit.add_argument("--no-cache", action="store_true", help="run every task again, even if cached")
    submit.set_defaults(handler=_submit)

    report = commands.add_parser("report", help="regenerate the leaderboard and HTML report of a finished run")
    report.add_argument("pipeline_root", help="the run's pipeline root, e.g. outputs/kd-quick/root")
    report.add_argument("--metadata", help="ML Metadata SQLite file (default: beside the pipeline root)")
    report.add_argument("--pipeline-name", help="default: the folder above the pipeline root (kd-<preset>)")
    report.add_argument("--output", help="folder for the report (default: beside the pipeline root, report/)")
    report.set_defaults(handler=_report)

    teachers = commands.add_parser("teachers", help="list the teachers recorded in ML Metadata stores, to reuse one")
    teachers.add_argument("--metadata", help="one ML Metadata SQLite file (default: every outputs/*/metadata.sqlite)")
    teachers.add_argument("--output-dir", help="folder of pipeline runs (default ./outputs)")
    teachers.add_argument("--json", action="store_true", help="print every teacher with its full configuration")
    teachers.set_defaults(handler=_teachers)

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
