"""Timestamps of real event logs, parsed to float64 seconds since the Unix epoch (UTC).

Formats (``sources[].events.time_format``):

- ``iso8601``: ``2024-03-01T12:00:00Z``, ``2024-03-01 12:00:00.25+05:30``, ``2024-03-01``;
  offsets may differ row to row, every value is converted to UTC; naive values are UTC.
- ``rfc2822``: ``Fri, 01 Mar 2024 12:00:00 +0000`` (e-mail and RSS dates).
- ``epoch_s`` / ``epoch_ms``: numbers (or numeric strings) of seconds or milliseconds.
- ``decimal_year``: ``2024.5`` is the middle of 2024 (catalogues of earthquakes, climate).
- ``auto``: :func:`detect_format` looks at a sample of values and says what it chose.

A value that does not parse becomes NaN; the caller turns it into a reject row.
Arrow's vectorized cast does the work for clean ISO columns (mixed offsets included);
only a batch that the cast refuses is parsed value by value. RFC 2822 dates in their
usual form are parsed vectorized too (a regex, then calendar arithmetic); other forms
fall back to :func:`email.utils.parsedate_to_datetime`, with the same answers.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FORMATS = ("iso8601", "rfc2822", "epoch_s", "epoch_ms", "decimal_year")
_RFC_RE = re.compile(
    r"^\s*(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),\s*)?\d{1,2}\s+"
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s+\d{2,4}", re.IGNORECASE)
_NUM_RE = re.compile(r"^\s*[-+]?\d+(\.\d*)?([eE][-+]?\d+)?\s*$")
_MS_THRESHOLD = 1e11  # seconds after 1973 in ms; as seconds that is the year 5138


def parse_numbers(arr: pa.Array) -> np.ndarray:
    """Numbers (or numeric strings) as float64; anything else NaN."""
    out: np.ndarray
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        out = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        return out
    if pa.types.is_timestamp(arr.type):
        return _timestamps(arr)
    text = pc.utf8_trim_whitespace(pc.cast(arr, pa.string()))
    try:  # a clean column casts in one go; one bad value sends it to the regex below
        out = pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        return np.where(np.isfinite(out), out, np.nan)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    ok = pc.match_substring_regex(text, _NUM_RE.pattern)
    clean = pc.if_else(ok, text, pa.scalar(None, pa.string()))
    out = pc.cast(clean, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    return out


def _timestamps(arr: pa.Array) -> np.ndarray:
    ts = pc.cast(arr, pa.timestamp("us", tz=arr.type.tz or "UTC"))
    micros: np.ndarray = pc.cast(ts, pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64)
    return micros / 1e6


def _iso_one(value: str | None) -> float:
    if value is None:
        return np.nan
    text = value.strip()
    if not text:
        return np.nan
    try:
        dt = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return np.nan
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _iso(arr: pa.Array) -> np.ndarray:
    if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
        return _timestamps(pc.cast(arr, pa.timestamp("us")) if pa.types.is_date(arr.type)
                           else arr)
    text = pc.utf8_trim_whitespace(pc.cast(arr, pa.string()))
    try:
        return _timestamps(pc.cast(text, pa.timestamp("us", tz="UTC")))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return np.array([_iso_one(v) for v in text.to_pylist()], dtype=np.float64)


def _rfc_one(value: str | None) -> float:
    if value is None or not value.strip():
        return np.nan
    try:
        dt = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return np.nan
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


_RFC_FAST = (r"(?i)^\s*(?:[a-z]{3},\s*)?(?P<day>\d{1,2})\s+(?P<mon>[a-z]{3})\s+"
             r"(?P<year>\d{4}|\d{2})\s+(?P<hour>\d{1,2}):(?P<minute>\d{2})"
             r"(?::(?P<second>\d{2}))?\s*(?P<zone>[+-]\d{4}|UT|UTC|GMT|Z|[ECMPA][SD]T)?\s*$")
_RFC_FIELDS = ("day", "mon", "year", "hour", "minute", "second", "zone")
_MONTHS = pa.array(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                    "dec"])
# email.utils' zone names, in minutes east of UTC; -0000 and unknown names mean UTC there
_ZONES = {"UT": 0, "UTC": 0, "GMT": 0, "Z": 0, "AST": -240, "ADT": -180, "EST": -300,
          "EDT": -240, "CST": -360, "CDT": -300, "MST": -420, "MDT": -360, "PST": -480,
          "PDT": -420}


def days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm)."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * (m + np.where(m > 2, -3, 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days: np.ndarray = era * 146097 + doe - 719468
    return days


def _month_days(y: np.ndarray, m: np.ndarray) -> np.ndarray:
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    days: np.ndarray = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[
        np.clip(m, 1, 12) - 1]
    out: np.ndarray = days + ((m == 2) & leap)
    return out


def _rfc2822(arr: pa.Array) -> np.ndarray:
    text = pc.cast(arr, pa.string())
    parts = pc.extract_regex(text, _RFC_FAST)
    fast = pc.is_valid(parts).to_numpy(zero_copy_only=False)
    out = np.full(len(text), np.nan)
    if fast.any():
        f = parts.filter(pa.array(fast)).flatten()

        def num(name: str) -> np.ndarray:
            col = pc.if_else(pc.equal(f[_RFC_FIELDS.index(name)], ""), "0",
                             f[_RFC_FIELDS.index(name)])
            ints: np.ndarray = pc.cast(col, pa.int64()).to_numpy(zero_copy_only=False)
            return ints

        day, year, hour, minute, second = (num(n) for n in
                                           ("day", "year", "hour", "minute", "second"))
        year = np.where(year < 100, np.where(year > 68, year + 1900, year + 2000), year)
        found = pc.index_in(pc.utf8_lower(f[1]), value_set=_MONTHS).to_numpy(
            zero_copy_only=False).astype(np.float64)
        known = ~np.isnan(found)
        month = np.nan_to_num(found, nan=0.0).astype(np.int64) + 1
        offset = _zone_minutes(f[6])
        valid = (known & (day >= 1) & (day <= _month_days(year, month)) & (hour <= 23)
                 & (minute <= 59) & (second <= 59))
        secs = (days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60
                + second - offset * 60).astype(np.float64)
        out[fast] = np.where(valid, secs, np.nan)
    slow = np.flatnonzero(~fast)
    if len(slow):
        values = text.take(pa.array(slow)).to_pylist()
        out[slow] = [_rfc_one(v) for v in values]
    return out


def _zone_minutes(zone: pa.Array) -> np.ndarray:
    """Minutes east of UTC of ``+HHMM`` / ``-HHMM`` / a zone name ("" and -0000: UTC)."""
    numeric = pc.match_substring_regex(zone, r"^[+-]\d{4}$").to_numpy(zero_copy_only=False)
    digits = pc.if_else(pc.match_substring_regex(zone, r"^[+-]\d{4}$"), zone, "+0000")
    hh = pc.cast(pc.utf8_slice_codeunits(digits, 1, 3), pa.int64()).to_numpy()
    mm = pc.cast(pc.utf8_slice_codeunits(digits, 3, 5), pa.int64()).to_numpy()
    sign = np.where(pc.starts_with(digits, "-").to_numpy(zero_copy_only=False), -1, 1)
    names = pa.array(list(_ZONES))
    idx = pc.index_in(pc.utf8_upper(zone), value_set=names).to_numpy(zero_copy_only=False)
    idx = np.nan_to_num(idx.astype(np.float64), nan=-1).astype(np.int64)
    by_name = np.where(idx >= 0, np.array(list(_ZONES.values()))[np.maximum(idx, 0)], 0)
    return np.where(numeric, sign * (hh * 60 + mm), by_name)


def decimal_year_to_epoch(years: np.ndarray) -> np.ndarray:
    """``2024.5`` -> seconds since the epoch of the middle of 2024 (NaN stays NaN)."""
    out = np.full(years.shape, np.nan)
    ok = np.isfinite(years) & (np.abs(years) < 100_000)
    whole = np.floor(years[ok]).astype(np.int64)
    start = (whole - 1970).astype("datetime64[Y]").astype("datetime64[s]").astype(np.int64)
    end = (whole - 1969).astype("datetime64[Y]").astype("datetime64[s]").astype(np.int64)
    out[ok] = start + (years[ok] - whole) * (end - start)
    return out


def parse_times(arr: pa.Array | pa.ChunkedArray, fmt: str) -> np.ndarray:
    """Parse a column of timestamps in ``fmt`` to float64 epoch seconds (NaN: unparsable)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if fmt == "iso8601":
        out = _iso(arr)
    elif fmt == "rfc2822":
        out = _rfc2822(arr)
    elif fmt == "epoch_s":
        out = parse_numbers(arr)
    elif fmt == "epoch_ms":
        out = parse_numbers(arr) / 1000.0
    elif fmt == "decimal_year":
        out = decimal_year_to_epoch(parse_numbers(arr))
    else:
        raise ValueError(f"unknown time format {fmt!r}; use one of {FORMATS}")
    out = np.asarray(out, dtype=np.float64)
    out[~np.isfinite(out)] = np.nan
    return out


def detect_format(arr: pa.Array | pa.ChunkedArray, sample: int = 2000) -> tuple[str, str]:
    """Guess the format of a time column from up to ``sample`` non-null values.

    Returns ``(format, why)``; ``why`` is one sentence for the log and the manifest.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = pc.drop_null(arr).slice(0, sample)
    if len(arr) == 0:
        return "iso8601", "no non-empty time values to inspect; assumed ISO 8601"
    if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
        return "iso8601", f"the column is typed {arr.type}"
    nums = parse_numbers(arr)
    finite = nums[np.isfinite(nums)]
    if len(finite) >= 0.9 * len(arr):
        med = float(np.median(np.abs(finite)))
        if np.all((finite >= -10_000) & (finite <= 3_000)):
            return "decimal_year", f"numbers between {finite.min():g} and {finite.max():g} read " \
                                   "as decimal years"
        if med >= _MS_THRESHOLD:
            return "epoch_ms", f"numbers around {med:.3g} read as epoch milliseconds"
        return "epoch_s", f"numbers around {med:.3g} read as epoch seconds"
    texts = [v for v in pc.cast(arr, pa.string()).to_pylist() if v]
    rfc = sum(1 for v in texts if _RFC_RE.match(v))
    if rfc >= 0.5 * len(texts):
        return "rfc2822", f"{rfc} of {len(texts)} sampled values look like RFC 2822 dates"
    parsed = np.isfinite(_iso(pa.array(texts, pa.string()))).sum()
    return "iso8601", f"{parsed} of {len(texts)} sampled values parse as ISO 8601"
