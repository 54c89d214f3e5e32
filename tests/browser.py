"""Headless Chromium driven over the Chrome DevTools Protocol, for tests that look at rendered pages.

The protocol needs only a WebSocket (websocket-client), so no WebDriver or browser download is involved:
Debian's `chromium` package is the browser (scripts/setup-browser.sh installs it).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import websocket

CHROMIUM = os.environ.get("KD_CHROMIUM", "chromium")
START_TIMEOUT_S = 60


class BrowserError(RuntimeError):
    """A DevTools command failed, or a page did not reach the awaited state in time."""


def chromium_path() -> str | None:
    return shutil.which(CHROMIUM)


class Browser:
    """One headless Chromium with one page; records the page's console errors and uncaught exceptions."""

    def __init__(self, profile_dir: Path, width: int = 1400, height: int = 1000):
        executable = chromium_path()
        if executable is None:
            raise BrowserError(f"no {CHROMIUM} on the PATH (scripts/setup-browser.sh installs Debian's chromium)")
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        self._process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", f"--user-data-dir={profile_dir}", f"--window-size={width},{height}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.console_errors: list[str] = []
        self._ids = itertools.count(1)
        try:
            port = self._wait_for_port(profile_dir / "DevToolsActivePort")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
                (page,) = [t for t in json.load(response) if t["type"] == "page"]
            self._socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30,
                                                       suppress_origin=True)
            for domain in ("Page", "Runtime", "Log"):
                self.command(f"{domain}.enable")
        except BaseException:
            self.close()
            raise

    def _wait_for_port(self, active_port_file: Path) -> int:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrowserError(f"{CHROMIUM} exited with status {self._process.returncode} on start")
            if active_port_file.is_file() and active_port_file.read_text().strip():
                return int(active_port_file.read_text().split()[0])
            time.sleep(0.2)
        raise BrowserError(f"{CHROMIUM} did not open its DevTools port within {START_TIMEOUT_S} s")

    def command(self, method: str, **params: Any) -> dict:
        """Sends one DevTools command and returns its result; events that arrive meanwhile are recorded."""
        command_id = next(self._ids)
        self._socket.send(json.dumps({"id": command_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv())
            if message.get("id") == command_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message["result"]
            self._record(message)

    def _record(self, event: dict) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            self.console_errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.console_errors.append(details.get("exception", {}).get("description", details["text"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            self.console_errors.append(f"{entry['source']}: {entry['text']} {entry.get('url', '')}".strip())

    def navigate(self, url: str, timeout_s: float = 60) -> None:
        """Opens url and waits for its load event."""
        self.command("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", timeout_s, f"{url} to load")

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page (promises are awaited)."""
        result = self.command("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(f"{expression[:80]}...: {details.get('exception', {}).get('description', details)}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float, what: str, paint: bool = False) -> Any:
        """Polls a JavaScript expression until it is truthy; returns its value. `paint`: draw the
        whole page before each poll, for content that lays itself out only in a painted frame."""
        deadline = time.monotonic() + timeout_s
        while True:
            if paint:
                self.paint()
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            time.sleep(0.5)

    def paint(self) -> bytes:
        """Draws the whole page, beyond the window's height, and returns it as PNG bytes. Headless
        Chromium paints when asked: TFMA's tables below the fold were not laid out in 60 s without it."""
        return base64.b64decode(self.command("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"])

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page, beyond the window's height."""
        path.write_bytes(self.paint())
        return path

    def close(self) -> None:
        if getattr(self, "_socket", None) is not None:
            self._socket.close()
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
