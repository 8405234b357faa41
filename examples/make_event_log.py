"""Build the bundled sample event log examples/events/quakes.csv.gz.

Run from the repository root: ``python examples/make_event_log.py``. Deterministic.
An earthquake-like catalogue drawn from a known 4-type Hawkes process (a type is a
magnitude class; M3 events trigger M4 ones, M4 trigger M4 and M5, M5 trigger M6),
over six regions and two days, shaped the way real logs come: rows unsorted, ISO 8601
times with a different UTC offset from row to row, and three broken rows (no time,
an unparsable time, a line cut short) that the run must reject with their row
numbers. examples/events.yaml runs it.
"""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from relshard.events.simulate import simulate_hawkes

OUT = Path(__file__).resolve().parent / "events" / "quakes.csv.gz"
TYPES = ["M3", "M4", "M5", "M6"]
MU = np.array([0.004, 0.002, 0.001, 0.0002])  # per second
ALPHA = np.array([[0.0, 0.5, 0.0, 0.0],
                  [0.0, 0.2, 0.15, 0.0],
                  [0.0, 0.0, 0.0, 0.3],
                  [0.0, 0.0, 0.0, 0.0]])
BETA = 1.0 / 300.0  # triggered events follow within about five minutes
REGIONS = ["aleutians", "andes", "anatolia", "honshu", "sumatra", "california"]
T0 = datetime(2024, 3, 1, tzinfo=UTC).timestamp()


def main() -> None:
    rng = np.random.default_rng(2024)
    rows = []
    for region in REGIONS:
        t, u = simulate_hawkes(MU, ALPHA, BETA, 2 * 86400.0, rng)
        for ti, ui in zip(t, u, strict=True):
            tz = timezone(timedelta(hours=int(rng.integers(-8, 10))))
            when = datetime.fromtimestamp(T0 + float(ti), tz).isoformat(timespec="seconds")
            depth = round(float(rng.gamma(2.0, 12.0)), 1)
            mag = round(3.0 + ui + float(rng.uniform(0, 1)), 1)
            rows.append(f"{region},{when},{TYPES[ui]},{depth},{mag}")
    rows = [rows[i] for i in rng.permutation(len(rows))]
    rows[100] = "andes,,M4,10.0,4.2"  # no time
    rows[200] = "honshu,last tuesday,M3,5.0,3.1"  # not a time
    rows[300] = "sumatra,2024-03-01T10:00:00+07:00,M5"  # cut short
    OUT.parent.mkdir(parents=True, exist_ok=True)
    text = "region,time,mag_class,depth,mag\n" + "\n".join(rows) + "\n"
    OUT.write_bytes(gzip.compress(text.encode(), mtime=0))
    print(f"{OUT}: {len(rows)} rows")


if __name__ == "__main__":
    main()
