"""The HTML report: self-contained, plots inline, opened in a real headless Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from relshard.report.compare import compare_stats
from relshard.report.report_html import render_html
from relshard.report.stats import compute_stats
from tests.unit.report.browser import find_chromium, open_page
from tests.unit.report.builds import write_build

needs_chromium = pytest.mark.skipif(
    find_chromium() is None,
    reason="no chromium on PATH (Debian: apt-get install chromium); .ci/run installs it")


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("html")
    old = compute_stats(str(write_build(tmp / "a")))
    new = compute_stats(str(write_build(tmp / "b", n_image=3, rejects=4, backend="openai")))
    path = tmp / "report.html"
    path.write_text(render_html(new, compare_stats(old, new)), encoding="utf-8")
    return path


def test_report_is_self_contained(report_file: Path) -> None:
    page = report_file.read_text()
    assert "<script" not in page
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing fetched from anywhere
    assert page.count('src="data:image/png;base64,') >= 10
    assert "Compared with" in page and "new backend: &#x27;openai&#x27;" in page


def test_escapes_text_from_the_data(tmp_path: Path) -> None:
    stats = compute_stats(str(write_build(tmp_path / "x")))
    stats.backend = {"<script>alert(1)</script>": 1}
    page = render_html(stats)
    assert "<script>" not in page and "&lt;script&gt;" in page


@needs_chromium
def test_report_opens_in_chromium_with_plots_and_no_errors(report_file: Path) -> None:
    page = open_page(report_file)
    assert page.errors == []
    assert page.title.startswith("relshard stats:")
    assert len(page.images) >= 10 and page.loaded_images == len(page.images)
    assert all(img["w"] > 100 and img["alt"] for img in page.images)
    assert page.tables >= 5
    for needle in ("samples", "subjects per sample", "Compared with", "decode: corrupt"):
        assert needle in page.text


@needs_chromium
def test_browser_check_catches_broken_pages(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text('<html><head><title>t</title></head><body><img alt="x" '
                   'src="data:image/png;base64,AAAA"><script>console.error("boom");'
                   "undefinedFunction();</script></body></html>")
    page = open_page(bad)
    assert page.loaded_images == 0 and len(page.images) == 1
    assert any("boom" in e for e in page.errors)
    assert any(e.startswith("exception:") for e in page.errors)
