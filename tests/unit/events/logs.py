"""Tiny event logs made at test time from a known Hawkes process, in every supported format."""

from __future__ import annotations

import gzip
import json
import zipfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from relshard.events.simulate import simulate_hawkes

NAMES = ["M3", "M4", "M5"]
MU = np.array([0.05, 0.05, 0.02])  # per second
ALPHA = np.array([[0.0, 0.6, 0.0], [0.0, 0.2, 0.0], [0.0, 0.0, 0.0]])  # M3 -> M4, M4 -> M4
BETA = 1.0 / 60.0  # mean delay one minute
T0 = 1_700_000_000.0


def hawkes_rows(regions: list[str], horizon: float, seed: int = 0) -> list[dict]:
    """Rows of a shuffled log: region, epoch time, type name, two marks."""
    rng = np.random.default_rng(seed)
    rows = []
    for region in regions:
        t, u = simulate_hawkes(MU, ALPHA, BETA, horizon, rng)
        for ti, ui in zip(t, u, strict=True):
            rows.append({"region": region, "epoch": T0 + float(ti), "mag_class": NAMES[ui],
                         "depth": float(rng.uniform(0, 30)), "mag": 3.0 + ui})
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


def iso_mixed(epoch: float, i: int) -> str:
    """ISO 8601 with a time-zone offset that changes from row to row."""
    tz = timezone(timedelta(hours=(i % 11) - 5, minutes=30 * (i % 2)))
    return datetime.fromtimestamp(epoch, tz).isoformat()


def write_csv(path: Path, rows: list[dict], time_fn=iso_mixed, extra_lines: str = "") -> Path:
    lines = ["region,time,mag_class,depth,mag"]
    lines += [f"{r['region']},{time_fn(r['epoch'], i)},{r['mag_class']},{r['depth']},{r['mag']}"
              for i, r in enumerate(rows)]
    text = "\n".join(lines) + "\n" + extra_lines
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    elif path.suffix == ".zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("quakes.csv", text)
    else:
        path.write_text(text)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    with path.open("w") as fh:
        for i, r in enumerate(rows):
            fh.write(json.dumps({"region": r["region"], "time": iso_mixed(r["epoch"], i),
                                 "mag_class": r["mag_class"], "depth": r["depth"],
                                 "mag": r["mag"]}) + "\n")
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.table({
        "region": [r["region"] for r in rows],
        "time": [datetime.fromtimestamp(r["epoch"], UTC) for r in rows],
        "mag_class": [r["mag_class"] for r in rows],
        "depth": [r["depth"] for r in rows], "mag": [r["mag"] for r in rows],
    }), path, row_group_size=500)
    return path
