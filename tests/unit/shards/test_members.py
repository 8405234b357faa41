"""A SampleDraft becomes its ordered members; bad drafts raise InvalidRecord."""

from __future__ import annotations

import json

import pytest

from relshard.record import Relation, SampleRecord, Subject
from relshard.shards.members import InvalidRecord, item_members, sample_members
from tests.unit.shards.factory import make_item


def test_single_image_members_in_order() -> None:
    item = make_item("cat")
    (sm,) = item_members(item)
    key = item.input.input_key
    assert sm.key == key
    assert [n for n, _ in sm.members] == [f"{key}.json", f"{key}.txt", f"{key}.rel.txt",
                                          f"{key}.jpg", f"{key}.s1.jpg"]
    assert sm.suffixes == ["json", "txt", "rel.txt", "jpg", "s1.jpg"]
    data = dict(sm.members)
    assert data[f"{key}.txt"] == b"a person in a red hat (cat)"
    assert data[f"{key}.rel.txt"] == b"{S1} wears {A1}"
    assert data[f"{key}.jpg"] == item.samples[0].frames[0].jpeg
    assert data[f"{key}.jpg"][:2] == b"\xff\xd8"  # a real JPEG


def test_json_is_a_valid_sorted_record_with_the_input_extras() -> None:
    item = make_item("dog", extra={"split": "val", "label": "dog"})
    (sm,) = item_members(item)
    blob = dict(sm.members)[f"{sm.key}.json"]
    text = blob.decode("utf-8")
    record = SampleRecord.model_validate_json(text)
    assert record.extra == {"split": "val", "label": "dog"}
    assert record.provenance.backend == "heuristic" and record.provenance.model is None
    assert record.relations[0].predicate == "wears"
    parsed = json.loads(text)
    assert list(parsed) == sorted(parsed)
    assert list(parsed["source"]) == sorted(parsed["source"])


def test_video_frames_are_numbered_and_single_frame_clips_too() -> None:
    item = make_item("clip", modality="video", n_samples=2, n_frames=3, crop=False)
    sms = item_members(item)
    assert [sm.suffixes for sm in sms] == [["json", "txt", "rel.txt", "f000.jpg", "f001.jpg",
                                            "f002.jpg"]] * 2
    assert sms[0].key.endswith("_c0000") and sms[1].key.endswith("_c0001")
    one = make_item("clip1", modality="video", n_frames=1, crop=False)
    assert item_members(one)[0].suffixes[-1] == "f000.jpg"


def test_extra_members_follow_frames() -> None:
    item = make_item("ev", payload=64)
    item.samples[0].add_member("times.npy", b"\x93NUMPY")
    (sm,) = item_members(item)
    assert sm.suffixes[3:] == ["jpg", "s1.jpg", "blob.bin", "times.npy"]


def test_relation_to_unknown_id_is_invalid() -> None:
    item = make_item("bad")
    item.samples[0].relations.append(Relation(subject="S1", predicate="holds", object="A9"))
    with pytest.raises(InvalidRecord) as err:
        sample_members(item, item.samples[0])
    assert err.value.reason == "invalid_record"
    assert "A9" in err.value.detail and "not a known" in err.value.detail


def test_missing_provenance_is_invalid() -> None:
    item = make_item("noprov")
    item.samples[0].provenance = None
    with pytest.raises(InvalidRecord, match="no provenance"):
        item_members(item)


def test_crop_that_names_no_member_is_invalid() -> None:
    item = make_item("nocrop", crop=False)
    item.samples[0].subjects = [Subject(id="S1", kind="person", bbox=[0, 0, 1, 1], crop="s1.jpg")]
    with pytest.raises(InvalidRecord, match="not among its members"):
        item_members(item)


def test_extra_member_clashing_with_a_core_member_is_invalid() -> None:
    item = make_item("clash")
    item.samples[0].members["jpg"] = b"another image"
    with pytest.raises(InvalidRecord, match="more than one member"):
        item_members(item)


def test_unserializable_extra_is_invalid() -> None:
    item = make_item("obj", extra={"thing": object()})
    with pytest.raises(InvalidRecord, match="JSON"):
        item_members(item)


def test_no_samples_and_duplicate_keys() -> None:
    empty = make_item("empty")
    empty.samples = []
    with pytest.raises(InvalidRecord) as err:
        item_members(empty)
    assert err.value.reason == "no_samples"
    twice = make_item("twice")
    twice.samples.append(twice.samples[0])
    with pytest.raises(InvalidRecord, match="duplicate sample keys"):
        item_members(twice)
