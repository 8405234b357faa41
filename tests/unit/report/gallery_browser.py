"""Open the gallery in headless Chromium: errors, decoded images, box geometry, a screenshot.

Built on :mod:`tests.unit.report.browser` (same flags, DevTools port discovery,
error collection and shutdown); adds a fixed viewport, a probe of every drawn
box against its frame's rendered rectangle, and a full-page screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.unit.report.browser import PageReport, _collect, running_chromium

PROBE = """JSON.stringify({
  title: document.title,
  images: Array.from(document.images).map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0,
                                                   w: i.naturalWidth})),
  svgs: document.querySelectorAll('svg').length,
  text: document.body ? document.body.innerText : '',
  scripts: document.querySelectorAll('script').length,
  boxes: Array.from(document.querySelectorAll('.stage .box')).map(b => {
    const img = b.parentElement.querySelector('img').getBoundingClientRect();
    const r = b.getBoundingClientRect();
    return {key: b.closest('.card').querySelector('h3').id, id: b.dataset.id,
            frame: Number(b.dataset.frame), cls: b.className,
            style: getComputedStyle(b).borderTopStyle,
            img: [img.left, img.top, img.width, img.height],
            box: [r.left, r.top, r.width, r.height]};
  })
})"""


@dataclass
class GalleryPage(PageReport):
    boxes: list[dict[str, Any]] = field(default_factory=list)
    scripts: int = 0


async def _inspect(port: int, url: str, timeout: float, shot: Path) -> GalleryPage:
    report = GalleryPage()
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
            await call("Emulation.setDeviceMetricsOverride", width=1280, height=1600,
                       deviceScaleFactor=1, mobile=False)
            nav = await call("Page.navigate", url=url)
            if nav.get("result", {}).get("errorText"):
                raise RuntimeError(f"navigation failed: {nav['result']['errorText']}")
            deadline = time.monotonic() + timeout
            while True:  # poll (with a deadline) until the document and its images loaded
                state = await call(
                    "Runtime.evaluate", returnByValue=True,
                    expression="document.readyState + ' ' + location.href + ' ' + "
                               "Array.from(document.images).every(i => i.complete)")
                if state["result"]["result"].get("value") == f"complete {url} true":
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url} did not finish loading")
                await asyncio.sleep(0.05)
            reply = await call("Runtime.evaluate", expression=PROBE, returnByValue=True)
            data = json.loads(reply["result"]["result"]["value"])
            png = await call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            shot.write_bytes(base64.b64decode(png["result"]["data"]))
    report.title, report.images, report.svgs = data["title"], data["images"], data["svgs"]
    report.text, report.boxes, report.scripts = data["text"], data["boxes"], data["scripts"]
    return report


def open_gallery(path: Path, screenshot: Path, timeout: float = 60.0) -> GalleryPage:
    """Load ``path`` in headless Chromium, probe it and save a full-page screenshot."""
    with running_chromium(timeout) as port:
        return asyncio.run(_inspect(port, path.resolve().as_uri(), timeout, screenshot))
