"""stats, verify and the inspect tar readers against broken outputs and hostile tars (issue #14)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from relshard.cli import app
from relshard.report import shardscan
from relshard.report.gallery.sample_reader import read_sample
from relshard.report.shardscan import scan_shard
from relshard.shards.layout import OutputLayout
from tests.unit.report.builds import shards_of, write_build
from tests.unit.training.hostile import (
    SECRET,
    header,
    member,
    padded,
    pax_member,
    time_limit,
)

runner = CliRunner()
END = b"\x00" * 1024


@pytest.fixture()
def build(tmp_path: Path) -> Path:
    return write_build(tmp_path / "out")


def test_stats_on_a_truncated_index_is_one_sentence_with_the_fix(build: Path) -> None:
    index = sorted((build / "index").glob("*.parquet"))[1]
    index.write_bytes(index.read_bytes()[:100])
    result = runner.invoke(app, ["stats", str(build)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "ArrowInvalid(" not in result.output
    text = " ".join(result.output.split())
    assert f"index/{index.name} is truncated or corrupt" in text
    assert f"relshard verify {build} --repair" in text
    assert runner.invoke(app, ["verify", str(build), "--repair"]).exit_code == 0
    assert runner.invoke(app, ["stats", str(build), "--records", "0"]).exit_code == 0


def test_stats_on_a_corrupt_rejects_file_names_it(build: Path) -> None:
    rejects = sorted((build / "rejects").glob("*.parquet"))[0]
    rejects.write_bytes(b"PAR1" + b"\x00" * 50)
    result = runner.invoke(app, ["stats", str(build)])
    assert result.exit_code == 2
    assert f"rejects/{rejects.name} is truncated or corrupt" in " ".join(result.output.split())


def test_stats_and_verify_say_a_shard_is_missing(build: Path) -> None:
    gone = shards_of(build)[0]
    gone.unlink()
    result = runner.invoke(app, ["stats", str(build), "--records", "0"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert f"1 shard(s) named by the index or manifest are missing (shards/{gone.name})" in text
    checked = runner.invoke(app, ["verify", str(build), "--json"])
    assert checked.exit_code == 1 and f"shards/{gone.name}: missing" in checked.stdout


def _scan(tmp_path: Path, data: bytes):
    (tmp_path / "shards").mkdir(exist_ok=True)
    (tmp_path / "shards" / "x.tar").write_bytes(data)
    with time_limit(10):
        return scan_shard(OutputLayout.open(str(tmp_path)), "shards/x.tar", lambda _s: None)


def test_shardscan_refuses_a_huge_pax_header_quickly(tmp_path: Path) -> None:
    """tarfile's pax parsing is quadratic on Python < 3.11.10 (CVE-2024-6232): 200 kB of
    digits took ~40 s; the scan refuses pax headers over 64 kB instead."""
    records = b"1" * 200_000 + b" " + b"x" * 200_000
    scan = _scan(tmp_path, pax_member(records, "a.json", b"{}") + END)
    assert any("pax header of" in p for p in scan.problems)


def test_shardscan_ends_on_bad_pax_and_garbage_and_quotes_no_bytes(tmp_path: Path) -> None:
    for data in (pax_member(b"0 \n", "a.json", b"{}") + END, SECRET * 30 + END,
                 header("a.json", 0, size_field=b"SECRET-HASH!") + END,
                 member("a.json", b'{"pw": "' + SECRET + b'"') + END):
        scan = _scan(tmp_path, data)
        assert scan.problems or scan.nsamples
        assert "SECRET" not in repr(scan.problems)


def test_shardscan_does_not_read_an_oversized_record(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shardscan, "MAX_RECORD", 1000)
    seen = []
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "x.tar").write_bytes(member("a.json", b" " * 5000 + b"{}") + END)
    scan_shard(OutputLayout.open(str(tmp_path)), "shards/x.tar", seen.append)
    assert "over the 1000-byte cap" in seen[0].record_error


def test_gallery_reader_quotes_no_header_bytes(tmp_path: Path) -> None:
    (tmp_path / "shards").mkdir()
    data = header("k.json", 0, size_field=b"SECRET-HASH!") + padded(b"{}")
    (tmp_path / "shards" / "x.tar").write_bytes(data)
    for blob in (data, pax_member(b"0 \n", "k.json", b"{}")):
        (tmp_path / "shards" / "x.tar").write_bytes(blob)
        with time_limit(10):
            got = read_sample(OutputLayout.open(str(tmp_path)),
                              {"key": "k", "shard": "shards/x.tar", "offset": 0,
                               "size": len(blob)})
        assert got.problems and "SECRET" not in repr(got.problems)
