"""Subject detection on real photos, composites of them, and drawn people."""

from __future__ import annotations

import numpy as np
import pytest

from relshard.spec import DetectSpec
from relshard.workers.detect import cascades, subjects
from relshard.workers.detect.cascades import Detection
from relshard.workers.detect.nms import containment, iou, iou_matrix, nms
from relshard.workers.detect.subjects import (
    Candidate,
    SubjectDetector,
    link_tracks,
    merge_faces_into_persons,
)
from tests.unit.workers.detect.scenes import (
    ASTRONAUT_FACE,
    GRACE_FACE,
    photo,
    shifted,
    side_by_side,
    standing_figure,
    zoomed,
)


def cascade_spec(**kw) -> DetectSpec:
    """Today's OpenCV cascades + HOG, faces kept as face subjects (what these tests pin)."""
    return DetectSpec(backend="opencv", body_from_face=False, **kw)


FACES_ONLY = cascade_spec(persons=False, profile_faces=False)  # frontal Haar: fast


def _centre_x(s) -> float:
    return (s.bbox[0] + s.bbox[2]) / 2


def _norm(box, w, h):
    return [box[0] / w, box[1] / h, box[2] / w, box[3] / h]


# --- geometry -------------------------------------------------------------------


def test_iou_and_containment():
    a = [0, 0, 10, 10]
    assert iou(a, a) == 1.0
    assert iou(a, [20, 20, 30, 30]) == 0.0
    assert iou(a, [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert iou(a, [3, 3, 3, 9]) == 0.0  # degenerate
    assert containment([2, 2, 4, 4], a) == 1.0
    assert containment([5, 5, 15, 15], a) == pytest.approx(0.25)
    m = iou_matrix([a, [5, 0, 15, 10]], [a, [20, 20, 30, 30]])
    assert m.shape == (2, 2)
    assert m[0, 0] == 1.0 and m[1, 0] == pytest.approx(1 / 3) and m[0, 1] == 0.0
    assert iou_matrix([], [a]).shape == (0, 1)


def test_nms_suppresses_overlaps_and_keeps_the_rest():
    boxes = [[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]]
    scores = [0.8, 0.9, 0.5, 0.1]
    assert nms(boxes, scores, 0.4) == [1, 2]
    assert nms(boxes, scores, 0.99) == [1, 0, 2]  # only the exact duplicate goes
    assert nms([], [], 0.4) == []
    with pytest.raises(ValueError):
        nms(boxes, [1.0], 0.4)


# --- faces on real photos -----------------------------------------------------


def test_grace_hopper_is_one_face_subject_with_a_crop():
    image = photo("grace_hopper")
    found, crops = SubjectDetector(cascade_spec(crop_side=64)).detect([image])
    assert len(found) == 1
    s = found[0]
    assert (s.id, s.kind, s.frame, s.crop, s.track) == ("S1", "face", 0, "s1.jpg", [])
    assert s.detector == "haar-frontal" and 0 < s.score <= 1
    expected = _norm(GRACE_FACE, image.shape[1], image.shape[0])
    assert iou(s.bbox, expected) > 0.8
    crop = crops["s1.jpg"]
    assert crop.dtype == np.uint8 and crop.ndim == 3 and max(crop.shape[:2]) <= 64
    assert set(crops) == {"s1.jpg"}


def test_a_cat_is_not_a_person():
    found, crops = SubjectDetector(cascade_spec()).detect([photo("chelsea")])
    assert found == [] and crops == {}


@pytest.mark.parametrize("grace_left", [True, False])
def test_side_by_side_people_are_numbered_left_to_right(grace_left: bool):
    grace, astro = photo("grace_hopper"), photo("astronaut")
    scene = side_by_side(grace, astro) if grace_left else side_by_side(astro, grace)
    found, crops = SubjectDetector(FACES_ONLY).detect([scene])
    assert [s.id for s in found] == ["S1", "S2"]
    assert _centre_x(found[0]) < 0.5 < _centre_x(found[1])
    sizes = [s.bbox[2] - s.bbox[0] for s in found]
    # Grace's face is the larger one: it must be where she was pasted.
    assert (sizes[0] > sizes[1]) == grace_left
    assert set(crops) == {"s1.jpg", "s2.jpg"}


def test_boxes_map_back_from_the_detection_size():
    scene = side_by_side(photo("grace_hopper"), photo("astronaut"))  # 1112 x 600
    full, _ = SubjectDetector(FACES_ONLY.model_copy(update={"detect_side": 1200})).detect([scene])
    small, _ = SubjectDetector(FACES_ONLY.model_copy(update={"detect_side": 400})).detect([scene])
    assert len(full) == len(small) == 2
    for a, b in zip(full, small, strict=True):
        assert iou(a.bbox, b.bbox) > 0.75


def test_detection_runs_at_detect_side_and_never_upscales(monkeypatch: pytest.MonkeyPatch):
    seen: list[tuple[int, ...]] = []

    def spy(gray: np.ndarray, min_px: int) -> list[Detection]:
        seen.append(gray.shape)
        return []

    monkeypatch.setattr(cascades, "detect_frontal_faces", spy)
    scene = side_by_side(photo("grace_hopper"), photo("astronaut"))  # 1112 x 600
    SubjectDetector(cascade_spec(persons=False, profile_faces=False)).detect([scene])
    SubjectDetector(cascade_spec(persons=False, profile_faces=False, detect_side=2000)).detect(
        [scene])
    assert seen == [(345, 640), (600, 1112)]


def test_min_face_px_is_in_stored_frame_pixels():
    astro = photo("astronaut")  # a 95 px face
    assert len(SubjectDetector(cascade_spec(persons=False, min_face_px=80)).detect([astro])[0]) == 1
    assert SubjectDetector(cascade_spec(persons=False, min_face_px=120)).detect([astro])[0] == []


def test_max_subjects_keeps_the_largest():
    scene = side_by_side(photo("astronaut"), photo("grace_hopper"))
    found, crops = SubjectDetector(cascade_spec(persons=False, max_subjects=1)).detect([scene])
    assert len(found) == 1 and found[0].id == "S1"
    assert _centre_x(found[0]) > 0.5  # Grace, on the right, has the larger face
    assert list(crops) == ["s1.jpg"]
    assert SubjectDetector(cascade_spec(max_subjects=0)).detect([scene]) == ([], {})


def test_detectors_can_be_turned_off():
    grace = photo("grace_hopper")
    assert SubjectDetector(cascade_spec(faces=False, persons=False)).detect([grace]) == ([], {})
    assert SubjectDetector(cascade_spec(faces=False)).detect([grace])[0] == []


def test_profile_faces_are_found_on_both_sides(monkeypatch: pytest.MonkeyPatch):
    grace = photo("grace_hopper")
    gray = cascades.prepare_gray(grace)
    calls = []
    original = cascades._haar

    def spy(classifier, image, min_px, scale_factor, neighbours):
        calls.append(image.copy())
        return original(classifier, image, min_px, scale_factor, neighbours)

    monkeypatch.setattr(cascades, "_haar", spy)
    cascades.detect_profile_faces(gray, 24)
    assert len(calls) == 2
    assert np.array_equal(calls[0], gray) and np.array_equal(calls[1], gray[:, ::-1])


def test_mirrored_profile_boxes_are_mapped_back(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cascades, "_haar", lambda *a: [(np.array([10, 20, 30, 30]), 7)])
    found = cascades.detect_profile_faces(np.zeros((100, 200), np.uint8), 24)
    assert [d.box for d in found] == [(10, 20, 40, 50), (160, 20, 190, 50)]
    assert all(d.detector == "haar-profile" and d.score == pytest.approx(7 / 15) for d in found)


def test_suppress_merges_duplicates_across_detectors():
    frontal = Detection((100, 100, 200, 200), 0.8, "face", "haar-frontal")
    profile = Detection((105, 102, 205, 204), 0.5, "face", "haar-profile")
    inner = Detection((130, 130, 180, 180), 0.4, "face", "haar-profile")  # IoU .25, inside
    person = Detection((60, 80, 260, 600), 0.6, "person", "hog")
    apart = Detection((400, 100, 480, 180), 0.3, "face", "haar-frontal")
    kept = subjects.suppress([profile, inner, frontal, person, apart], 0.4)
    assert kept == [frontal, person, apart]


def test_duplicate_face_hits_make_one_subject(monkeypatch: pytest.MonkeyPatch):
    def echo(gray: np.ndarray, min_px: int) -> list[Detection]:
        x0, y0, x1, y1 = GRACE_FACE
        return [Detection((x0 + 6, y0 + 4, x1 + 6, y1 + 4), 0.4, "face", "haar-profile")]

    monkeypatch.setattr(cascades, "detect_profile_faces", echo)
    found, _ = SubjectDetector(cascade_spec(persons=False)).detect([photo("grace_hopper")])
    assert [(s.kind, s.detector) for s in found] == [("face", "haar-frontal")]


# --- people ------------------------------------------------------------------


def test_hog_finds_a_standing_person():
    found, crops = SubjectDetector(cascade_spec()).detect([standing_figure()])
    assert len(found) == 1
    s = found[0]
    assert s.kind == "person" and s.detector == "hog" and s.face_bbox is None
    assert s.bbox[0] < 0.5 < s.bbox[2] and s.bbox[1] < 0.2 and s.bbox[3] > 0.3
    assert "s1.jpg" in crops
    assert SubjectDetector(cascade_spec(persons=False)).detect([standing_figure()])[0] == []


def test_weak_hog_hits_are_rejected():
    figure = standing_figure()
    assert cascades.detect_people(figure)  # found at the default threshold
    assert cascades.detect_people(figure, min_weight=50.0) == []


def test_no_people_are_made_of_flags_and_suits():
    scene = side_by_side(photo("grace_hopper"), photo("astronaut"))[:, :1104]
    cfg = cascade_spec(faces=False)
    for dx in (4, 8, 12):  # weak false HOG hits (weights 0.5-0.8) on the flag
        assert SubjectDetector(cfg).detect([shifted(scene, dx)])[0] == []


def _fake_people(box: tuple[float, float, float, float]):
    def fake(rgb: np.ndarray, min_weight: float = 1.0) -> list[Detection]:
        return [Detection(box, 0.6, "person", "hog")]
    return fake


def test_a_face_inside_a_person_is_one_subject(monkeypatch: pytest.MonkeyPatch):
    person = (120.0, 40.0, 330.0, 512.0)  # around the astronaut, face in its upper half
    monkeypatch.setattr(cascades, "detect_people", _fake_people(person))
    found, _ = SubjectDetector(cascade_spec()).detect([photo("astronaut")])
    assert len(found) == 1
    s = found[0]
    assert s.kind == "person" and s.detector == "hog+haar-frontal"
    assert s.bbox == pytest.approx(_norm(person, 512, 512), abs=1e-4)
    assert iou(s.face_bbox, _norm(ASTRONAUT_FACE, 512, 512)) > 0.8


def test_a_torso_under_a_face_is_not_another_person(monkeypatch: pytest.MonkeyPatch):
    torso = (190.0, 190.0, 330.0, 500.0)  # HOG firing on the suit below the face
    monkeypatch.setattr(cascades, "detect_people", _fake_people(torso))
    found, _ = SubjectDetector(cascade_spec()).detect([photo("astronaut")])
    assert [s.kind for s in found] == ["face"]


def test_merge_pairs_each_face_with_one_person():
    person = Candidate("person", (0.1, 0.1, 0.4, 0.9), 0.5, "hog")
    inside = Candidate("face", (0.2, 0.15, 0.3, 0.25), 0.8, "haar-frontal")
    low = Candidate("face", (0.2, 0.7, 0.3, 0.8), 0.7, "haar-frontal")  # lower half
    other = Candidate("face", (0.6, 0.1, 0.7, 0.2), 0.9, "haar-frontal")
    merged = merge_faces_into_persons([person, inside, low, other])
    persons = [c for c in merged if c.kind == "person"]
    assert len(merged) == 3 and len(persons) == 1
    assert persons[0].face == inside.box and persons[0].score == 0.8
    assert {c.box for c in merged if c.kind == "face"} == {low.box, other.box}
    big = Candidate("face", (0.1, 0.1, 0.4, 0.5), 0.8, "haar-frontal")  # not much smaller
    assert len(merge_faces_into_persons([person, big])) == 2


# --- clips -------------------------------------------------------------------


def test_a_face_moving_a_few_pixels_is_one_track():
    grace = photo("grace_hopper")
    frames = [shifted(grace, 4 * i, 2 * i) for i in range(4)]
    found, crops = SubjectDetector(FACES_ONLY).detect(frames)
    assert len(found) == 1 and list(crops) == ["s1.jpg"]
    assert [p.frame for p in found[0].track] == [0, 1, 2, 3]
    xs = [p.bbox[0] for p in found[0].track]
    assert xs[-1] > xs[0]  # the box follows the shift


def test_the_subject_box_comes_from_the_frame_where_it_is_largest():
    grace = photo("grace_hopper")
    centre = ((GRACE_FACE[0] + GRACE_FACE[2]) / 2, (GRACE_FACE[1] + GRACE_FACE[3]) / 2)
    frames = [grace, zoomed(grace, 1.2, centre), shifted(grace, 3)]
    found, _ = SubjectDetector(FACES_ONLY).detect(frames)
    assert len(found) == 1
    assert found[0].frame == 1
    assert found[0].bbox == found[0].track[1].bbox


def test_a_jump_across_the_frame_starts_a_new_track():
    grace = photo("grace_hopper")
    blank = np.full_like(grace, 128)
    frames = [side_by_side(grace, blank), side_by_side(blank, grace)]
    found, _ = SubjectDetector(FACES_ONLY).detect(frames)
    assert len(found) == 2
    assert [s.frame for s in found] == [0, 1]
    assert all(len(s.track) == 1 for s in found)


def test_link_tracks_greedy_and_gaps():
    a0 = Candidate("face", (0.1, 0.1, 0.2, 0.2), 0.9, "f", frame=0)
    b0 = Candidate("face", (0.6, 0.1, 0.7, 0.2), 0.9, "f", frame=0)
    a1 = Candidate("face", (0.11, 0.1, 0.21, 0.2), 0.9, "f", frame=1)
    a3 = Candidate("face", (0.12, 0.1, 0.22, 0.2), 0.9, "f", frame=3)
    b3 = Candidate("person", (0.55, 0.05, 0.75, 0.9), 0.9, "hog+f", frame=3,
                   face=(0.6, 0.1, 0.7, 0.2))
    tracks = link_tracks([[a0, b0], [a1], [], [a3, b3]])
    assert [[c.frame for c in t] for t in tracks] == [[0, 1, 3], [0, 3]]
    assert tracks[1][1].kind == "person"  # linked through its face
    assert len(link_tracks([[a0], [], [], [], [a3]], max_gap=2)) == 2


# --- input checking ---------------------------------------------------------------


def test_bad_frames_are_bugs_and_no_frames_is_nothing():
    det = SubjectDetector(cascade_spec())
    assert det.detect([]) == ([], {})
    with pytest.raises(ValueError):
        det.detect([np.zeros((10, 10, 3), np.float32)])
    with pytest.raises(ValueError):
        det.detect([np.zeros((10, 10), np.uint8)])
