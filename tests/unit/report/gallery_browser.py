"""Open the gallery in headless Chromium: errors, decoded images, box geometry, a screenshot.

Built on :mod:`tests.unit.report.browser` (same flags, DevTools port discovery, page
session, loading, error collection and shutdown); adds a fixed viewport, a probe of every drawn
box against its frame's rendered rectangle, and a full-page screenshot.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.unit.report.browser import (
    PageReport,
    devtools_page,
    evaluate_json,
    load,
    running_chromium,
)

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
    async with devtools_page(port, report, timeout) as call:
        await call("Emulation.setDeviceMetricsOverride", width=1280, height=1600,
                   deviceScaleFactor=1, mobile=False)
        await load(call, url, timeout, also="Array.from(document.images).every(i => i.complete)")
        data = await evaluate_json(call, PROBE)
        png = await call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        shot.write_bytes(base64.b64decode(png["result"]["data"]))
    report.title, report.images, report.svgs = data["title"], data["images"], data["svgs"]
    report.text, report.boxes, report.scripts = data["text"], data["boxes"], data["scripts"]
    return report


def open_gallery(path: Path, screenshot: Path, timeout: float = 60.0) -> GalleryPage:
    """Load ``path`` in headless Chromium, probe it and save a full-page screenshot."""
    with running_chromium(timeout) as port:
        return asyncio.run(_inspect(port, path.resolve().as_uri(), timeout, screenshot))
