"""``--where`` filters and the seeded pick of samples through the index."""

from __future__ import annotations

import html
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from relshard.report.gallery.build import GalleryOptions, build_gallery
from relshard.report.gallery.select import pick_rows
from relshard.report.gallery.where import WhereError, match_record, parse_where
from relshard.shards.layout import OutputLayout
from tests.unit.report.gallery_builds import write_gallery_build


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gallery_build(tmp_path_factory.mktemp("select") / "out")


def test_parse_where() -> None:
    cond = parse_where("subjects>=3")
    assert (cond.column, cond.op, cond.number(), cond.on_index) == ("n_subjects", ">=", 3, True)
    assert parse_where(" backend = openai ").value == "openai"
    assert not parse_where("predicate=holds").on_index
    assert parse_where("key=img*").match_text("img1-abc")
    assert not parse_where("key=img*").match_text("vid-abc")
    assert parse_where("caption~HAT").match_text("a red hat")
    for bad, words in [("foo=1", "unknown field"), ("subjects>=many", "not a number"),
                       ("modality>2", "compares numbers"), ("nothing", "FIELD OP VALUE"),
                       ("subjects~2", "contains")]:
        with pytest.raises(WhereError, match=words):
            parse_where(bad)


def test_match_record() -> None:
    rec = {"relations": [{"predicate": "wears"}], "subjects": [{"kind": "person"}],
           "attributes": [{"text": "red hat", "category": "clothing"}], "caption": "x"}
    assert match_record(rec, [parse_where("predicate=wears"), parse_where("kind=person")])
    assert match_record(rec, [parse_where("source=detector")])  # old records: detector
    assert not match_record(rec, [parse_where("predicate!=wears")])
    assert match_record(rec, [parse_where("category!=hair"), parse_where("attribute~RED")])
    assert not match_record({"relations": "junk"}, [parse_where("predicate=wears")])


def _keys(result_html: str, root: Path) -> set[str]:
    rows = [r for f in sorted((root / "index").glob("*.parquet"))
            for r in pq.read_table(f, columns=["key"]).to_pylist()]
    return {r["key"] for r in rows if f'id="{r["key"]}"' in result_html}


@pytest.mark.parametrize(("where", "shown", "prefix"), [
    (["subjects>=2"], 4, None),
    (["modality=video"], 1, "walk"),
    (["modality=events"], 1, "quakes"),
    (["key=img*"], 4, "img"),
    (["key=img*", "subjects<2"], 1, "img3"),
    (["backend!=heuristic"], 1, "quakes"),
    (["predicate=holds"], 3, "img"),
    (["predicate=holds", "source=model"], 1, "img1"),
    (["caption~<SCRIPT>"], 1, "img0"),
    (["predicate=excites", "relations>=3"], 1, "quakes"),
])
def test_where_filters(built: Path, where: list[str], shown: int, prefix: str | None) -> None:
    result = build_gallery(str(built), GalleryOptions(where=where))
    assert result.shown == shown and result.total == 6
    keys = _keys(result.html, built)
    assert len(keys) == shown
    if prefix:
        assert all(k.startswith(prefix) for k in keys)
    record_filter = any(not parse_where(w).on_index for w in where)
    assert (result.scanned > 0) == record_filter
    said = f"matching {' and '.join(str(parse_where(w)) for w in where)}"
    assert said in result.message and html.escape(said) in result.html


def test_no_match_is_one_sentence(built: Path) -> None:
    result = build_gallery(str(built), GalleryOptions(where=["backend=openai"]))
    assert result.shown == 0
    assert result.message == "No sample of 6 matches backend=openai."
    assert result.message in result.html


def test_scan_cap_is_said(built: Path) -> None:
    result = build_gallery(str(built), GalleryOptions(where=["predicate=holds"], scan=2, n=5))
    assert result.scanned == 2 and result.scan_capped and result.shown <= 2
    assert "the scan cap, --scan 2" in result.html


def test_seeded_and_bounded(built: Path) -> None:
    layout = OutputLayout.open(str(built))
    a = [r["key"] for r in pick_rows(layout, [], 3, seed=1).rows]
    assert a == [r["key"] for r in pick_rows(layout, [], 3, seed=1).rows]
    assert len(a) == 3 and len(set(a)) == 3
    seen = {tuple(r["key"] for r in pick_rows(layout, [], 3, seed=s).rows) for s in range(8)}
    assert len(seen) > 1
    everything = pick_rows(layout, [], 100, seed=0)
    assert everything.total == 6 and len(everything.rows) == 6
    assert {r["key"] for r in everything.rows} == {
        r["key"] for f in sorted((built / "index").glob("*.parquet"))
        for r in pq.read_table(f, columns=["key"]).to_pylist()}
    filtered = pick_rows(layout, [parse_where("subjects>=2")], 2, seed=0)
    assert filtered.matched == 4 and len(filtered.rows) == 2
    assert all(r["n_subjects"] >= 2 for r in filtered.rows)
    assert build_gallery(str(built), GalleryOptions(n=2)).shown == 2


def test_pick_is_uniform_over_files(tmp_path: Path) -> None:
    """Positions over the row counts of every file: each sample is about equally likely."""
    root = write_gallery_build(tmp_path / "out", n_images=8, rejects=False, max_samples=2)
    layout = OutputLayout.open(str(root))
    counts: dict[str, int] = {}
    for seed in range(300):
        for row in pick_rows(layout, [], 1, seed).rows:
            counts[row["key"]] = counts.get(row["key"], 0) + 1
    assert len(counts) == 10  # 8 images, a clip, an event window
    assert min(counts.values()) > 10 and max(counts.values()) < 60


def test_without_manifest_counts_come_from_footers(tmp_path: Path) -> None:
    root = write_gallery_build(tmp_path / "out")
    (root / "manifest.json").unlink()
    result = build_gallery(str(root), GalleryOptions(n=4, seed=3))
    assert result.shown == 4 and result.total == 6
