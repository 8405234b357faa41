"""``relshard export``: a mixed run (images, clips, varying crops, event windows) as Parquet
that Hugging Face ``datasets`` loads, where its webdataset loader refuses the tars."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from relshard.report.export import ExportOptions, export_run
from relshard.shards.item import InputRef, WorkItem
from tests.unit.training.shardgen import draft_of, npy, relational_record, write_run


def jpeg(value: int, size: tuple[int, int] = (24, 16)) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((size[1], size[0], 3), value, np.uint8))
    assert ok
    return buf.tobytes()


def mixed_run(root: Path) -> dict[str, dict]:
    """Images with 0-3 crops, clips of 3 frames with crops, event windows; what each holds."""
    items, expect = [], {}
    for i in range(9):
        key = f"img{i:02d}"
        rec = relational_record(key, f"photos/{key}.jpg", f"sha{i}", i % 4, i)
        crops = {}
        for s, subject in enumerate(rec["subjects"]):
            subject["crop"] = f"s{s + 1}.jpg"
            crops[subject["crop"]] = jpeg(40 + s)
        items.append(WorkItem(InputRef(key, rec["source"]["uri"], "image"),
                              [draft_of(rec, frames=[jpeg(10 * i)], members=crops)]))
        expect[key] = {"modality": "image", "frames": 1, "crops": len(crops),
                       "subjects": [s["id"] for s in rec["subjects"]],
                       "rel": rec["relational_caption"]}
    for i in range(4):
        key = f"clip{i:02d}"
        rec = relational_record(key, f"videos/{key}.mp4", f"vsha{i}", 1 + i % 2, 100 + i)
        rec["source"]["modality"] = "video"
        rec["subjects"][0]["crop"] = "s1.jpg"
        items.append(WorkItem(InputRef(key, rec["source"]["uri"], "video"), [
            draft_of(rec, frames=[jpeg(v) for v in (60, 90, 120)],
                     members={"s1.jpg": jpeg(200), "mp4": b"\x00" * 4000})]))
        expect[key] = {"modality": "video", "frames": 3, "crops": 1,
                       "subjects": [s["id"] for s in rec["subjects"]],
                       "rel": rec["relational_caption"]}
    rng = np.random.default_rng(0)
    for i in range(3):
        key = f"ev{i:02d}"
        n = 5 + i
        times, types = np.sort(rng.uniform(0, 100, n)), rng.integers(0, 3, n)
        rec = {"key": key, "source": {"uri": "logs/a.csv", "input_key": "log", "sha256": "e",
                                      "modality": "events", "sequence": "a", "window_index": i,
                                      "event_count": n, "time_span": [0.0, 100.0]}}
        items.append(WorkItem(InputRef(key, "logs/a.csv", "events"), [
            draft_of(rec, members={"times.npy": npy(times), "types.npy": npy(types),
                                   "marks.npy": npy(rng.normal(size=(n, 2)))})]))
        expect[key] = {"modality": "events", "frames": 0, "crops": 0, "subjects": [],
                       "times": times.tolist(), "types": types.tolist()}
    write_run(root, items, per_shard=5)
    return expect


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    root = tmp_path_factory.mktemp("export") / "run"
    return root, mixed_run(root)


def _check_rows(rows: list[dict], expect: dict[str, dict], decoded: bool) -> None:
    assert sorted(r["key"] for r in rows) == sorted(expect)
    for row in rows:
        want = expect[row["key"]]
        assert row["modality"] == want["modality"]
        assert json.loads(row["json"])["key"] == row["key"]
        assert len(row["frames"]) == want["frames"] and len(row["crops"]) == want["crops"]
        assert row["subject_ids"] == want["subjects"]
        assert row["crop_subject_ids"] == want["subjects"][:want["crops"]]
        if want["modality"] == "events":
            assert row["image"] is None and row["times"] == pytest.approx(want["times"])
            assert row["types"] == want["types"] and len(row["marks"]) == len(want["times"])
            continue
        assert row["relational_caption"] == want["rel"] and row["times"] is None
        images = [row["image"], *row["frames"], *row["crops"]]
        if not decoded:
            images = [Image.open(io.BytesIO(b)) for b in images]
        for im in images:
            assert im.size == (24, 16)
            im.load()


def test_the_webdataset_loader_of_datasets_refuses_the_run(run, tmp_path, monkeypatch):
    """Why the export exists (DESIGN 7): mixed member types break ``load_dataset("webdataset")``."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    root, _ = run
    tars = sorted(str(p) for p in (root / "shards").glob("*.tar"))
    with pytest.raises(Exception):  # noqa: B017 - whichever error this version raises
        ds = datasets.load_dataset("webdataset", data_files={"train": tars}, split="train",
                                   cache_dir=str(tmp_path / "cache"))
        list(ds)


@pytest.mark.parametrize("fmt", ["hf", "parquet"])
def test_datasets_loads_the_export(run, tmp_path, monkeypatch, fmt):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    root, expect = run
    result = export_run(str(root), tmp_path / "hf", ExportOptions(format=fmt, rows_per_file=7,
                                                                  row_group_rows=3))
    assert result.rows == len(expect) and result.skipped == 0 and len(result.files) == 3
    files = sorted(str(p) for p in (tmp_path / "hf" / "data").glob("*.parquet"))
    ds = datasets.load_dataset("parquet", data_files={"train": files}, split="train",
                               cache_dir=str(tmp_path / "cache"))
    decoded = fmt == "hf"
    if decoded:
        assert isinstance(ds.features["image"], datasets.Image)
    _check_rows(list(ds), expect, decoded)
    same = datasets.Dataset.from_parquet(files, cache_dir=str(tmp_path / "cache2"))
    assert same.num_rows == len(expect)
    by_dir = datasets.load_dataset("parquet", data_dir=str(tmp_path / "hf"), split="train",
                                   cache_dir=str(tmp_path / "cache3"))
    assert by_dir.num_rows == len(expect)


def test_row_groups_and_files_are_bounded(run, tmp_path):
    root, expect = run
    result = export_run(str(root), tmp_path / "p", ExportOptions(rows_per_file=5,
                                                                 row_group_rows=2))
    assert result.rows == len(expect) and len(result.files) == 4
    for name in result.files:
        meta = pq.ParquetFile(tmp_path / "p" / name).metadata
        assert meta.num_rows <= 5
        assert all(meta.row_group(i).num_rows <= 2 for i in range(meta.num_row_groups))
    info = json.loads((tmp_path / "p" / "export.json").read_text())
    assert info["rows"] == len(expect) and info["format"] == "parquet"
    table = pq.read_table(tmp_path / "p" / "data")
    assert "mp4" not in "".join(table.column_names)  # clips stay in the shards
    with pytest.raises(Exception, match="not empty"):
        export_run(str(root), tmp_path / "p")
    assert export_run(str(root), tmp_path / "p", ExportOptions(overwrite=True)).rows == len(
        expect)


def test_an_unreadable_sample_is_skipped_and_counted(run, tmp_path):
    root, expect = run
    copy = tmp_path / "run"
    import shutil

    shutil.copytree(root, copy)
    shard = sorted((copy / "shards").glob("*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[100:200] = b"\xff" * 100  # the first header's checksum no longer matches
    shard.write_bytes(bytes(data))
    result = export_run(str(copy), tmp_path / "out")
    assert result.skipped == 1 and result.rows == len(expect) - 1
    assert "checksum" in next(iter(result.problems.values()))


def test_cli_export(run, tmp_path):
    from relshard.cli import app

    root, expect = run
    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["export", str(root), "--to", str(out), "--format", "parquet",
                                   "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["rows"] == len(expect)
    res = CliRunner().invoke(app, ["export", str(tmp_path / "nothing"), "--to", str(out)])
    assert res.exit_code == 2
    res = CliRunner().invoke(app, ["export", str(root), "--to", str(out), "--format", "csv"])
    assert res.exit_code == 2
