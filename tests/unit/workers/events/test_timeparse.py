"""Real-world timestamps: mixed ISO offsets, RFC 2822, epoch s/ms, decimal years, detection."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from relshard.workers.decode.events.timeparse import (
    decimal_year_to_epoch,
    detect_format,
    parse_times,
)

NOON = 1_577_880_000.0  # 2020-01-01T12:00:00Z


def test_iso_with_mixed_offsets_is_converted_to_utc():
    col = pa.array(["2020-01-01T12:00:00Z", "2020-01-01T14:00:00+02:00",
                    "2020-01-01 06:30:00-05:30", "2020-01-01T12:00:00.250000+00:00",
                    "2020-01-01T12:00:00"])
    out = parse_times(col, "iso8601")
    np.testing.assert_allclose(out, [NOON, NOON, NOON, NOON + 0.25, NOON])


def test_iso_bad_values_become_nan_not_errors():
    out = parse_times(pa.array(["2020-01-01T12:00:00Z", "yesterday", None, ""]), "iso8601")
    assert out[0] == NOON and np.isnan(out[1:]).all()


def test_rfc2822_dates():
    col = pa.array(["Wed, 01 Jan 2020 12:00:00 +0000", "Wed, 01 Jan 2020 07:00:00 -0500",
                    "1 Jan 2020 13:00:00 +0100", "not a date"])
    out = parse_times(col, "rfc2822")
    np.testing.assert_allclose(out[:3], [NOON] * 3)
    assert np.isnan(out[3])


def test_epoch_seconds_and_milliseconds_from_numbers_or_strings():
    np.testing.assert_allclose(parse_times(pa.array([NOON, NOON + 1.5]), "epoch_s"),
                               [NOON, NOON + 1.5])
    np.testing.assert_allclose(parse_times(pa.array(["1577880000000", " 1577880000500 "]),
                                           "epoch_ms"), [NOON, NOON + 0.5])
    assert np.isnan(parse_times(pa.array(["12:00"]), "epoch_s")[0])


def test_decimal_years_respect_leap_years():
    out = decimal_year_to_epoch(np.array([2020.0, 2020.5, 2021.0, np.nan]))
    assert out[0] == 1_577_836_800.0  # 2020-01-01
    assert out[1] == 1_577_836_800.0 + 183 * 86400  # 2020 has 366 days: the middle is 2 July
    assert out[2] == 1_609_459_200.0
    assert np.isnan(out[3])


@pytest.mark.parametrize(("values", "expected"), [
    (["2020-01-01T12:00:00+02:00", "2020-01-02T00:00:00Z"], "iso8601"),
    (["Wed, 01 Jan 2020 12:00:00 +0000", "Thu, 02 Jan 2020 12:00:00 +0000"], "rfc2822"),
    ([1_577_880_000, 1_577_880_060], "epoch_s"),
    (["1577880000000", "1577880060000"], "epoch_ms"),
    ([1999.25, 2020.5, 1880.0], "decimal_year"),
])
def test_auto_detection_says_what_it_chose(values, expected):
    fmt, why = detect_format(pa.array(values))
    assert fmt == expected
    assert why and isinstance(why, str)


def test_typed_timestamp_columns_parse_directly():
    col = pa.array([NOON * 1_000_000], pa.timestamp("us", tz="UTC"))
    assert detect_format(col)[0] == "iso8601"
    assert parse_times(col, "iso8601")[0] == NOON
