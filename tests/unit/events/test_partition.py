"""The pre-pass: every format reads the same, bad rows are rejected with their row number."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from relshard.errors import SpecError
from relshard.events import partition as part_mod
from relshard.events.partition import partition_log
from relshard.events.parts import read_folder
from relshard.spec import EventColumns
from tests.unit.events.logs import hawkes_rows, write_csv, write_jsonl, write_parquet


def read_bucket(part, bucket: int) -> pa.Table:
    return read_folder(part.bucket_path(bucket), fs=part.fs)


COLS = EventColumns(time="time", type="mag_class", sequence="region", marks=["depth", "mag"],
                    buckets=3)


@pytest.fixture(scope="module")
def rows():
    return hawkes_rows(["north", "south", "east", "west"], horizon=3600.0, seed=3)


def _events(part) -> dict[str, np.ndarray]:
    tables = [read_bucket(part, b) for b in part.buckets]
    t = pa.concat_tables(tables).sort_by([("seq", "ascending"), ("t", "ascending")])
    return {c: t.column(c).to_numpy(zero_copy_only=False) for c in ("seq", "t", "type", "m0")}


@pytest.mark.parametrize("name", ["log.csv", "log.csv.gz", "log.zip", "log.jsonl",
                                  "log.parquet"])
def test_every_format_gives_the_same_events(tmp_path, rows, name):
    path = tmp_path / name
    if name.endswith(".jsonl"):
        write_jsonl(path, rows)
    elif name.endswith(".parquet"):
        write_parquet(path, rows)
    else:
        write_csv(path, rows)
    part = partition_log(str(path), "log", path.stat().st_size, COLS, str(tmp_path / "work"))
    assert part.unreadable is None and part.rejects == []
    assert part.meta["rows"] == part.meta["rows_ok"] == len(rows)
    assert part.meta["vocab"] == sorted({r["mag_class"] for r in rows})
    got = _events(part)
    want = sorted((r["region"], r["epoch"]) for r in rows)
    assert list(got["seq"]) == [w[0] for w in want]
    np.testing.assert_allclose(got["t"], [w[1] for w in want], atol=1e-5)


def test_a_sequence_lands_in_exactly_one_bucket(tmp_path, rows):
    path = write_csv(tmp_path / "log.csv", rows)
    part = partition_log(str(path), "log", None, COLS, str(tmp_path / "work"))
    seen: dict[str, int] = {}
    for b in part.buckets:
        for seq in set(read_bucket(part, b).column("seq").to_pylist()):
            assert seen.setdefault(seq, b) == b
    assert set(seen) == {"north", "south", "east", "west"}


def test_bad_rows_are_rejects_with_their_row_number(tmp_path, rows):
    extra = ("north,,M3,1,1\n"  # missing time
             "north,last tuesday,M3,1,1\n"  # unparsable time
             "north,2023-11-14T22:13:20Z,,1,1\n")  # missing type
    path = write_csv(tmp_path / "log.csv", rows[:50], extra_lines=extra)
    part = partition_log(str(path), "log", None, COLS, str(tmp_path / "work"))
    got = [(r.row, r.reason) for r in part.rejects]
    assert got == [(51, "missing_time"), (52, "bad_time"), (53, "missing_type")]
    assert "'last tuesday'" in part.rejects[1].detail
    assert part.meta["rows"] == 53 and part.meta["rows_ok"] == 50


def test_one_sequence_per_file_without_a_sequence_column(tmp_path, rows):
    path = write_csv(tmp_path / "log.csv", rows[:100])
    cols = EventColumns(time="time", type="mag_class")
    part = partition_log(str(path), "log", None, cols, str(tmp_path / "work"))
    assert part.buckets == [0]
    assert set(read_bucket(part, 0).column("seq").to_pylist()) == {""}


def test_memory_stays_bounded_by_flushing_buckets(tmp_path, rows, monkeypatch):
    monkeypatch.setattr(part_mod, "FLUSH_ROWS", 100)
    monkeypatch.setattr("relshard.events.reader.BATCH_ROWS", 64)
    path = write_parquet(tmp_path / "log.parquet", rows)
    part = partition_log(str(path), "log", None, COLS, str(tmp_path / "work"))
    files = sum(len(list(Path(part.bucket_path(b)).glob("flush-*.parquet")))
                for b in part.buckets)
    assert files > len(part.buckets)  # written in several flushes, not held to the end
    assert sum(read_bucket(part, b).num_rows for b in part.buckets) == len(rows)


def test_corrupt_logs_are_unreadable_and_missing_columns_are_spec_errors(tmp_path, rows):
    bad = tmp_path / "log.csv.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    part = partition_log(str(bad), "log", None, COLS, str(tmp_path / "work"))
    assert part.unreadable and part.buckets == []
    good = write_csv(tmp_path / "ok.csv", rows[:10])
    with pytest.raises(SpecError, match="no column"):
        partition_log(str(good), "ok", None, EventColumns(time="when", type="mag_class"),
                      str(tmp_path / "work"))
    two = tmp_path / "two.zip"
    import zipfile
    with zipfile.ZipFile(two, "w") as zf:
        zf.writestr("a.csv", "x")
        zf.writestr("b.csv", "y")
    with pytest.raises(SpecError, match="exactly one"):
        partition_log(str(two), "two", None, COLS, str(tmp_path / "work"))


def test_marks_that_are_not_numbers_become_nan(tmp_path, rows):
    text = "region,time,mag_class,depth,mag\nnorth,2023-11-14T22:13:20Z,M3,deep,4\n"
    path = tmp_path / "log.csv"
    path.write_text(text)
    part = partition_log(str(path), "log", None, COLS, str(tmp_path / "work"))
    table = read_bucket(part, part.buckets[0])
    assert np.isnan(table.column("m0")[0].as_py()) and table.column("m1")[0].as_py() == 4.0
    assert isinstance(Path(part.meta_path).read_text(), str)


def test_bucket_count_follows_the_file_size_when_the_listing_has_none(tmp_path, rows,
                                                                      monkeypatch):
    monkeypatch.setattr(part_mod, "BUCKET_BYTES", 10_000)
    path = write_csv(tmp_path / "log.csv", rows)
    cols = EventColumns(time="time", type="mag_class", sequence="region")
    part = partition_log(str(path), "log", None, cols, str(tmp_path / "work"))
    assert part.meta["buckets"] == path.stat().st_size // 10_000 > 1


def _broken_csv(path: Path, rows: list[dict], broken: dict[int, bytes]) -> Path:
    """A CSV whose data rows at 1-based positions ``broken`` are replaced by raw bytes."""
    lines = [b"region,time,mag_class,depth,mag"]
    for i, r in enumerate(rows, start=1):
        lines.append(broken.get(i) or
                     f"{r['region']},{r['epoch']},{r['mag_class']},{r['depth']},{r['mag']}"
                     .encode())
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize("first_broken", [3, 700])  # in the first block, or after a few
def test_broken_csv_lines_are_malformed_rows_and_the_log_goes_on(tmp_path, rows, monkeypatch,
                                                                 first_broken):
    monkeypatch.setattr("relshard.events.reader._BLOCK_BYTES", 4096)
    monkeypatch.setattr("relshard.events.reader._CAREFUL_CHUNK_BYTES", 3000)
    rows = rows[:1500]
    broken = {first_broken: b"north,1700000000", 900: b"a,b,c,d,e,f,g",
              1100: b"north,1700000000,M\xff\xfe,1,1", 1300: b"south,someday,M3,1,1"}
    path = _broken_csv(tmp_path / "log.csv", rows, broken)
    cols = EventColumns(time="time", type="mag_class", sequence="region", time_format="epoch_s",
                        buckets=2)
    part = partition_log(str(path), "log", None, cols, str(tmp_path / "work"))
    assert part.unreadable is None
    got = [(r.row, r.reason) for r in part.rejects]
    assert got == [(first_broken, "malformed_row"), (900, "malformed_row"),
                   (1100, "malformed_row"), (1300, "bad_time")]
    assert "2 fields where the header has 5" in part.rejects[0].detail
    assert "not UTF-8" in part.rejects[2].detail and "'someday'" in part.rejects[3].detail
    assert part.meta["rows"] == len(rows) and part.meta["rows_ok"] == len(rows) - 4
    kept = pa.concat_tables([read_bucket(part, b) for b in part.buckets])
    assert sorted(kept.column("row").to_pylist()) == [i - 1 for i in range(1, len(rows) + 1)
                                                      if i not in broken]


def test_broken_json_lines_are_malformed_rows_with_their_numbers(tmp_path, rows):
    path = tmp_path / "log.jsonl"
    lines = [json.dumps({"region": r["region"], "time": r["epoch"], "mag_class": r["mag_class"],
                         "depth": r["depth"], "mag": r["mag"]}) for r in rows[:40]]
    lines[9] = '{"region": "north", "time": 17000'  # cut off
    lines[19] = "[1, 2, 3]"  # JSON, not an object
    lines[29] = json.dumps({"region": "north", "mag_class": "M3"})  # no time
    path.write_text("\n".join(lines[:15]) + "\n\n" + "\n".join(lines[15:]) + "\n")
    cols = EventColumns(time="time", type="mag_class", sequence="region", marks=["depth"],
                        time_format="epoch_s")
    part = partition_log(str(path), "log", None, cols, str(tmp_path / "work"))
    got = [(r.row, r.reason) for r in part.rejects]
    assert got == [(10, "malformed_row"), (20, "malformed_row"), (30, "missing_time")]
    assert "is not JSON" in part.rejects[0].detail
    assert "not a JSON object" in part.rejects[1].detail
    assert part.meta["rows"] == 40 and part.meta["rows_ok"] == 37
    kept = pa.concat_tables([read_bucket(part, b) for b in part.buckets])
    assert kept.column("m0").null_count == 0


def test_a_json_line_that_is_not_utf8_is_a_malformed_row(tmp_path, rows):
    # a cut-off line sends the chunk to the line-by-line reader, which meets the bad bytes
    path = tmp_path / "log.jsonl"
    lines = [json.dumps({"region": r["region"], "time": r["epoch"], "mag_class": r["mag_class"]})
             .encode() for r in rows[:10]]
    lines[2] = b'{"region": "north", "time": 17000'
    lines[4] = b'{"region": "n\xff\xfe", "time": 1700000000, "mag_class": "M3"}'
    path.write_bytes(b"\n".join(lines) + b"\n")
    cols = EventColumns(time="time", type="mag_class", sequence="region", time_format="epoch_s")
    part = partition_log(str(path), "log", None, cols, str(tmp_path / "work"))
    assert [(r.row, r.reason) for r in part.rejects] == [(3, "malformed_row"),
                                                        (5, "malformed_row")]
    assert "is not JSON" in part.rejects[1].detail and "utf-8" in part.rejects[1].detail
    assert part.meta["rows"] == 10 and part.meta["rows_ok"] == 8


@pytest.mark.parametrize("declared", ["epoch_s", "rfc2822"])
def test_a_time_format_that_fits_no_value_stops_the_run_with_one_sentence(tmp_path, rows,
                                                                          declared):
    path = write_csv(tmp_path / "log.csv", rows[:300])  # ISO times
    cols = EventColumns(time="time", type="mag_class", time_format=declared)
    with pytest.raises(SpecError, match=r"none of the first 300 values of column 'time' parses "
                       rf"as {declared} \(e\.g\. '20.*'\); fix sources\[\]\.events\.time_format"):
        partition_log(str(path), "log", None, cols, str(tmp_path / "work"))
    assert not (tmp_path / "work" / "log").exists()
    # a log with some bad times is not refused: those rows are rejects
    text = path.read_text().splitlines()
    text[5] = "north,yesterday,M3,1,1"
    path.write_text("\n".join(text) + "\n")
    part = partition_log(str(path), "log", None, EventColumns(time="time", type="mag_class"),
                         str(tmp_path / "work"))
    assert [(r.row, r.reason) for r in part.rejects] == [(5, "bad_time")]


def test_a_log_cut_short_keeps_its_rows_and_rejects_the_rest(tmp_path):
    import gzip

    lines = "".join(f"north,{1_700_000_000 + i},M3,{i % 97},{i % 89}\n" for i in range(400_000))
    data = gzip.compress(("region,time,mag_class,depth,mag\n" + lines).encode())
    path = tmp_path / "log.csv.gz"
    path.write_bytes(data[: len(data) * 2 // 3])  # a download that stopped
    rejects = []
    part = partition_log(str(path), "log", None, COLS, str(tmp_path / "work"), rejects.append)
    assert part.unreadable is None and 50_000 < part.meta["rows_ok"] < 400_000
    (tail,) = rejects
    assert tail.reason == "truncated_log" and tail.row == part.meta["rows_ok"] + 1
    assert "could not be read past data row" in tail.detail and part.meta["truncated"]
    assert part.meta["rows"] == part.meta["rows_ok"] + part.meta["rows_rejected"]


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_the_delimiter_is_read_off_the_header(tmp_path, rows, sep):
    text = "\ufeff" + sep.join(["region", "time", "mag_class", "depth", "mag"]) + "\r\n" + "".join(
        sep.join([r["region"], str(r["epoch"]), r["mag_class"], str(r["depth"]), str(r["mag"])])
        + "\r\n" for r in rows[:50])
    path = tmp_path / "log.csv"
    path.write_text(text, encoding="utf-8")
    part = partition_log(str(path), "log", None, COLS, str(tmp_path / "work"))
    assert part.meta["rows_ok"] == 50 and part.rejects == []
    forced = COLS.model_copy(update={"delimiter": ","})
    with pytest.raises(SpecError, match="no column"):  # the setting wins over the header
        partition_log(str(path), "log", None, forced, str(tmp_path / "work2"))


def test_json_fields_inside_objects_are_named_with_dots(tmp_path, rows):
    path = tmp_path / "log.jsonl"
    lines = [json.dumps({"at": {"epoch": r["epoch"]}, "event": {"kind": r["mag_class"],
                                                                "where": {"region": r["region"]}}})
             for r in rows[:30]]
    lines[7] = lines[7][:-5]  # a broken line sends its chunk down the careful path too
    path.write_text("\n".join(lines) + "\n")
    cols = EventColumns(time="at.epoch", type="event.kind", sequence="event.where.region",
                        time_format="epoch_s")
    part = partition_log(str(path), "log", None, cols, str(tmp_path / "work"))
    assert [(r.row, r.reason) for r in part.rejects] == [(8, "malformed_row")]
    assert part.meta["rows_ok"] == 29
    assert part.meta["vocab"] == sorted({r["mag_class"] for r in rows[:30]})
    kept = pa.concat_tables([read_bucket(part, b) for b in part.buckets])
    assert set(kept.column("seq").to_pylist()) == {r["region"] for r in rows[:30]}
    # a log without broken lines takes the fast path: the same rows
    path.write_text("\n".join(ln for i, ln in enumerate(lines) if i != 7) + "\n")
    fast = partition_log(str(path), "log", None, cols, str(tmp_path / "work"))
    assert fast.meta["rows_ok"] == 29 and fast.meta["vocab"] == part.meta["vocab"]
