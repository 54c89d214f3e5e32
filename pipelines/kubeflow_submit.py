"""`kd submit`: uploads a compiled pipeline to a Kubeflow Pipelines host and starts a run.

A thin client over kfp.Client (2.5) that asks each request once and reports a failure as one
`SubmitError` line: the step, the HTTP status and what to do. The package is the YAML file that
`kd compile` writes (pipelines/kubeflow_runner.py); see docs/kubeflow.md.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import tempfile
from pathlib import Path
from typing import Any, Callable

import kfp
import kfp_server_api
import urllib3
import yaml


class OptionError(ValueError):
    """A `kd compile` / `kd submit` option is invalid (the message names it)."""


class SubmitError(RuntimeError):
    """A request to the Kubeflow Pipelines host failed (one line: the step, the HTTP status, what to do)."""


STATUS_HINTS = {
    401: "the host wants credentials: give --token, --token-file, --cookies, --iap-client-id or --sa-token-path",
    403: "the credentials are not allowed this: check the profile / --namespace they may use",
    404: "no Kubeflow Pipelines API at this path: --host must be the API endpoint (e.g. http://localhost:8080 "
         "after `kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`)",
    409: "the name exists already: choose another --version-name",
}


def _hint(status: int) -> str:
    if status in STATUS_HINTS:
        return STATUS_HINTS[status]
    if status >= 500:
        return "the server failed: see the ml-pipeline pod's log (kubectl logs -n kubeflow deploy/ml-pipeline)"
    return "see the server's message above"


def _server_message(body: Any) -> str:
    """The `message` / `error` of a KFP error body, else its start (bodies may be JSON or text)."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    text = str(body or "").strip()
    try:
        parsed = json.loads(text)
        text = str(parsed.get("message") or parsed.get("error") or text) if isinstance(parsed, dict) else text
    except json.JSONDecodeError:
        pass
    return " ".join(text.split())[:300]


@dataclasses.dataclass(frozen=True)
class Auth:
    """How `kd submit` authenticates, as kfp.Client supports it (at most one of the first four)."""

    token: str | None = None  # an existing bearer token
    token_file: str | None = None  # a file holding one (e.g. a service account token)
    iap_client_id: str | None = None  # OAuth client id of an IAP-protected endpoint (Google Cloud)
    sa_token_path: str | None = None  # a projected service account token, re-read on every request
    cookies: str | None = None  # e.g. "authservice_session=..." (Dex / oauth2-proxy login)
    ssl_ca_cert: str | None = None

    def client_arguments(self) -> dict[str, Any]:
        chosen = [name for name in ("token", "token_file", "iap_client_id", "sa_token_path") if getattr(self, name)]
        if len(chosen) > 1:
            raise OptionError(f"give one of --token, --token-file, --iap-client-id, --sa-token-path; got {chosen}")
        arguments: dict[str, Any] = {}
        if self.token:
            arguments["existing_token"] = self.token
        if self.token_file:
            path = Path(self.token_file).expanduser()
            token = path.read_text().strip() if path.is_file() else ""
            if not token:
                raise OptionError(f"--token-file {self.token_file}: no such file, or it is empty")
            arguments["existing_token"] = token
        if self.iap_client_id:
            arguments["client_id"] = self.iap_client_id
        if self.sa_token_path:
            if not Path(self.sa_token_path).is_file():
                raise OptionError(f"--sa-token-path {self.sa_token_path}: no such file")
            arguments["credentials"] = kfp.client.ServiceAccountTokenVolumeCredentials(path=self.sa_token_path)
        if self.cookies:
            arguments["cookies"] = self.cookies
        if self.ssl_ca_cert:
            arguments["ssl_ca_cert"] = self.ssl_ca_cert
        return arguments


class _OneAttemptClient(kfp.Client):
    """kfp.Client (2.5) that asks once and lets errors through.

    kfp.Client checks the host's health five times, 5 s apart, and then raises a
    TimeoutError that hides the HTTP status (401 reads as a time-out); urllib3 retries a
    refused connection. `submit` reports the first failure with its status instead.
    """

    def _load_config(self, *args: Any, **kwargs: Any) -> Any:
        config = super()._load_config(*args, **kwargs)
        config.retries = urllib3.Retry(total=1, backoff_factor=0, raise_on_status=False)
        return config

    def get_kfp_healthz(self, sleep_duration: int = 5) -> Any:
        return self._healthz_api.get_healthz()


def kfp_client(host: str, namespace: str | None, auth: Auth) -> kfp.Client:
    arguments = auth.client_arguments()
    if namespace:
        arguments["namespace"] = namespace
    return _OneAttemptClient(host=host, **arguments)


def _request(step: str, host: str, call: Callable[[], Any]) -> Any:
    """`call()`, its failure as one SubmitError line naming the step, the HTTP status and what to do."""
    try:
        return call()
    except kfp_server_api.ApiException as error:
        if not error.status:  # kfp_server_api's code for a TLS failure
            raise SubmitError(f"{step}: TLS error talking to {host} ({error.reason}): check --ssl-ca-cert") from error
        message = _server_message(error.body)
        raise SubmitError(f"{step}: HTTP {error.status} {error.reason or ''} from {host}"
                          f"{': ' + message if message else ''}; {_hint(error.status)}") from error
    except urllib3.exceptions.HTTPError as error:
        reason = getattr(error, "reason", None) or error
        raise SubmitError(f"{step}: no answer from {host} ({type(reason).__name__}): check --host, or reach the "
                          f"cluster with `kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`") from error


@dataclasses.dataclass(frozen=True)
class Submission:
    """What `submit` created on the Kubeflow Pipelines host."""

    pipeline_id: str
    version_id: str
    experiment_id: str
    run_id: str


def parse_parameters(spec: dict[str, Any], assignments: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`NAME=VALUE` strings as typed values of the package's pipeline parameters."""
    declared = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    kinds = {"NUMBER_INTEGER": int, "NUMBER_DOUBLE": float, "STRING": str}
    values = {}
    for assignment in assignments:
        name, separator, raw = assignment.partition("=")
        if not separator or name not in declared:
            raise OptionError(f"--param {assignment!r}: expected NAME=VALUE with NAME one of {sorted(declared)}")
        kind = kinds[declared[name]["parameterType"]]
        try:
            values[name] = kind(raw)
        except ValueError:
            raise OptionError(f"--param {name}: expected {kind.__name__}, got {raw!r}") from None
    return values


def _with_caching(spec_text: str, enable_caching: bool) -> str:
    """The package with every task's caching set: kfp.Client 2.5 drops `enable_caching` for an uploaded version."""
    documents = list(yaml.safe_load_all(spec_text))
    for task in documents[0]["root"]["dag"]["tasks"].values():
        task["cachingOptions"] = {"enableCache": enable_caching}
    return yaml.safe_dump_all(documents, sort_keys=True)


def submit(package: str | Path, host: str, experiment: str, run_name: str, version_name: str,
           namespace: str | None = None, pipeline_root: str | None = None, enable_caching: bool | None = None,
           parameters: dict[str, Any] | None = None, auth: Auth = Auth(),
           client_factory: Callable[[str, str | None, Auth], Any] | None = None) -> Submission:
    """Uploads a compiled pipeline (a new pipeline, else a new version of it) and starts a run of that version.

    The pipeline is named by the package (`kd-<preset>`); in multi-user Kubeflow it is looked
    up and uploaded in `namespace`. `pipeline_root` None: the root given at compile time;
    `enable_caching` None: as compiled, else written into every task of the uploaded version.
    `parameters`: pipeline parameter values of this run. Failures raise SubmitError.
    `client_factory(host, namespace, auth)` builds the client (default kfp_client, looked up
    at call time so tests can replace it).
    """
    package = Path(package)
    if not package.is_file():
        raise OptionError(f"no compiled pipeline at {package} (run `kd compile` first)")
    text = package.read_text()
    spec = next(yaml.safe_load_all(text))
    name = spec["pipelineInfo"]["name"]
    client = _request("connecting", host, lambda: (client_factory or kfp_client)(host, namespace, auth))
    with tempfile.TemporaryDirectory(prefix="kd-submit-") as folder:
        upload = package
        if enable_caching is not None:
            upload = Path(folder, package.name)
            upload.write_text(_with_caching(text, enable_caching))
        name_filter = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})
        found = _request("looking up the pipeline", host,
                         lambda: client.list_pipelines(filter=name_filter, namespace=namespace)).pipelines or []
        if len(found) > 1:
            raise SubmitError(f"{len(found)} pipelines are named {name} on {host}; delete all but one")
        if not found:
            pipeline_id = _request("uploading the pipeline", host, lambda: client.upload_pipeline(
                str(upload), pipeline_name=name, description=f"KD benchmark ({name})",
                namespace=namespace)).pipeline_id
            # A new pipeline holds exactly the version just uploaded.
            version_id = _request("reading the pipeline's version", host, lambda: client.list_pipeline_versions(
                pipeline_id)).pipeline_versions[0].pipeline_version_id
        else:
            pipeline_id = found[0].pipeline_id
            version_id = _request("uploading a pipeline version", host, lambda: client.upload_pipeline_version(
                str(upload), pipeline_version_name=version_name, pipeline_id=pipeline_id)).pipeline_version_id
    experiment_id = _request("creating the experiment", host,
                             lambda: client.create_experiment(name=experiment, namespace=namespace)).experiment_id
    run = _request("starting the run", host, lambda: client.run_pipeline(
        experiment_id=experiment_id, job_name=run_name, pipeline_id=pipeline_id, version_id=version_id,
        pipeline_root=pipeline_root, params=parameters or {}))
    return Submission(pipeline_id=pipeline_id, version_id=version_id, experiment_id=experiment_id, run_id=run.run_id)


def timestamped(name: str) -> str:
    """`name` with the UTC time, for run and version names that must not repeat."""
    return f"{name} {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S}"
