"""`kd submit` against a fake Kubeflow Pipelines API server on 127.0.0.1.

The server answers the v2beta1 REST calls kfp.Client 2.5 makes and records each request
(method, path, query, headers, body), so the tests read what really goes over the wire:
caching in the uploaded definition, the namespace of the upload, the run's parameters,
authentication headers, and the one-line error and exit status for each failure. It stops
by itself after SERVER_LIFETIME_S even if a test hangs.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from pipelines import cli, kubeflow_runner, presets

API = "/apis/v2beta1"
SERVER_LIFETIME_S = 120
FAST_FAILURE_S = 10  # kfp.Client alone took 36-67 s to fail


@dataclasses.dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


class FakeKfp:
    """A recording KFP API server. `existing`: pipelines already uploaded (id -> name); `failures`:
    "METHOD /path" -> (status, body) answers that replace the normal one; `status_for_all`: every
    request gets that error status."""

    def __init__(self, existing: dict[str, str] | None = None, failures: dict | None = None,
                 status_for_all: int | None = None):
        self.existing, self.failures, self.status_for_all = existing or {}, failures or {}, status_for_all
        self.requests: list[Request] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                url = urlparse(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.requests.append(Request(self.command, url.path, parse_qs(url.query),
                                             {k.lower(): v for k, v in self.headers.items()}, body))
                status, payload = fake.route(self.command, url.path, parse_qs(url.query))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.stopper = threading.Timer(SERVER_LIFETIME_S, self.server.shutdown)

    def route(self, method: str, path: str, query: dict) -> tuple[int, dict]:
        if self.status_for_all:
            return self.status_for_all, {"error": "denied", "code": 16, "message": "Unauthenticated"}
        if f"{method} {path}" in self.failures:
            return self.failures[f"{method} {path}"]
        if path == f"{API}/healthz":
            return 200, {"multi_user": False}
        if method == "GET" and path == f"{API}/pipelines":
            name = json.loads(query["filter"][0])["predicates"][0]["stringValue"]
            found = [{"pipeline_id": i, "display_name": n} for i, n in self.existing.items() if n == name]
            return 200, {"pipelines": found, "total_size": len(found)} if found else {}
        if path == f"{API}/pipelines/upload":
            return 200, {"pipeline_id": "p-new", "display_name": query["name"][0]}
        if path == f"{API}/pipelines/upload_version":
            return 200, {"pipeline_id": query["pipelineid"][0], "pipeline_version_id": "v-next"}
        if path == f"{API}/pipelines/p-new/versions":
            return 200, {"pipeline_versions": [{"pipeline_id": "p-new", "pipeline_version_id": "v-first"}]}
        if method == "GET" and path == f"{API}/experiments":
            return 200, {}
        if method == "POST" and path == f"{API}/experiments":
            return 200, {"experiment_id": "e-1", **json.loads(self.requests[-1].body)}
        if method == "POST" and path == f"{API}/runs":
            return 200, {"run_id": "r-1"}
        return 404, {"error": f"no route {method} {path}", "message": "Not Found"}

    def __enter__(self) -> FakeKfp:
        self.thread.start()
        self.stopper.start()
        return self

    def __exit__(self, *exc):
        self.stopper.cancel()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def calls(self) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.requests]

    def one(self, method: str, path: str) -> Request:
        (request,) = [r for r in self.requests if (r.method, r.path) == (method, path)]
        return request


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    preset = presets.resolve("smoke", ["methods=soft_logits", "data.data_dir=gs://bucket/cifar-100"])
    return kubeflow_runner.compile_pipeline(preset, "gs://bucket/root", "registry/kd:1",
                                            tmp_path_factory.mktemp("package") / "kd-smoke.yaml", "rev").path


def submit(package: Path, host: str, *options: str) -> tuple[int, float]:
    started = time.perf_counter()
    code = cli.main(["submit", str(package), "--host", host, "--run-name", "run 1", "--version-name", "v2", *options])
    return code, time.perf_counter() - started


def uploaded_spec(request: Request) -> dict:
    """The pipeline definition inside a multipart upload body."""
    text = request.body.decode()
    start = text.index("pipelineInfo") if "pipelineInfo" in text else 0
    document = text[text.rindex("\r\n\r\n", 0, start) + 4:text.index("\r\n--", start)]
    return next(yaml.safe_load_all(document))


def test_first_submit_uploads_the_pipeline_and_runs_its_version_with_parameters(package, capsys):
    with FakeKfp() as server:
        code, _ = submit(package, server.host, "--param", "student_epochs=3", "--param", "data_dir=gs://b/other",
                         "--pipeline-root", "gs://bucket/other-root")
    assert code == 0 and "run r-1 started" in capsys.readouterr().out
    assert server.calls() == [f"GET {API}/healthz", f"GET {API}/pipelines", f"POST {API}/pipelines/upload",
                              f"GET {API}/pipelines/p-new/versions", f"GET {API}/experiments",
                              f"POST {API}/experiments", f"POST {API}/runs"]
    upload = server.one("POST", f"{API}/pipelines/upload")
    assert upload.query["name"] == ["kd-smoke"] and "namespace" not in upload.query
    assert uploaded_spec(upload)["pipelineInfo"]["name"] == "kd-smoke"
    run = json.loads(server.one("POST", f"{API}/runs").body)
    assert run["pipeline_version_reference"] == {"pipeline_id": "p-new", "pipeline_version_id": "v-first"}
    assert run["runtime_config"] == {"pipeline_root": "gs://bucket/other-root",
                                     "parameters": {"student_epochs": 3, "data_dir": "gs://b/other"}}
    assert run["display_name"] == "run 1" and run["experiment_id"] == "e-1"
    assert all("authorization" not in r.headers and "cookie" not in r.headers for r in server.requests)


def test_no_cache_is_in_the_uploaded_definition(package):
    compiled = next(yaml.safe_load_all(package.read_text()))["root"]["dag"]["tasks"]
    assert all(task["cachingOptions"] == {"enableCache": True} for task in compiled.values())
    with FakeKfp(existing={"p-old": "kd-smoke"}) as server:
        code, _ = submit(package, server.host, "--no-cache")
    assert code == 0
    upload = server.one("POST", f"{API}/pipelines/upload_version")
    assert upload.query["pipelineid"] == ["p-old"] and upload.query["name"] == ["v2"]
    tasks = uploaded_spec(upload)["root"]["dag"]["tasks"]
    assert set(tasks) == set(compiled)
    assert all(task["cachingOptions"] == {"enableCache": False} for task in tasks.values())
    run = json.loads(server.one("POST", f"{API}/runs").body)
    assert run["pipeline_version_reference"] == {"pipeline_id": "p-old", "pipeline_version_id": "v-next"}


def test_namespace_applies_to_lookup_upload_and_experiment(package):
    with FakeKfp() as server:
        code, _ = submit(package, server.host, "--namespace", "team-a", "--experiment", "kd")
    assert code == 0
    assert f"GET {API}/healthz" not in server.calls()  # kfp asks for the namespace only without one
    assert server.one("GET", f"{API}/pipelines").query["namespace"] == ["team-a"]
    assert server.one("POST", f"{API}/pipelines/upload").query["namespace"] == ["team-a"]
    experiment = json.loads(server.one("POST", f"{API}/experiments").body)
    assert (experiment["display_name"], experiment["namespace"]) == ("kd", "team-a")


@pytest.mark.parametrize("option, header, expected", [
    ("--token", "authorization", "Bearer secret-token"),
    ("--cookies", "cookie", "authservice_session=abc123"),
])
def test_auth_options_reach_every_request(package, option, header, expected):
    value = expected.removeprefix("Bearer ")
    with FakeKfp() as server:
        code, _ = submit(package, server.host, option, value)
    assert code == 0 and len(server.requests) == 7
    assert all(r.headers.get(header) == expected for r in server.requests), [r.headers for r in server.requests]


@pytest.mark.parametrize("option", ["--token-file", "--sa-token-path"])
def test_token_files_are_read(package, tmp_path, option):
    token = tmp_path / "token"
    token.write_text("file-token\n")
    with FakeKfp() as server:
        code, _ = submit(package, server.host, option, str(token))
    assert code == 0
    assert all(r.headers.get("authorization") == "Bearer file-token" for r in server.requests)


def test_bad_auth_options_are_named(package, tmp_path, capsys):
    assert submit(package, "http://127.0.0.1:9", "--token-file", str(tmp_path / "none"))[0] == 2
    assert "--token-file" in capsys.readouterr().err
    assert submit(package, "http://127.0.0.1:9", "--token", "a", "--cookies", "c=1", "--sa-token-path",
                  str(package))[0] == 2
    assert "give one of --token" in capsys.readouterr().err


def test_unknown_or_mistyped_parameters_are_refused_before_any_request(package, capsys):
    for param, message in [("epochs=3", r"NAME one of \['blessing_margin'"),
                           ("student_epochs=three", "--param student_epochs: expected int")]:
        assert submit(package, "http://127.0.0.1:9", "--param", param)[0] == 2
        assert message.split("\\")[0] in capsys.readouterr().err


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("kd: error:")]
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_unauthorised_fails_at_once_with_the_status_and_what_to_give(package, capsys):
    with FakeKfp(status_for_all=401) as server:
        code, elapsed = submit(package, server.host)
    assert code == 1 and elapsed < FAST_FAILURE_S
    line = one_error_line(capsys)
    assert line.startswith("kd: error: connecting: HTTP 401 Unauthorized from http://127.0.0.1:")
    assert "Unauthenticated" in line and "--token" in line and "--cookies" in line
    assert server.calls() == [f"GET {API}/healthz"]  # once, not five times 5 s apart


def test_server_error_on_upload_names_the_step_and_the_log_to_read(package, capsys):
    failures = {f"POST {API}/pipelines/upload": (500, {"error": "db down", "message": "Internal error: db down"})}
    with FakeKfp(failures=failures) as server:
        code, elapsed = submit(package, server.host)
    assert code == 1 and elapsed < FAST_FAILURE_S
    line = one_error_line(capsys)
    assert "uploading the pipeline: HTTP 500 Internal Server Error" in line and "Internal error: db down" in line
    assert "kubectl logs -n kubeflow deploy/ml-pipeline" in line
    assert f"POST {API}/runs" not in server.calls()


def test_wrong_path_gives_404_with_the_endpoint_hint(package, capsys):
    with FakeKfp(failures={f"GET {API}/healthz": (404, {"message": "page not found"})}) as server:
        code, _ = submit(package, server.host)
    assert code == 1 and "HTTP 404" in (line := one_error_line(capsys)) and "API endpoint" in line


def test_no_server_fails_fast_with_what_to_check(package, capsys):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, elapsed = submit(package, f"http://127.0.0.1:{port}")
    assert code == 1 and elapsed < FAST_FAILURE_S
    line = one_error_line(capsys)
    assert f"connecting: no answer from http://127.0.0.1:{port}" in line and "port-forward" in line


def test_missing_package_is_an_option_error(tmp_path, capsys):
    assert submit(tmp_path / "missing.yaml", "http://127.0.0.1:9")[0] == 2
    assert "kd compile" in capsys.readouterr().err
