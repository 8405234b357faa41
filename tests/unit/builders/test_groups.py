"""Leak groups that hold: near-duplicate frames, event sequences, time cuts, never-empty splits."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from relshard.builders.benchmark import BenchmarkError, build_benchmark
from relshard.builders.evaluate import split_records
from relshard.builders.phash import close_frame_pairs
from relshard.builders.splits import SampleRow, SplitError, assign_splits, assign_time_splits
from relshard.cli import app
from relshard.record import SourceInfo, make_input_key
from relshard.shards.item import InputRef, WorkItem
from relshard.spec import DecodeSpec
from relshard.workers.decode import decode_input
from tests.conftest import SAMPLES
from tests.unit.training.shardgen import draft_of, make_event_output, write_run


def _jpeg(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return data.tobytes()


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled images and videos, decoded by relshard's own decoder, as a real run."""
    cfg = DecodeSpec(frames_per_clip=4, max_side=256, isolate=False)
    items = []
    for path in sorted(p for p in SAMPLES.rglob("*") if p.parent.name in ("images", "videos")):
        rel = str(path.relative_to(SAMPLES))
        key = make_input_key(rel)
        ref = InputRef(key, str(path), "auto", path.stat().st_size)
        clip = decode_input(ref, cfg)[0]
        data = clip.source.model_dump(exclude_none=True)
        rec = {"key": key, "source": {**data, "input_key": key}}
        frames = [_jpeg(f) for f in clip.frames]
        items.append(WorkItem(InputRef(key, str(path), clip.source.modality),
                              [draft_of(rec, frames=frames)]))
        SourceInfo.model_validate(rec["source"])
    root = tmp_path_factory.mktemp("demo") / "run"
    return write_run(root, items).parent


def _group_of(bench: dict, records_by_split: dict[str, dict]) -> dict[str, str]:
    return {Path(r["source"]["uri"]).name: split for split, recs in records_by_split.items()
            for r in recs.values()}


def test_near_duplicates_of_the_demo_stay_together_and_no_split_is_empty(
        demo_run: Path, tmp_path: Path) -> None:
    for seed in range(6):
        dest = tmp_path / f"b{seed}"
        bench = build_benchmark(str(demo_run), str(dest), seed=seed)
        where = _group_of(bench, {n: split_records(str(dest), n) for n in bench["splits"]})
        assert len(where) == 8
        assert where["grace_gray.png"] == where["grace_hopper.jpg"]
        assert where["astronaut_rgba.png"] == where["astronaut_exif_rotated.jpg"]
        assert where["two_people_pan.mp4"] == where["two_people_pan_vp9.webm"]
        assert all(info["samples"] > 0 for info in bench["splits"].values()), seed
        near = next(r for r in bench["grouping"]["rules"] if r["rule"] == "near_duplicate")
        assert near["threshold"] == 8 and near["merged"] >= 3
        assert bench["leak_checks"]["near_duplicate"]["crossing"] == 0
    off = build_benchmark(str(demo_run), str(tmp_path / "off"), near_duplicates=False,
                          min_per_split=0)
    assert off["grouping"]["groups"] == 8  # without pHash every file is its own group


def test_close_frame_pairs_finds_every_pair_within_the_threshold() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 200, dtype=np.uint64)
    flips = np.array([np.uint64(1) << np.uint64(b) for b in rng.integers(0, 64, 200)])
    hashes = np.concatenate([base, base ^ flips])  # each base has a copy 1 bit away
    owner = np.arange(400)
    pairs = close_frame_pairs(hashes, owner, threshold=6)
    brute = {(i, j) for i in range(400) for j in range(i + 1, 400)
             if bin(int(hashes[i]) ^ int(hashes[j])).count("1") <= 6}
    assert pairs == brute and len(pairs) >= 200


def test_too_few_groups_stop_with_one_sentence_or_warn(demo_run: Path, tmp_path: Path) -> None:
    rows = [SampleRow(f"k{i}", f"u{i}", None, 1) for i in range(2)]
    with pytest.raises(SplitError, match="has 2 leak groups.*need 3"):
        assign_splits(rows, {"train": 0.8, "val": 0.1, "test": 0.1})
    warnings: list[str] = []
    splits = assign_splits(rows, {"train": 0.8, "val": 0.1, "test": 0.1}, allow_empty=True,
                           warnings=warnings)
    assert len(warnings) == 1 and sum(map(len, splits.values())) == 2
    runner = CliRunner()
    res = runner.invoke(app, ["build-benchmark", str(demo_run), "--to", str(tmp_path / "x"),
                              "--min-per-split", "2"])
    assert res.exit_code == 2, res.output
    assert "4 leak groups" in res.output and "need 6" in res.output
    res = runner.invoke(app, ["build-benchmark", str(demo_run), "--to", str(tmp_path / "y"),
                              "--min-per-split", "2", "--allow-empty"])
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "y" / "benchmark.json").read_text())
    assert saved["warnings"] and saved["allow_empty"] is True
    res = runner.invoke(app, ["build-benchmark", str(demo_run), "--to", str(tmp_path / "z"),
                              "--split", "1,0,1", "--min-per-split", "0"])
    assert res.exit_code == 0
    res = runner.invoke(app, ["evaluate", str(tmp_path / "z"), "gold", "--split", "val"])
    assert res.exit_code == 0 and "n/a" in res.output and "empty" in res.output
    res = runner.invoke(app, ["evaluate", str(tmp_path / "z"), "gold", "--split", "val",
                              "--json"])
    assert json.loads(res.stdout)["empty"] is True


def test_event_windows_split_by_sequence(tmp_path: Path) -> None:
    # one log file holding 12 sequences: grouping by uri would put all of it in one split
    run = make_event_output(tmp_path / "run", sequences=12, windows=6, one_file=True).parent
    bench = build_benchmark(str(run), str(tmp_path / "b"), seed=1)
    assert all(s["samples"] > 0 for s in bench["splits"].values())
    seqs = {n: {r["source"]["sequence"] for r in split_records(str(tmp_path / "b"), n).values()}
            for n in bench["splits"]}
    assert not (seqs["train"] & seqs["test"]) and not (seqs["train"] & seqs["val"])
    assert sum(map(len, seqs.values())) == 12
    rules = {r["rule"]: r["merged"] for r in bench["grouping"]["rules"]}
    assert rules["sequence"] == 12 * 5 and rules["uri"] == 0


def test_time_split_cuts_each_sequence_without_straddling(tmp_path: Path) -> None:
    rows = []
    for s in range(3):  # overlapping windows: 10 s long, every 5 s
        rows += [SampleRow(f"s{s}w{w:02d}", "log", "h", 0, f"s{s}", (5.0 * w, 5.0 * w + 10))
                 for w in range(20)]
    splits, report = assign_time_splits(rows, {"train": 0.6, "val": 0.2, "test": 0.2})
    assert report["sequences"] == 3 and report["dropped_straddling_windows"] > 0
    for s in range(3):
        spans = {n: [rows[i].span for i in m if rows[i].sequence == f"s{s}"]
                 for n, m in splits.items()}
        assert spans["train"] and spans["val"] and spans["test"]
        assert max(hi for _, hi in spans["train"]) <= min(lo for lo, _ in spans["val"])
        assert max(hi for _, hi in spans["val"]) <= min(lo for lo, _ in spans["test"])
    run = make_event_output(tmp_path / "run", sequences=3, windows=10).parent
    bench = build_benchmark(str(run), str(tmp_path / "t"), split_by="time")
    assert bench["split_by"] == "time" and bench["leak_checks"]["time_order"]["crossing"] == 0
    assert [bench["splits"][n]["sequences"] for n in ("train", "val", "test")] == [3, 3, 3]
    with pytest.raises(BenchmarkError, match="needs event windows"):
        build_benchmark(_images(tmp_path), str(tmp_path / "t2"), split_by="time")


def _images(tmp_path: Path) -> str:
    from tests.unit.training.shardgen import make_relational_output

    return str(make_relational_output(tmp_path / "img", [("a.jpg", "a", 1)] * 3).parent)

