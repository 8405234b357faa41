"""Hostile event logs: an over-long line, a nested JSON value, bytes that are not UTF-8.

Each used to cost more than its own row (issue #14): a 50 MB CSV line made the rest of
the log one ``truncated_log`` reject, a JSON ``type`` holding an array became a type,
and invalid UTF-8 in a JSON line that Arrow read anyway crashed the row checks.
"""

from __future__ import annotations

import json
from pathlib import Path

from relshard.events.reader import MAX_LINE_BYTES, LogBatch, iter_batches
from relshard.spec import EventColumns


def _read(path: Path) -> tuple[list[int], dict[int, str], list[LogBatch]]:
    batches = list(iter_batches(str(path), EventColumns()))
    for b in batches:
        b.batch.validate(full=True)  # every string column is valid UTF-8
    rows = [int(r) for b in batches for r in b.rows]
    bad = {r: why for b in batches for r, why in b.malformed}
    return rows, bad, batches


def test_an_over_long_csv_line_is_one_malformed_row(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    with path.open("w") as f:
        f.write("time,type\n")
        f.writelines(f"{i},a\n" for i in range(100))
        f.write("100," + "x" * (3 * MAX_LINE_BYTES) + "\n")
        f.writelines(f"{i},b\n" for i in range(101, 200))
    rows, bad, batches = _read(path)
    assert sorted(rows + list(bad)) == list(range(200))  # every row: read or rejected
    assert list(bad) == [100] and "over the 1,048,576-byte limit" in bad[100]
    types = [t for b in batches for t in b.batch.column("type").to_pylist()]
    assert types.count("b") == 99


def test_a_nested_json_value_is_not_a_type(tmp_path: Path) -> None:
    path = tmp_path / "nested.jsonl"
    lines = [json.dumps({"time": i, "type": "a"}) for i in range(50)]
    lines += [json.dumps({"time": 50, "type": [1, [2, 3]]}),
              json.dumps({"time": 51, "type": {"k": 1}}), json.dumps({"time": 52, "type": "b"})]
    path.write_text("\n".join(lines) + "\n")
    rows, bad, batches = _read(path)
    assert sorted(rows + list(bad)) == list(range(53))
    assert sorted(bad) == [50, 51]
    assert "holds a JSON array" in bad[50] and "holds a JSON object" in bad[51]
    assert {t for b in batches for t in b.batch.column("type").to_pylist()} == {"a", "b"}


def test_json_lines_that_are_not_utf8_are_malformed_rows(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    with path.open("wb") as f:
        f.writelines(json.dumps({"time": i, "type": "a"}).encode() + b"\n" for i in range(50))
        f.write(b'{"time": 50, "type": "\xff\xfe"}\n')  # the only broken line of its chunk
        f.write(b'{"time": 51, "type": "b"}\n')
    rows, bad, _ = _read(path)
    assert sorted(rows) == [*range(50), 51] and list(bad) == [50]
    assert "not JSON" in bad[50]


def test_an_over_long_json_line_is_one_malformed_row(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    with path.open("w") as f:
        f.writelines(json.dumps({"time": i, "type": "a"}) + "\n" for i in range(10))
        f.write(json.dumps({"time": 10, "type": "x" * (2 * MAX_LINE_BYTES)}) + "\n")
        f.write(json.dumps({"time": 11, "type": "b"}) + "\n")
    rows, bad, _ = _read(path)
    assert sorted(rows) == [*range(10), 11] and list(bad) == [10]
