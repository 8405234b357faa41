"""The gallery page: escaped text, rejects, empty outputs, --compare, the CLI, stats --html."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from relshard.cli import app
from relshard.report.gallery.build import GalleryOptions, build_gallery
from relshard.report.gallery.card import highlight_placeholders
from relshard.report.gallery.rejects import thumbnail
from relshard.report.gallery.timeline import Edge, load_npy, timeline_svg
from tests.unit.report.gallery_builds import OPENAI, npy, write_gallery_build

runner = CliRunner()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gallery_build(tmp_path_factory.mktemp("page") / "out")


@pytest.fixture(scope="module")
def page(built: Path) -> str:
    return build_gallery(str(built), GalleryOptions()).html


def test_self_contained_and_escaped(page: str) -> None:
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<b>bold</b>" not in page
    assert not re.search(r'src="(?!data:)', page)  # nothing fetched
    assert not re.search(r'href="(?!file:)', page)  # only links to the local shards


def test_sample_parts(page: str) -> None:
    assert page.count('class="card"') >= 6
    assert "S1 · detector" in page and "S2 · model" in page and "S2 · both" in page
    assert 'class="box attr"' in page  # the grounded attribute's box
    assert "—wears→" in page and "—excites <b>0.48</b>→" in page
    assert '<mark class="ph"' in page and "{S1}" in page
    assert "qwen-vl" not in page and "hawkes" in page and "multivariate Hawkes" in page
    assert "not read: mp4 (3,000 B)" in page
    assert re.search(r"tail -c \+\d+ \S+shards/g0-000\d\.tar \| head -c \d+ \| tar -tv", page)
    assert page.count('<svg class="timeline"') == 1
    assert "excitation edges" in page


def test_rejects_section(page: str) -> None:
    section = page[page.index('id="rejects"'):]
    assert "Rejects (4 inputs)" in section
    assert section.count("<img") == 1  # only the local image that exists has a thumbnail
    assert "<details><summary>raw model output (10,050 chars)</summary>" in section
    assert "more chars)</pre>" in section  # folded and truncated
    assert "no_subjects" in section and "invalid_answer" in section


def test_thumbnails_never_crash(tmp_path: Path) -> None:
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert thumbnail(str(tmp_path / "junk.png")) is None
    assert thumbnail((tmp_path / "missing.jpg").as_uri()) is None
    assert thumbnail("s3://bucket/x.jpg") is None
    assert thumbnail(str(tmp_path)) is None
    from tests.conftest import png_bomb

    assert thumbnail(str(png_bomb(tmp_path / "bomb.png"))) is None


def test_placeholders_and_timeline() -> None:
    marked = highlight_placeholders("{S1} <i>wears</i> {A2}")
    assert marked.count('<mark class="ph"') == 2 and "&lt;i&gt;" in marked
    times = load_npy(npy(np.linspace(0.0, 10.0, 5000)))
    types = load_npy(npy(np.arange(5000) % 3))
    assert times is not None and types is not None
    svg = timeline_svg(times, types, {0: "<a>"}, lambda t: "#123456", [Edge(0, 1, 0.5, 0.9)])
    assert svg.startswith("<svg") and "&lt;a&gt;" in svg and len(svg) < 60_000
    assert load_npy(b"\x93NUMPY junk") is None
    obj = np.array([{"a": 1}], dtype=object)
    import io

    buf = io.BytesIO()
    np.save(buf, obj, allow_pickle=True)
    assert load_npy(buf.getvalue()) is None  # never unpickled


def test_only_rejects_and_empty_outputs(tmp_path: Path) -> None:
    only = write_gallery_build(tmp_path / "rej", samples=False)
    result = runner.invoke(app, ["show", str(only)])
    assert result.exit_code == 0, result.output
    assert "This output has no samples: all 4 inputs were rejected" in result.output
    page = (only / "gallery.html").read_text()
    assert "This output has no samples" in page and "Rejects (4 inputs)" in page
    empty = write_gallery_build(tmp_path / "empty", samples=False, rejects=False)
    result = runner.invoke(app, ["show", str(empty), "-o", str(tmp_path / "e.html")])
    assert result.exit_code == 0 and "no samples and no rejects" in result.output


def test_cli(built: Path, tmp_path: Path) -> None:
    out = tmp_path / "g.html"
    result = runner.invoke(app, ["show", str(built), "--n", "2", "--seed", "4", "-o", str(out),
                                 "--where", "subjects>=2"])
    assert result.exit_code == 0, result.output
    assert f"gallery written to {out}" in result.output
    assert out.read_text().count('class="card"') == 2 + 4  # two samples, four rejects
    nested = tmp_path / "new" / "folder" / "g.html"  # missing folders are made
    assert runner.invoke(app, ["show", str(built), "-q", "-o", str(nested)]).exit_code == 0
    assert nested.is_file()
    default = runner.invoke(app, ["show", str(built), "-q"])
    assert default.exit_code == 0 and (built / "gallery.html").is_file()
    (built / "gallery.html").unlink()
    for args, words in [(["show", str(tmp_path / "nope")], "does not exist"),
                        (["show", str(built), "-w", "colour=red"], "unknown field"),
                        (["show", str(built), "-o", str(tmp_path)],  # a folder
                         "Cannot write the gallery")]:
        bad = runner.invoke(app, args)
        assert bad.exit_code == 2 and words in bad.output, bad.output
        assert "Traceback" not in bad.output


def test_progress_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from relshard import cli_support

    monkeypatch.setattr(cli_support, "err", Console(stderr=True, force_terminal=False))
    assert cli_support.show_progress(quiet=False) is False  # a pipe or a file: no bars
    monkeypatch.setattr(cli_support, "err", Console(stderr=True, force_terminal=True))
    assert cli_support.show_progress(quiet=True) is False  # --quiet
    assert cli_support.show_progress(quiet=False) is True
    seen: list[int] = []
    with cli_support.progress_bars(quiet=False) as bar:
        advance = bar("reading samples", 3)
        advance(2)
        seen.append(2)
    with cli_support.progress_bars(quiet=True) as bar:
        bar("reading samples", 3)(1)  # a no-op, never raises
    assert seen == [2]


def test_compare_two_backends(tmp_path: Path) -> None:
    a = write_gallery_build(tmp_path / "heur")
    b = write_gallery_build(tmp_path / "vlm", n_images=2, backend=OPENAI, rejects=False)
    result = build_gallery(str(a), GalleryOptions(compare=str(b), where=["modality=image"]))
    assert result.shown == 4
    page = result.html
    assert page.count('<div class="pair">') == 2 and page.count('class="pairwrap"') == 2
    assert "2 of 4 shown keys exist in both runs" in page
    assert page.count("qwen-vl") == 2 and f"not in {b}" in page


def test_stats_html_embeds_a_sample_strip(built: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    result = runner.invoke(app, ["stats", str(built), "--html", str(report), "--records", "0"])
    assert result.exit_code == 0, result.output
    text = report.read_text()
    assert '<div class="gstrip">' in text and "6 random samples." in text
    assert f"relshard show {built}" in text
    assert text.count('src="data:image/jpeg;base64,') >= 5


def test_stats_html_compare_shows_the_same_keys_of_both_runs(tmp_path: Path) -> None:
    a = write_gallery_build(tmp_path / "heur")
    b = write_gallery_build(tmp_path / "vlm", n_images=2, backend=OPENAI, rejects=False)
    report = tmp_path / "report.html"
    result = runner.invoke(app, ["stats", str(a), "--html", str(report), "--records", "0",
                                 "--compare", str(b)])
    assert result.exit_code == 0, result.output
    text = report.read_text()
    assert f"Samples of {a}" in text and f"The same keys in {b}" in text
    strips = text.split('<div class="gstrip">')[1:]
    keys = [re.findall(r"<figcaption><b>([a-z0-9_-]+)</b>", s) for s in strips]
    assert len(keys) == 2 and keys[0] == keys[1] and len(keys[0]) >= 2
