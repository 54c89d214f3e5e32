"""`kd`: the benchmark's command line (run a preset locally, compile it for Kubeflow and submit
it, regenerate a run's report, list presets and recorded teachers).

A failing command prints one `kd: error: ...` line (the dataset, configuration or run-folder
problem, dug out of Beam's wrapping) and writes the full traceback to a log file, or to the
terminal with --verbose. Commands that do not train (`presets`, `--help`, argument errors)
never import TensorFlow; the `pipelines` package sets TensorFlow's environment first.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

from kd_trainer.contract import CONFIG_FILE, HISTORY_FILE, LEADERBOARD_TABLE, REPORT_PAGE
from pipelines import presets


def _run(args: argparse.Namespace) -> int:
    preset = presets.resolve(args.preset, args.overrides)  # configuration errors answer before TF loads
    from pipelines import local_runner, results

    paths = local_runner.local_paths(preset, args.output_dir)
    args.log_dir = paths.output_dir / paths.pipeline_name / "logs"
    print(f"kd: running preset '{preset.name}' -> {paths.pipeline_root}", flush=True)
    started = time.perf_counter()
    local_runner.run(preset, paths, args.beam_args or None)
    elapsed = time.perf_counter() - started
    report = results.leaderboard_dir(results.latest_artifacts(paths.connection_config(), paths.pipeline_name))
    print(f"\nkd: pipeline '{paths.pipeline_name}' finished in {elapsed / 60:.1f} min")
    print(f"  artifacts:   {paths.pipeline_root}")
    print(f"  metadata:    {paths.metadata_path}")
    print(f"  leaderboard: {report}  (report.html, leaderboard.md/.csv/.json, plots)\n")
    print(Path(report, LEADERBOARD_TABLE).read_text())
    return 0


def _report(args: argparse.Namespace) -> int:
    from kd_results.tables import markdown_table
    from pipelines import results

    root = Path(args.pipeline_root).resolve()
    if not root.is_dir():
        raise results.RunFolderError(f"{root}: no pipeline root there (e.g. outputs/kd-quick/root)")
    metadata_path = Path(args.metadata) if args.metadata else root.parent / "metadata.sqlite"
    connection = results.readonly_connection_config(metadata_path)
    artifacts = results.latest_artifacts(connection, args.pipeline_name or root.parent.name)
    artifacts, relocate = results.relocated(artifacts, str(root))
    output = args.output or str(root.parent / "report")
    rows = results.regenerate_report(artifacts, output, relocate)
    print(f"kd: report written to {output}/{REPORT_PAGE}\n\n{markdown_table(rows)}")
    return 0


def _compile(args: argparse.Namespace) -> int:
    from pipelines import kubeflow_runner
    from pipelines.kubeflow_submit import OptionError
    from pipelines.revision import code_revision

    preset = presets.resolve(args.preset, args.overrides)
    output = args.output or kubeflow_runner.default_output(preset)
    try:
        beam_args = list(args.beam_args or kubeflow_runner.DEFAULT_BEAM_ARGS)
        if args.dataflow:
            beam_args = kubeflow_runner.dataflow_args(args.dataflow, args.pipeline_root, args.image) + args.beam_args
        compiled = kubeflow_runner.compile_pipeline(
            preset, args.pipeline_root, args.image, output, code_revision(), beam_pipeline_args=beam_args,
            enable_cache=not args.no_cache, allow_download=args.allow_download)
    except OptionError as error:
        print(f"kd: error: {error}", file=sys.stderr)
        return 2
    parameters = ", ".join(f"{name}={value!r}" for name, value in compiled.parameters.items())
    print(f"kd: pipeline '{compiled.name}' ({args.target}) written to {compiled.path} "
          f"({compiled.size_bytes / 1024:.0f} KiB)\n"
          f"  image:         {args.image}\n  pipeline root: {args.pipeline_root}\n"
          f"  parameters:    {parameters}\n"
          f"  submit:        kd submit {compiled.path} --host KFP_HOST [--param NAME=VALUE]  "
          f"(or upload it in the Kubeflow or Vertex AI UI)")
    if compiled.over_annotation_limit:
        print(f"kd: warning: the definition is over {kubeflow_runner.ANNOTATION_LIMIT_BYTES // 1024} KiB: Kubeflow "
              f"Pipelines backends before 2.3 cannot run it (kubeflow/pipelines#10968); use KFP >= 2.3 or fewer "
              f"trials / methods per pipeline", file=sys.stderr)
    return 0


def _submit(args: argparse.Namespace) -> int:
    import yaml

    from pipelines import kubeflow_submit

    try:
        package = Path(args.package)
        if not package.is_file():
            raise kubeflow_submit.OptionError(f"no compiled pipeline at {package} (run `kd compile` first)")
        parameters = kubeflow_submit.parse_parameters(next(yaml.safe_load_all(package.read_text())), args.params)
        auth = kubeflow_submit.Auth(token=args.token, token_file=args.token_file, iap_client_id=args.iap_client_id,
                                    sa_token_path=args.sa_token_path, cookies=args.cookies,
                                    ssl_ca_cert=args.ssl_ca_cert)
        submission = kubeflow_submit.submit(
            package, args.host, experiment=args.experiment,
            run_name=args.run_name or kubeflow_submit.timestamped(package.stem),
            version_name=args.version_name or kubeflow_submit.timestamped(package.stem),
            namespace=args.namespace, pipeline_root=args.pipeline_root,
            enable_caching=False if args.no_cache else None, parameters=parameters, auth=auth)
    except kubeflow_submit.OptionError as error:
        print(f"kd: error: {error}", file=sys.stderr)
        return 2
    except kubeflow_submit.SubmitError as error:
        print(f"kd: error: {error}", file=sys.stderr)
        return 1
    print(f"kd: run {submission.run_id} started on {args.host} (experiment {submission.experiment_id}, "
          f"pipeline {submission.pipeline_id}, version {submission.version_id})\n"
          f"  follow it at {args.host.rstrip('/')}/#/runs/details/{submission.run_id}")
    return 0


def _data_upload(args: argparse.Namespace) -> int:
    from pipelines import cluster_data

    source = Path(args.archive) if args.archive else cluster_data.default_archive()
    print(f"kd: copying {source} to {args.destination} ...", flush=True)
    try:
        upload = cluster_data.upload_archive(source, args.destination)
    except cluster_data.UploadError as error:
        print(f"kd: error: {error}", file=sys.stderr)
        return 1
    print(f"kd: {upload.destination}: {upload.size:,} bytes, sha256 {upload.sha256} (verified by reading it back)\n"
          f"  compile with: --set data.data_dir={upload.data_dir}")
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
            config_path = os.path.join(artifact.uri, CONFIG_FILE)
            if artifact.state != metadata_store_pb2.Artifact.LIVE or not tf.io.gfile.exists(config_path):
                continue  # not a Model (e.g. the ModelRun), or one whose Trainer did not finish
            with tf.io.gfile.GFile(config_path) as f:
                config = json.load(f)
            with tf.io.gfile.GFile(os.path.join(artifact.uri, HISTORY_FILE)) as f:
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
    root = argparse.ArgumentParser(prog="kd", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = root.add_subparsers(dest="command", required=True)
    failures = argparse.ArgumentParser(add_help=False)
    failures.add_argument("--verbose", action="store_true", help="on failure, print the full traceback too")
    failures.add_argument("--log-file", help="where a failure's traceback goes (default: the run's logs/ "
                                             "folder for `kd run`, else a file in the temporary folder)")

    run = commands.add_parser("run", help="run a preset's pipeline locally (BeamDagRunner)", parents=[failures])
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
                               "DirectRunner in multi-processing mode, one worker per core the pod requests)")
    compile_.add_argument("--dataflow", metavar="PROJECT/REGION",
                          help="run the Beam components on Dataflow (temp_location under the pipeline root, "
                               "the pipeline image as SDK container)")
    compile_.add_argument("--allow-download", action="store_true",
                          help="accept an empty data.data_dir: the ExampleGen pod downloads CIFAR-100 (needs "
                               "internet access from the pods)")
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
    submit.add_argument("--param", dest="params", action="append", default=[], metavar="NAME=VALUE",
                        help="a pipeline parameter of this run, e.g. student_epochs=30 (repeatable; `kd compile` "
                             "lists them)")
    auth = submit.add_argument_group("authentication (kfp.Client's options; default: none)")
    auth.add_argument("--token", help="an existing bearer token")
    auth.add_argument("--token-file", help="a file holding a bearer token")
    auth.add_argument("--cookies", help='cookies to send, e.g. "authservice_session=..." (Dex login)')
    auth.add_argument("--iap-client-id", help="OAuth client id of an IAP-protected endpoint (Google Cloud)")
    auth.add_argument("--sa-token-path", help="a projected service account token file, e.g. "
                                              "/var/run/secrets/kubeflow/pipelines/token (in the cluster)")
    auth.add_argument("--ssl-ca-cert", help="CA bundle that signs the host's TLS certificate")
    submit.set_defaults(handler=_submit)

    data = commands.add_parser("data", help="CIFAR-100 for cluster runs")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    upload = data_commands.add_parser("upload", help="copy the CIFAR-100 archive to object storage and verify it")
    upload.add_argument("destination", metavar="DEST_URI", help="a tf.io.gfile folder URI, e.g. gs://BUCKET/cifar-100")
    upload.add_argument("--archive", help="the local cifar-100-python.tar.gz (default: in $KD_CIFAR100_DIR, else "
                                          "the download cache ~/.cache/kd-benchmark/cifar-100)")
    upload.set_defaults(handler=_data_upload)

    report = commands.add_parser("report", help="regenerate the leaderboard and HTML report of a finished run",
                                 parents=[failures])
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


# Errors that describe the user's input: their message is the whole story (exit status 2 for
# configuration and options, which nothing ran with; 1 for anything that failed while running).
_USAGE_ERRORS = ("PresetError", "OptionError")
_INPUT_ERRORS = (*_USAGE_ERRORS, "DatasetError", "RunFolderError")
# "module.DatasetError: message" as it appears in the text of an exception Beam re-raised.
_BEAM_STEP = re.compile(r"(?: \[while running '[^']*'\])+$")
_EMBEDDED_ERROR = re.compile(rf"^(?:[\w.]+\.)?({'|'.join(_INPUT_ERRORS)}): (.+?)(?: \[while running '[^']*'\])*$",
                             re.MULTILINE)


def _input_error(error: BaseException) -> tuple[str, str] | None:
    """(class name, message) of the dataset/configuration/run-folder error behind `error`:
    itself, one in its cause/context chain, or one embedded in the text of a Beam error."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or error.__context__
    for item in chain:
        if type(item).__name__ in _INPUT_ERRORS:  # Beam may have appended "[while running ...]"
            return type(item).__name__, _BEAM_STEP.sub("", str(item).strip())
    for item in chain:
        found = _EMBEDDED_ERROR.findall(str(item))
        if found:
            return found[-1]
    return None


def _log_path(args: argparse.Namespace, command: str) -> Path:
    if getattr(args, "log_file", None):
        return Path(args.log_file)
    folder = getattr(args, "log_dir", None) or Path(tempfile.gettempdir()) / "kd-logs"
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(folder) / f"kd-{command}-{stamp}-{os.getpid()}.log"


def _fail(args: argparse.Namespace, error: Exception) -> int:
    """Prints one clear line for a failed command; the traceback goes to a log file (and to
    the terminal with --verbose)."""
    found = _input_error(error)
    if found and found[0] in _USAGE_ERRORS:
        print(f"kd: error: {found[1]}", file=sys.stderr)
        return 2
    message = found[1] if found else (f"{type(error).__name__}: "
                                      f"{next((line for line in str(error).splitlines() if line.strip()), '')[:500]}")
    details = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    log = _log_path(args, args.command)
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(details)
        where = f"full traceback in {log}"
    except OSError as log_error:
        where = f"the traceback could not be written to {log} ({log_error}); run with --verbose to see it"
    if getattr(args, "verbose", False):
        print(details, file=sys.stderr)
    print(f"kd: error: {message}\nkd: {where}" + ("" if getattr(args, "verbose", False) else
                                                   " (or run with --verbose)"), file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except Exception as error:  # reported as one line by _fail, with the traceback logged
        return _fail(args, error)


if __name__ == "__main__":
    sys.exit(main())
