"""The reader against hostile bytes and manifests (issue #14): it ends, skips, counts, leaks
nothing.

Every case builds its bytes at test time. A call that could hang runs under a
SIGALRM time limit, so a regression fails instead of spinning forever.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relshard import RelshardError, ShardLoader, ShardStream
from relshard.shards.decoding import decode_member, decode_sample
from relshard.shards.tarread import CorruptSample, scan_spans, split_members
from relshard.training.catalog import Catalog, ManifestError
from tests.unit.training.hostile import (
    BLOCK,
    SECRET,
    header,
    member,
    padded,
    pax_member,
    pax_record,
    png_claiming,
    tar_of,
    time_limit,
    write_output,
)
from tests.unit.training.shardgen import sample_members

END = b"\x00" * (2 * BLOCK)


def good(key: str, i: int = 0) -> bytes:
    """The member bytes of one well-formed sample (ustar, no end blocks)."""
    return b"".join(member(n, d) for n, d in sample_members(key, i))


def stream_all(manifest: Path, **kw) -> tuple[list[dict], ShardStream]:
    stream = ShardStream(manifest, batch_size=1, remainder="pad", **kw)
    with time_limit(20):
        batches = list(stream)
    return batches, stream


def keys(batches: list[dict]) -> list[str]:
    return [k for b in batches for k in b["__key__"]]


# -- PAX and header parsing: every step advances or fails -----------------------------------


@pytest.mark.parametrize("records", [
    b"0 \n",  # the zero-length record that made the old parser spin forever
    b"-5 path=x\n",  # a negative length would walk backwards
    b"3 x\n",  # shorter than its own "LEN " prefix
    b"99 path=x\n",  # longer than the header
    b"12 path=abc",  # no newline at the record's end
    b"path=abc\n",  # no length at all
    b"10 pathabc\n",  # no '='
    b"11 size=1e9\n",  # a size that is not a number
])
def test_bad_pax_records_fail_fast(records: bytes) -> None:
    span = pax_member(records, "a.json", b"{}")
    with time_limit(5):
        with pytest.raises(CorruptSample, match="PAX"):
            split_members(span)
        spans, complete = scan_spans(io.BytesIO(span + END))
    assert (spans, complete) == ([], False)


def test_pax_nul_padding_and_a_good_record_still_parse() -> None:
    rec = pax_record("path", "k" * 120 + ".json")
    assert split_members(pax_member(rec + b"\x00" * 7, "short.json", b"{}")) == [
        ("k" * 120 + ".json", b"{}")]


@pytest.mark.parametrize("field", [
    b"not-octal!\x00\x00",  # garbage digits
    b"-0000000017\x00",  # a signed decimal-looking size
    b"\xff" + b"\xff" * 11,  # base-256 negative
])
def test_garbage_size_fields_are_corrupt_samples(field: bytes) -> None:
    span = header("a.json", 0, size_field=field) + padded(b"{}")
    with pytest.raises(CorruptSample):
        split_members(span)


def test_a_garbage_header_never_quotes_its_bytes(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Bytes of a non-tar file (here a fake shadow file) in the checksum field stay out of
    messages: the old parser put `int(text, 8)`'s ValueError, bytes and all, in the log."""
    garbage = header("a.json", 2, checksum=SECRET[:8]) + padded(b"{}")
    with pytest.raises(CorruptSample) as err:
        split_members(garbage)
    assert SECRET[:8].decode() not in str(err.value)
    shadow = bytearray(SECRET * 20)
    shadow[148:156] = b"SECRET!!"  # where the checksum of a header would be
    manifest = write_output(tmp_path / "out", {"u0": bytes(shadow) + good("k0") + END,
                                               "u1": good("k1") + END})
    caplog.set_level(logging.WARNING)
    batches, stream = stream_all(manifest)
    assert keys(batches) == ["k1"] and sum(stream.skipped.values()) == 1
    assert b"SECRET" not in caplog.text.encode()


def test_member_past_the_span_and_trailing_junk() -> None:
    with pytest.raises(CorruptSample, match="past") as err:
        split_members(header("a.json", 10**12) + padded(b"{}"))
    assert err.value.reason == "truncated_shard"
    with pytest.raises(CorruptSample, match="inside a tar header"):
        split_members(good("a") + b"\x01" * 100)


def test_huge_pax_header_is_refused_without_reading_it() -> None:
    span = header("PaxHeader/x", 2**21, b"x") + b"\x00" * 2**21 + member("a.json", b"{}")
    with pytest.raises(CorruptSample, match="extended tar header"):
        split_members(span)


# -- member values: caps checked before anything is decoded or allocated --------------------


def test_npy_header_claiming_a_huge_array_is_refused_before_allocating() -> None:
    head = "{'descr': '<f8', 'fortran_order': False, 'shape': (999999999999,), }"
    head += " " * (63 - (10 + len(head)) % 64) + "\n"
    data = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head.encode() + b"\x00" * 16
    with time_limit(5), pytest.raises(CorruptSample, match="claims 7999999999992 bytes"):
        decode_member("times.npy", data)


def test_deeply_nested_json_is_a_corrupt_member() -> None:
    with pytest.raises(CorruptSample, match="does not decode as json"):
        decode_member("json", b"[" * 200_000)


def test_decode_errors_quote_no_member_bytes() -> None:
    for suffix, data in [("json", b'{"pw": "' + SECRET + b'"'), ("txt", b"\xff" + SECRET),
                         ("times.npy", b"\x93NUMPY\x01\x00" + SECRET)]:
        with pytest.raises(CorruptSample) as err:
            decode_member(suffix, data)
        assert "SECRET" not in str(err.value), suffix


def test_image_over_the_pixel_cap_is_skipped_before_decoding() -> None:
    with pytest.raises(CorruptSample) as err:
        decode_member("png", png_claiming(30000, 30000))
    assert err.value.reason == "image_too_large"
    with pytest.raises(CorruptSample) as err:  # over our cap, under Pillow's bomb limit
        decode_member("png", png_claiming(12000, 8000))
    assert err.value.reason == "image_too_large" and "96000000 pixels" in str(err.value)
    ok, jpg = cv2.imencode(".jpg", np.zeros((8, 12, 3), np.uint8))
    assert decode_member("jpg", jpg.tobytes(), max_pixels=96).shape == (8, 12, 3)
    with pytest.raises(CorruptSample, match="max_image_pixels"):
        decode_member("jpg", jpg.tobytes(), max_pixels=95)


def test_stream_counts_pixel_and_member_caps(tmp_path: Path) -> None:
    big = good("big") + member("big.png", png_claiming(30000, 30000))
    huge = member("huge.json", b"{}") + member("huge.bin", b"\x00" * 9000)
    manifest = write_output(tmp_path / "out", {"u0": big + END, "u1": huge + END,
                                               "u2": good("fine") + END})
    batches, stream = stream_all(manifest, max_member_bytes=8192)
    assert keys(batches) == ["fine"]
    assert stream.skipped == {"image_too_large": 1, "member_too_large": 1}
    # a member nobody asked for is never read, so it cannot be too large
    batches, stream = stream_all(manifest, max_member_bytes=8192, members=["json"])
    assert keys(batches) == ["big", "huge", "fine"] and not stream.skipped


def test_big_sample_is_walked_by_ranged_reads(tmp_path: Path) -> None:
    """A sample bigger than max_member_bytes: headers walked, kept members read alone."""
    manifest = write_output(tmp_path / "out", {"u0": good("a", 3) + good("b", 4) + END},
                            counts={"u0": 2})
    small, _ = stream_all(manifest, max_member_bytes=1024, members=["json", "txt"])
    assert [b["json"][0]["i"] for b in small] == [3, 4] and small[1]["txt"] == ["caption 4"]


# -- the manifest and index are data, not instructions ----------------------------------------


@pytest.mark.parametrize("url", ["../../outside.tar", "shards/../../outside.tar", "/etc/shadow",
                                 "file:///etc/shadow", "http://127.0.0.1:9/x.tar",
                                 "memory://elsewhere/x.tar"])
def test_shard_urls_outside_the_folder_are_refused(tmp_path: Path, url: str) -> None:
    manifest = write_output(tmp_path / "a" / "out", {"u0": good("k") + END},
                            extra_entries=[{"url": url, "nsamples": 1}])
    for open_it in (lambda: Catalog.open(manifest),
                    lambda: ShardStream(manifest, batch_size=1),
                    lambda: ShardLoader(ShardStream(manifest.parent, batch_size=1))):
        with pytest.raises(ManifestError) as err:
            open_it()
        message = str(err.value)
        assert url in message and "allow_external=True" in message
        assert "SECRET" not in message and "root:" not in message


def test_allow_external_reads_a_shard_elsewhere(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.tar"
    outside.write_bytes(good("ext") + END)
    manifest = write_output(tmp_path / "out", {"u0": good("in") + END},
                            extra_entries=[{"url": "../elsewhere.tar", "nsamples": 1}])
    with pytest.raises(RelshardError, match="allow_external"):
        ShardStream(manifest, batch_size=1)
    batches, _ = stream_all(manifest, allow_external=True)
    assert keys(batches) == ["in", "ext"]
    assert Catalog.open(manifest, allow_external=True).urls[1].endswith("elsewhere.tar")


def test_the_refused_file_is_never_opened(tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_bytes(SECRET)
    manifest = write_output(tmp_path / "out", {"u0": good("k") + END},
                            extra_entries=[{"url": f"file://{secret}", "nsamples": 1}])
    with pytest.raises(ManifestError) as err:
        ShardStream(manifest, batch_size=1)
    assert "SECRET" not in str(err.value)
    # allowed, it is read as a tar: a counted skip whose message holds no byte of it
    batches, stream = stream_all(manifest, allow_external=True)
    assert keys(batches) == ["k"] and sum(stream.skipped.values()) == 1


@pytest.mark.parametrize("nsamples", [-1, True, 1e12, "many", None, 10**12])
def test_implausible_sample_counts_are_refused(tmp_path: Path, nsamples: object) -> None:
    root = tmp_path / "out"
    write_output(root, {"u0": good("k") + END})
    entry = {"url": "shards/u0.tar", "nsamples": nsamples, "filesize": 4096}
    (root / "manifest.json").write_text(json.dumps({"shardlist": [entry]}))
    with pytest.raises(ManifestError, match="plausible nsamples"):
        Catalog.open(root)


def test_large_real_shards_pass_and_a_deeply_nested_manifest_is_one_error(tmp_path: Path) -> None:
    root = tmp_path / "out"
    write_output(root, {"u0": good("k") + END})
    entry = {"url": "shards/u0.tar", "nsamples": 3_000_000, "filesize": 5 * 2**40}
    (root / "manifest.json").write_text(json.dumps({"shardlist": [entry]}))
    assert Catalog.open(root).counts == (3_000_000,)
    (root / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ManifestError, match="nests too deep"):
        Catalog.open(root)


def test_index_row_claiming_a_terabyte_is_a_counted_skip(tmp_path: Path) -> None:
    first, second = good("a", 1), good("b", 2)
    manifest = write_output(tmp_path / "out", {"u0": first + second + END}, counts={"u0": 2},
                            index={"u0": [(0, len(first)), (len(first), 10**12)]})
    with time_limit(10):
        batches, stream = stream_all(manifest)
    assert keys(batches) == ["a"] and stream.skipped == {"truncated_shard": 1}


@pytest.mark.parametrize("rows", [
    [(-512, 2048), (0, 4096)],  # a negative offset
    [(0, 10**12), (4096, 4096)],  # a span over the next sample
    [(3, 4096), (4096, 4096)],  # an unaligned offset
    [(0, 0), (0, 0)],  # empty spans
])
def test_implausible_index_rows_make_the_reader_scan_the_tar(tmp_path: Path,
                                                             rows: list) -> None:
    manifest = write_output(tmp_path / "out", {"u0": good("a", 1) + good("b", 2) + END},
                            counts={"u0": 2}, index={"u0": rows})
    batches, stream = stream_all(manifest)
    assert keys(batches) == ["a", "b"] and not stream.skipped


def test_truncated_index_parquet_falls_back_to_scanning(tmp_path: Path) -> None:
    manifest = write_output(tmp_path / "out", {"u0": good("a") + END},
                            index={"u0": [(0, len(good("a")))]})
    index = tmp_path / "out" / "index" / "u0.parquet"
    index.write_bytes(index.read_bytes()[:40])
    batches, stream = stream_all(manifest)
    assert keys(batches) == ["a"] and not stream.skipped


# -- the property: mutated tars always end, with samples or counted skips ---------------------

BASE_MEMBERS = (sample_members("k" * 110, 1) + sample_members("short", 2)
                + [("third.json", b'{"x": 1}')])
BASE = tar_of(BASE_MEMBERS)
SIZE_FIELDS = [b"%011o\x00" % 0, b"%011o\x00" % (2**33 - 1), b"\x80" + b"\xff" * 11,
               b"\xff" * 12, b"7777777777\x00\x00", b"-1\x00", b"zz\x00", b"  12  \x00"]
BAD_PAX = [b"0 \n", b"-3 a=b\n", b"1 ", b"99999999999999999999 a=b\n", b"4 a\n",
           b"18 size=-77777777\n", b"\xff\xfe", b"6 =x\n"]


@st.composite
def mutated_tars(draw: st.DrawFn) -> bytes:
    data = bytearray(BASE)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "size", "pax", "garbage", "zero"]))
        block = draw(st.integers(0, max(0, len(data) // BLOCK - 1))) * BLOCK
        if kind == "flip" and data:
            pos = draw(st.integers(0, max(0, len(data) - 1)))
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))):]
        elif kind == "size" and block + BLOCK <= len(data):
            field = draw(st.sampled_from(SIZE_FIELDS))
            data[block + 124:block + 136] = field.ljust(12, b"\x00")[:12]
            if draw(st.booleans()):  # keep the checksum right, so the size is believed
                data[block + 148:block + 156] = b" " * 8
                data[block + 148:block + 156] = b"%06o\x00 " % sum(data[block:block + BLOCK])
        elif kind == "pax":
            records = draw(st.sampled_from(BAD_PAX))
            bad = header("PaxHeader/y", len(records), b"x") + padded(records)
            data[block:block] = bad
        elif kind == "garbage" and block + BLOCK <= len(data):
            data[block:block + BLOCK] = draw(st.binary(min_size=BLOCK, max_size=BLOCK))
        elif kind == "zero":
            data[block:block] = b"\x00" * BLOCK
    return bytes(data)


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutated_tars())
def test_property_mutated_spans_parse_or_fail_cleanly(data: bytes) -> None:
    with time_limit(5):
        try:
            members = split_members(data, max_member=2**20)
        except CorruptSample:
            members = None
        if members:
            with contextlib.suppress(CorruptSample):
                decode_sample(members)
        spans, _ = scan_spans(io.BytesIO(data))
    for offset, size in spans:
        assert offset >= 0 and offset + size <= len(data)


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=mutated_tars(), indexed=st.booleans())
def test_property_stream_over_mutated_shards_ends_with_samples_or_counted_skips(
        tmp_path_factory: pytest.TempPathFactory, data: bytes, indexed: bool) -> None:
    root = tmp_path_factory.mktemp("hostile")
    rows = [(0, 3072), (3072, 6144), (9216, 1024)]  # roughly where BASE's samples were
    manifest = write_output(root, {"u0": data}, counts={"u0": 3},
                            index={"u0": rows} if indexed else None)
    stream = ShardStream(manifest, batch_size=1, remainder="pad", max_member_bytes=2**20)
    with time_limit(10):
        batches = list(stream)
    assert len(batches) == 3
    assert len(keys(batches)) + sum(stream.skipped.values()) == 3
