"""Safe decoding of sample spans: tar parsing, suffix decoders, corruption, no pickle."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from relshard.shards.decoding import decode_member, decode_sample
from relshard.shards.tarread import (
    CorruptSample,
    iter_entries,
    scan_spans,
    split_key,
    split_members,
)
from tests.unit.training.shardgen import sample_members


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_split_members_matches_tarfile_with_long_pax_names() -> None:
    long_key = "k" * 150
    members = sample_members(long_key, 4) + [(f"{long_key}.é.bin", b"\x00" * 1000)]
    members = [(name, data) for name, data in members]
    got = split_members(tar_bytes(members))
    assert got == members


def test_decode_sample_values() -> None:
    sample = decode_sample(split_members(tar_bytes(sample_members("abc", 2))))
    assert sample["__key__"] == "abc" and sample["json"]["i"] == 2
    assert sample["txt"] == "caption 2" and sample["rel.txt"] == "{S1} number 2"
    assert sample["jpg"].shape == (8, 12, 3) and sample["jpg"].dtype == np.uint8
    assert sample["times.npy"].tolist() == [2.0, 3.0, 4.0]
    raw = decode_sample(split_members(tar_bytes(sample_members("abc", 2))), image="bytes",
                        keep=frozenset({"jpg", "json"}))
    assert set(raw) == {"__key__", "jpg", "json"} and raw["jpg"][:2] == b"\xff\xd8"


def test_pickled_npy_is_refused_not_loaded() -> None:
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CorruptSample, match="times.npy"):
        decode_member("times.npy", buf.getvalue())
    assert decode_member("model.pickle", b"\x80\x04K\x01.") == b"\x80\x04K\x01."


@pytest.mark.parametrize(("suffix", "data"), [
    ("json", b"{not json"), ("txt", b"\xff\xfe\xfa"), ("jpg", b"\xff\xd8garbage"),
])
def test_corrupt_members_raise(suffix: str, data: bytes) -> None:
    with pytest.raises(CorruptSample):
        decode_member(suffix, data)


def test_damaged_spans_raise() -> None:
    span = bytearray(tar_bytes(sample_members("abc", 1)))
    with pytest.raises(CorruptSample, match="end inside"):
        split_members(bytes(span[:1100]))
    span[10] ^= 0xFF
    with pytest.raises(CorruptSample, match="checksum"):
        split_members(bytes(span))
    two = tar_bytes(sample_members("a", 1)[:1] + sample_members("b", 1)[:1])
    with pytest.raises(CorruptSample, match="two keys"):
        decode_sample(split_members(two))


def test_split_key() -> None:
    assert split_key("dir/KEY.s1.jpg") == ("dir/KEY", "s1.jpg")
    assert split_key("KEY") == ("KEY", "")


def test_scan_spans_reads_headers_and_drops_a_partial_last_sample() -> None:
    members = sample_members("a", 1) + sample_members("b" * 120, 2) + sample_members("c", 3)
    data = tar_bytes(members)
    spans, complete = scan_spans(io.BytesIO(data))
    assert complete and len(spans) == 3
    for (offset, size), key in zip(spans, ["a", "b" * 120, "c"], strict=True):
        assert {split_key(n)[0] for n, _ in split_members(data[offset:offset + size])} == {key}
    spans, complete = scan_spans(io.BytesIO(data[: spans[2][0] + 600]))
    assert not complete and len(spans) == 2


def test_iter_entries_is_lazy_and_reports_every_member_type() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        link = tarfile.TarInfo("k.lnk")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        long = tarfile.TarInfo("k." + "x" * 150 + ".json")  # a PAX path
        long.size = 2
        tar.addfile(long, io.BytesIO(b"{}"))
    data = buf.getvalue()
    reads: list[int] = []

    def read_at(pos: int, n: int) -> bytes:
        reads.append(pos)
        return data[pos:pos + n]

    walk = iter_entries(read_at, len(data))
    first = next(walk)
    assert (first.name, first.regular, first.kind) == ("k.lnk", False, b"2")
    assert max(reads) == 0  # nothing past the first header was read
    second = next(walk)
    assert second.regular and second.name.endswith(".json") and second.offset == 512
    assert data[second.start:second.start + second.size] == b"{}"
    assert list(walk) == []


def test_a_span_cut_inside_padding_is_truncated() -> None:
    span = tar_bytes([("k.json", b"{}")])[:700]
    with pytest.raises(CorruptSample, match="padding") as err:
        split_members(span)
    assert err.value.reason == "truncated_shard"
