import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from relshard.errors import SpecError
from relshard.pipelines.sources import SourceLister
from relshard.record import KEY_RE
from relshard.spec import SourceSpec


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _list(*sources):
    lister = SourceLister([SourceSpec(**s) for s in sources])
    return list(lister), lister.stats


def test_folder_is_walked_recursively_in_sorted_order_and_hidden_files_are_skipped(tmp_path):
    for rel in ["b.jpg", "a/c.mp4", "a/d.png", ".DS_Store", "a/.cache/x.jpg"]:
        _touch(tmp_path / rel)
    refs, stats = _list({"path": str(tmp_path)})
    # a folder's files come before its subfolders; names sorted: deterministic on any machine
    assert [r.uri.rsplit("/", 2)[-2:] for r in refs] == [[tmp_path.name, "b.jpg"],
                                                          ["a", "c.mp4"], ["a", "d.png"]]
    assert stats.hidden_skipped == 2
    assert all(KEY_RE.match(r.input_key) for r in refs)
    assert all(r.size == 1 for r in refs)


def test_keys_depend_on_the_relative_path_not_the_machine(tmp_path):
    _touch(tmp_path / "one" / "clip.MP4")
    _touch(tmp_path / "two" / "clip.MP4")
    (a,), _ = _list({"path": str(tmp_path / "one")})
    (b,), _ = _list({"path": str(tmp_path / "two")})
    assert a.input_key == b.input_key  # same relative path, different roots
    assert a.input_key.startswith("clip-")


def test_colliding_keys_across_sources_ask_for_a_prefix(tmp_path):
    _touch(tmp_path / "one" / "x.jpg")
    _touch(tmp_path / "two" / "x.jpg")
    with pytest.raises(SpecError, match="key_prefix"):
        _list({"path": str(tmp_path / "one")}, {"path": str(tmp_path / "two")})
    refs, _ = _list({"path": str(tmp_path / "one")},
                    {"path": str(tmp_path / "two"), "key_prefix": "two"})
    assert len({r.input_key for r in refs}) == 2


def test_glob_include_and_exclude(tmp_path):
    for rel in ["a/1.jpg", "a/2.png", "b/3.jpg", "b/skip.jpg"]:
        _touch(tmp_path / rel)
    refs, _ = _list({"path": str(tmp_path / "*" / "*.jpg"), "exclude": ["*skip*"]})
    assert sorted(r.uri.rsplit("/", 1)[-1] for r in refs) == ["1.jpg", "3.jpg"]
    refs, stats = _list({"path": str(tmp_path), "include": ["*.png"]})
    assert [r.uri.rsplit("/", 1)[-1] for r in refs] == ["2.png"] and stats.excluded == 3


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_manifests_carry_extra_columns(tmp_path, fmt):
    _touch(tmp_path / "media" / "v.mp4")
    rows = [{"uri": "media/v.mp4", "label": "cat", "score": 0.5},
            {"uri": "/abs/elsewhere.jpg", "label": "dog", "score": 1.0}]
    path = tmp_path / f"list.{fmt}"
    if fmt == "csv":
        path.write_text("uri,label,score\n" + "".join(
            f"{r['uri']},{r['label']},{r['score']}\n" for r in rows))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    refs, _ = _list({"path": str(path)})
    assert refs[0].uri == str(tmp_path / "media" / "v.mp4")
    assert refs[0].extra == {"label": "cat", "score": 0.5}
    assert refs[1].uri == "/abs/elsewhere.jpg"


def test_manifest_without_uri_column_names_the_option(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("path\nx.jpg\n")
    with pytest.raises(SpecError, match="uri_column"):
        _list({"path": str(path)})


def test_missing_source_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        _list({"path": str(tmp_path / "nope")})


def test_fsspec_memory_filesystem():
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe({"/srcs/a.jpg": b"1", "/srcs/sub/b.jpg": b"22"})
    refs, _ = _list({"path": "memory://srcs"})
    assert [r.uri for r in refs] == ["memory:///srcs/a.jpg", "memory:///srcs/sub/b.jpg"]
    assert [r.size for r in refs] == [1, 2]
