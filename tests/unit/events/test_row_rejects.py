"""Bad rows go from the driver straight into the rejects ledger, in committed batches."""

from __future__ import annotations

import pyarrow.parquet as pq

from relshard.events import row_rejects
from relshard.events.row_rejects import RowRejectLedger
from relshard.events.rowcheck import RowReject
from relshard.shards.recovery import done_input_keys


def test_rejects_are_committed_in_batches_and_skipped_when_done(tmp_path, monkeypatch):
    monkeypatch.setattr(row_rejects, "BATCH", 3)
    root = str(tmp_path / "out")
    ledger = RowRejectLedger(root, "run1", set())
    for row in range(1, 8):
        ledger.add_row("log-abc", "/data/log.csv", RowReject(row, "bad_time", f"data row {row}"))
    assert ledger.units == 2  # two full batches committed, one row pending
    ledger.flush()
    assert ledger.units == 3 and ledger.written == 7 and ledger.by_reason == {"bad_time": 7}
    rows = pq.ParquetDataset(tmp_path / "out" / "rejects").read().to_pylist()
    assert sorted(r["input_key"] for r in rows) == [f"log-abc-r{i:010d}" for i in range(1, 8)]
    assert {r["uri"] for r in rows} >= {"/data/log.csv#row=1"}
    assert all(r["stage"] == "decode" for r in rows)

    done = done_input_keys(root)  # a resumed run: the same rows are found again
    again = RowRejectLedger(root, "run2", done)
    for row in range(1, 9):
        again.add_row("log-abc", "/data/log.csv", RowReject(row, "bad_time", "x"))
    again.flush()
    assert again.skipped == 7 and again.written == 1


def test_discard_drops_what_was_not_committed(tmp_path):
    ledger = RowRejectLedger(str(tmp_path / "out"), "run1", set())
    ledger.add("log-abc-r0000000001", "/data/log.csv#row=1", "missing_type", "x")
    ledger.discard()
    ledger.flush()
    assert ledger.written == 0 and not list((tmp_path / "out").rglob("*.parquet"))
