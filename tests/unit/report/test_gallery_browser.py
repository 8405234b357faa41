"""The gallery in a real headless Chromium: no errors, images decoded, boxes where records say."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from relshard.cli import app
from relshard.report.gallery.build import GalleryOptions, build_gallery
from tests.unit.report.browser import find_chromium, open_page
from tests.unit.report.gallery_browser import open_gallery
from tests.unit.report.gallery_builds import EVIL, write_gallery_build

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="no chromium on PATH (Debian: apt-get install chromium); .ci/run installs it")

TOLERANCE_PX = 2.0


def _records(root: Path) -> dict[str, dict]:
    out = {}
    for shard in sorted((root / "shards").glob("*.tar")):
        with tarfile.open(shard) as tf:
            for m in tf.getmembers():
                if m.name.endswith(".json"):
                    rec = json.loads(tf.extractfile(m).read())  # type: ignore[union-attr]
                    out[rec["key"]] = rec
    return out


def _expected(rec: dict, box_id: str, frame: int) -> list[float]:
    for s in rec["subjects"]:
        if s["id"] == box_id:
            if s.get("frame", 0) == frame:
                return s["bbox"]
            return next(p["bbox"] for p in s["track"] if p["frame"] == frame)
    return next(a["bbox"] for a in rec["attributes"] if a["id"] == box_id)


def test_gallery_in_chromium(tmp_path: Path) -> None:
    root = write_gallery_build(tmp_path / "out")
    page_file = tmp_path / "gallery.html"
    page_file.write_text(build_gallery(str(root), GalleryOptions()).html, encoding="utf-8")
    shot = tmp_path / "gallery.png"
    page = open_gallery(page_file, shot)

    assert page.errors == []
    assert page.scripts == 0  # the hostile caption stayed text
    assert EVIL.split(" &")[0] in page.text
    # every image decoded: 4 stills + 3 clip frames + 8 crops + 1 reject thumbnail
    assert len(page.images) == 16
    assert all(img["ok"] and img["w"] > 0 for img in page.images), page.images
    assert page.svgs == 1  # the event window's timeline
    for needle in ("wears", "excites", "Rejects (4 inputs)", "no_subjects", "hawkes"):
        assert needle in page.text

    records = _records(root)
    assert len(page.boxes) >= 14
    styles = {}
    for b in page.boxes:
        rec = records[b["key"]]
        x0, y0, x1, y1 = _expected(rec, b["id"], b["frame"])
        left, top, width, height = b["img"]
        want = [left + x0 * width, top + y0 * height, (x1 - x0) * width, (y1 - y0) * height]
        assert b["box"] == pytest.approx(want, abs=TOLERANCE_PX), (b, want)
        if "subj" in b["cls"] and "track" not in b["cls"]:
            source = next(s.get("source", "detector") for s in rec["subjects"]
                          if s["id"] == b["id"])
            styles.setdefault(source, set()).add(b["style"])
    # the source of a box shows in its outline: solid, dashed, double
    assert styles == {"detector": {"solid"}, "model": {"dashed"}, "both": {"double"}}
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stats_report_with_its_sample_strip_in_chromium(tmp_path: Path) -> None:
    root = write_gallery_build(tmp_path / "out")
    report = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["stats", str(root), "--html", str(report)])
    assert result.exit_code == 0, result.output
    page = open_page(report)
    assert page.errors == []
    keys = set(_records(root))
    strip = [i for i in page.images if i["alt"] in keys]
    assert len(strip) == 5  # the four stills and the clip's first frame; events have none
    assert page.loaded_images == len(page.images)
    assert "Samples" in page.text and "6 random samples." in page.text
