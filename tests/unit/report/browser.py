"""Open a page in headless Chromium and report what a user would see, over the DevTools protocol.

Chromium (Debian's ``chromium``) starts with a fresh profile, no network
services and ``--remote-debugging-port=0`` (loopback); the port is read from the
profile's ``DevToolsActivePort`` file. One websocket to the page target enables
the Runtime, Log and Page domains, navigates, polls (with a deadline) until the
document is complete, then evaluates what loaded. Console errors, uncaught
exceptions and error log entries (a resource that failed to load) are collected
throughout.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
    "--disable-default-apps", "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PROBE = """JSON.stringify({
  title: document.title,
  images: Array.from(document.images).map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0,
                                                   w: i.naturalWidth})),
  svgs: document.querySelectorAll('svg').length,
  tables: document.querySelectorAll('table').length,
  text: document.body ? document.body.innerText : ''
})"""


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageReport:
    title: str = ""
    images: list[dict[str, Any]] = field(default_factory=list)
    svgs: int = 0
    tables: int = 0
    text: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def loaded_images(self) -> int:
        return sum(1 for i in self.images if i["ok"])


def _wait_port(profile: Path, proc: subprocess.Popen, deadline: float) -> int:
    marker = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}")
        if marker.exists():
            lines = marker.read_text().splitlines()
            if lines and lines[0].isdigit():
                return int(lines[0])
        time.sleep(0.05)
    raise TimeoutError("chromium did not open its DevTools port")


Call = Callable[..., Awaitable[dict[str, Any]]]


@asynccontextmanager
async def devtools_page(port: int, report: PageReport, timeout: float) -> AsyncIterator[Call]:
    """One websocket to the page target with the Runtime, Log and Page domains enabled;
    yields ``call(method, **params)`` (the reply), collecting errors into ``report``."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = await resp.json()
        ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        async with http.ws_connect(ws_url, max_msg_size=0) as ws:
            counter = 0

            async def call(method: str, **params: Any) -> dict[str, Any]:
                nonlocal counter
                counter += 1
                ask = counter
                await ws.send_json({"id": ask, "method": method, "params": params})
                while True:
                    msg = json.loads((await ws.receive(timeout=timeout)).data)
                    _collect(msg, report)
                    if msg.get("id") == ask:
                        return msg

            for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
                await call(domain)
            yield call


async def load(call: Call, url: str, timeout: float, also: str = "") -> None:
    """Navigate to ``url`` and poll (with a deadline) until the document has fully loaded
    and the JavaScript expression ``also`` (if any) is true."""
    nav = await call("Page.navigate", url=url)
    if nav.get("result", {}).get("errorText"):
        raise RuntimeError(f"navigation failed: {nav['result']['errorText']}")
    expression = "document.readyState + ' ' + location.href"
    expected = f"complete {url}"
    if also:
        expression += f" + ' ' + ({also})"
        expected += " true"
    deadline = time.monotonic() + timeout
    while True:
        state = await call("Runtime.evaluate", returnByValue=True, expression=expression)
        if state["result"]["result"].get("value") == expected:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not finish loading")
        await asyncio.sleep(0.05)


async def evaluate_json(call: Call, expression: str) -> Any:
    """The value of a JavaScript expression that returns a JSON string."""
    reply = await call("Runtime.evaluate", expression=expression, returnByValue=True)
    return json.loads(reply["result"]["result"]["value"])


async def _inspect(port: int, url: str, timeout: float) -> PageReport:
    report = PageReport()
    async with devtools_page(port, report, timeout) as call:
        await load(call, url, timeout)
        data = await evaluate_json(call, PROBE)
    report.title, report.images, report.svgs = data["title"], data["images"], data["svgs"]
    report.tables, report.text = data["tables"], data["text"]
    return report


def _collect(msg: dict[str, Any], report: PageReport) -> None:
    method, params = msg.get("method"), msg.get("params", {})
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        report.errors.append("console: " + " ".join(
            str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
    elif method == "Runtime.exceptionThrown":
        report.errors.append("exception: " + params["exceptionDetails"].get("text", ""))
    elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
        report.errors.append("log: " + params["entry"].get("text", ""))


@contextmanager
def running_chromium(timeout: float = 60.0) -> Iterator[int]:
    """A headless Chromium with a fresh profile; yields its DevTools port, then stops it."""
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError("chromium")
    with tempfile.TemporaryDirectory(prefix="relshard-chromium-",
                                     ignore_cleanup_errors=True) as tmp:
        profile = Path(tmp)
        proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            yield _wait_port(profile, proc, time.monotonic() + timeout)
        finally:
            _stop(proc)


def open_page(path: Path, timeout: float = 60.0) -> PageReport:
    """Load ``path`` in headless Chromium and report what loaded and every error."""
    with running_chromium(timeout) as port:
        return asyncio.run(_inspect(port, path.resolve().as_uri(), timeout))


def _stop(proc: subprocess.Popen) -> None:
    """End the browser we started and its helper processes (its own process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=10)
            break
        except subprocess.TimeoutExpired:
            continue
