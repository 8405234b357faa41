"""No input takes the listing down, and the output is never listed as input (issue #14)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from relshard.errors import SpecError
from relshard.pipelines import sources as sources_mod
from relshard.pipelines.sources import SourceLister
from relshard.record import make_input_key
from relshard.spec import SourceSpec


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _lister(*paths: Path, output: Path | None = None) -> SourceLister:
    return SourceLister([SourceSpec(path=str(p)) for p in paths],
                        output=str(output) if output else None)


def _names(refs) -> list[str]:
    return sorted(r.uri.rsplit("/", 1)[-1] for r in refs)


def test_a_symlink_loop_is_a_reject_not_a_crash(tmp_path: Path) -> None:
    _touch(tmp_path / "a.jpg")
    os.symlink(tmp_path / "loop1", tmp_path / "loop2")
    os.symlink(tmp_path / "loop2", tmp_path / "loop1")
    lister = _lister(tmp_path)
    refs = list(lister)
    assert _names(refs) == ["a.jpg"]
    assert {(r.reason, r.input_key) for r in lister.rejects} == {
        ("symlink_loop", make_input_key("loop1")), ("symlink_loop", make_input_key("loop2"))}
    assert lister.stats.rejected == {"symlink_loop": 2}


def test_a_folder_symlink_to_an_ancestor_is_followed_once(tmp_path: Path) -> None:
    _touch(tmp_path / "sub" / "b.jpg")
    os.symlink(tmp_path, tmp_path / "sub" / "up")  # a directory loop
    lister = _lister(tmp_path)
    refs = list(lister)
    assert _names(refs) == ["b.jpg"]
    assert lister.stats.symlinks_skipped == 1 and not lister.rejects


def test_folder_symlinks_are_walked_after_the_real_tree_and_counted(tmp_path: Path) -> None:
    src, elsewhere = tmp_path / "src", tmp_path / "elsewhere"
    _touch(src / "z" / "real.jpg")
    _touch(elsewhere / "far.jpg")
    os.symlink(src / "z", src / "0-link-to-z")  # a second way to the same files
    os.symlink(elsewhere, src / "ext")  # a folder outside the source: followed
    lister = _lister(src)
    refs = list(lister)
    assert _names(refs) == ["far.jpg", "real.jpg"]
    assert [r.uri for r in refs if r.uri.endswith("real.jpg")] == [str(src / "z" / "real.jpg")]
    assert lister.stats.symlinks_skipped == 1


def test_dangling_symlinks_are_counted(tmp_path: Path) -> None:
    _touch(tmp_path / "a.jpg")
    os.symlink(tmp_path / "gone.jpg", tmp_path / "dangling.jpg")
    os.symlink(tmp_path / "a.jpg", tmp_path / "alias.jpg")  # a link to a file is an input
    lister = _lister(tmp_path)
    assert _names(list(lister)) == ["a.jpg", "alias.jpg"]
    assert lister.stats.dangling_symlinks == 1


def _failing_scandir(monkeypatch: pytest.MonkeyPatch, target: Path, exc: OSError) -> None:
    real = os.scandir

    def scandir(path):  # noqa: ANN001, ANN202
        if Path(path) == target:
            raise exc
        return real(path)

    monkeypatch.setattr(sources_mod.os, "scandir", scandir)


def test_an_unreadable_folder_is_a_permission_denied_reject(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _touch(tmp_path / "ok" / "a.jpg")
    _touch(tmp_path / "locked" / "b.jpg")
    _failing_scandir(monkeypatch, tmp_path / "locked",
                     PermissionError(13, "Permission denied"))
    lister = _lister(tmp_path)
    assert _names(list(lister)) == ["a.jpg"]
    (rej,) = lister.rejects
    assert (rej.reason, rej.input_key) == ("permission_denied", make_input_key("locked"))
    assert "Permission denied" in rej.detail


def test_a_folder_that_vanishes_mid_listing_is_a_vanished_reject(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _touch(tmp_path / "a.jpg")
    _touch(tmp_path / "tmpdir" / "b.jpg")
    _failing_scandir(monkeypatch, tmp_path / "tmpdir", FileNotFoundError(2, "No such file"))
    lister = _lister(tmp_path)
    assert _names(list(lister)) == ["a.jpg"]
    assert [r.reason for r in lister.rejects] == ["vanished"]


def test_the_output_inside_a_source_is_left_out_and_said(tmp_path: Path) -> None:
    _touch(tmp_path / "a.jpg")
    out = tmp_path / "out"
    _touch(out / "shards" / "x.tar")
    _touch(out / "spec.resolved.json", b"{}")
    lister = _lister(tmp_path, output=out)
    lister.check()
    assert _names(list(lister)) == ["a.jpg"]
    assert lister.stats.output_excluded == [str(out)]


def test_the_output_inside_a_glob_source_is_left_out(tmp_path: Path) -> None:
    _touch(tmp_path / "in" / "a.jpg")
    _touch(tmp_path / "out" / "b.jpg")
    lister = SourceLister([SourceSpec(path=str(tmp_path / "*" / "*.jpg"))],
                          output=str(tmp_path / "out"))
    lister.check()
    assert _names(list(lister)) == ["a.jpg"]


@pytest.mark.parametrize("inside", ["out", "out/shards"])
def test_a_source_inside_the_output_is_refused_before_any_work(tmp_path: Path,
                                                                 inside: str) -> None:
    _touch(tmp_path / "out" / "shards" / "x.tar")
    lister = _lister(tmp_path / inside, output=tmp_path / "out")
    with pytest.raises(SpecError, match="inside the output folder"):
        lister.check()


def test_a_missing_source_is_refused_by_check(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        _lister(tmp_path / "nope", output=tmp_path / "out").check()
    assert not (tmp_path / "out").exists()


def test_the_output_in_a_memory_source_is_left_out() -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe({"/hsrc/a.jpg": b"1", "/hsrc/out/shards/x.tar": b"2"})
    lister = SourceLister([SourceSpec(path="memory://hsrc")], output="memory://hsrc/out")
    lister.check()
    assert [r.uri for r in lister] == ["memory:///hsrc/a.jpg"]
    with pytest.raises(SpecError, match="inside the output"):
        SourceLister([SourceSpec(path="memory://hsrc/out/shards")],
                     output="memory://hsrc/out").check()
