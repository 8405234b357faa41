"""Real-world timestamps: mixed ISO offsets, RFC 2822, epoch s/ms, decimal years, detection."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from relshard.events.timeparse import (
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


def test_vectorized_rfc2822_gives_the_email_parsers_answers():
    """The regex + calendar path against email.utils on 20k random dates (every offset,
    years 1875-2096) and odd forms that fall back or are invalid."""
    from datetime import datetime, timedelta, timezone
    from email.utils import format_datetime

    from relshard.events.timeparse import _rfc_one

    rng = np.random.default_rng(3)
    values = [format_datetime(datetime.fromtimestamp(
        e, timezone(timedelta(minutes=int(rng.integers(-720, 840))))))
        for e in rng.uniform(-3e9, 4e9, 20_000)]
    values += ["1 Mar 24 12:00:00 +0000", "1 Mar 68 12:00 GMT", "1 Mar 69 12:00 GMT",
               "Fri, 01 Mar 2024 12:00:00 -0000", "01 Mar 2024 12:00:00 EST",
               "01 Mar 2024 12:00:00", "1 Mar 2024 12:00:00 Z",
               "1 Mar 2024 12:00:00 XYZ", "31 Feb 2024 12:00:00 +0000",
               "01 Mar 2024 25:00:00 +0000", "29 Feb 2023 00:00:00 +0000",
               "29 Feb 2024 00:00:00 +0000", "fri, 1 mar 2024 1:02:03 pdt", "", "garbage", None,
               "1 Foo 2024 12:00:00 +0000", "Mar 1 2024 12:00:00", " 5 Jan 1999 00:00:00 +0130 "]
    got = parse_times(pa.array(values), "rfc2822")
    want = np.array([_rfc_one(v) for v in values])
    np.testing.assert_array_equal(got, want)  # NaN where the email parser gives none
    assert np.isfinite(got[:20_000]).all() and np.isnan(got[-8:-4]).any()
