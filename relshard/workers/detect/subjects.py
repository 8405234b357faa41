"""Subject detection: faces and people in a sample's stored frames, as :class:`Subject` s.

For each frame (RGB uint8, H x W x 3):

1. downscale so the long side is at most ``cfg.detect_side`` (never upscale);
2. run the backend ``cfg.backend`` (:mod:`relshard.workers.detect.backends`:
   CenterFace by default, or OpenCV's Haar faces and HOG people) for faces at
   least ``cfg.min_face_px`` wide *in stored-frame pixels*, and people;
3. non-maximum suppression at ``cfg.nms_iou`` across all detectors; among faces a
   box lying mostly inside a higher-scored face is dropped too (a frontal and a
   profile hit on one face need not reach the IoU threshold);
4. a face whose centre lies in the upper half of a person box, and that is much
   smaller than it, becomes that person's ``face_bbox``: one subject, not two;
5. a faceless person box that hangs right under a face (HOG fires on the torso of
   head-and-shoulders portraits) is that face's body and is dropped;
6. with ``cfg.body_from_face`` a face that no person box claimed becomes a person
   whose box is estimated from the face (:mod:`relshard.workers.detect.body`),
   ``face_bbox`` the face and ``detector`` ending in ``+body-estimate``.

A clip's keyframes are linked into tracks by greedy IoU matching; one subject per
track, with its box and crop taken from the frame where it is largest and its
per-frame boxes in ``track``. At most ``cfg.max_subjects`` subjects are kept
(largest first); they are then numbered ``S1..Sn`` left to right by box centre.
Boxes are normalized ``[x0, y0, x1, y1]`` of the stored frame.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, cast, overload

import cv2
import numpy as np

from relshard.record import Subject, TrackPoint
from relshard.spec import DetectSpec
from relshard.workers.detect.backends import DetectorBackend, NoDetector, build_detector
from relshard.workers.detect.body import BODY_ESTIMATE, estimate_body
from relshard.workers.detect.cascades import Detection
from relshard.workers.detect.nms import box_area, containment, iou, nms

Box = tuple[float, float, float, float]

FACE_IN_FACE = 0.8  # a face box this much inside a higher-scored face is a duplicate
FACE_MAX_AREA_SHARE = 0.25  # a face inside a person covers at most this share of its box
TRACK_IOU = 0.3  # least IoU that links a detection to a track
TRACK_MAX_GAP = 2  # a track may miss this many keyframes and still be continued
CROP_MARGIN = 0.1  # crops extend the box by this share of its size on each side
ROUND = 5  # decimals kept in normalized boxes


@dataclass(frozen=True)
class Candidate:
    """A subject on one frame, in normalized coordinates."""

    kind: Literal["person", "face"]
    box: Box
    score: float
    detector: str
    frame: int = 0
    face: Box | None = None

    @property
    def area(self) -> float:
        return box_area(self.box)

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)


def _check_frame(frame: np.ndarray, index: int) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        raise ValueError(f"frame {index} must be a uint8 numpy array")
    if frame.ndim != 3 or frame.shape[2] != 3 or min(frame.shape[:2]) < 1:
        raise ValueError(f"frame {index} must be H x W x 3 (RGB), got shape {frame.shape}")


def downscale(rgb: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """``rgb`` with its long side at most ``side``, and the factor applied (<= 1)."""
    h, w = rgb.shape[:2]
    scale = min(1.0, side / max(h, w))
    if scale >= 1.0:
        return rgb, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), scale


def _normalize(box: Box, width: int, height: int) -> Box:
    x0, y0, x1, y1 = box
    return (
        min(max(x0 / width, 0.0), 1.0),
        min(max(y0 / height, 0.0), 1.0),
        min(max(x1 / width, 0.0), 1.0),
        min(max(y1 / height, 0.0), 1.0),
    )


def suppress(dets: list[Detection], iou_threshold: float) -> list[Detection]:
    """NMS across all detectors, then drop faces lying mostly inside a kept face."""
    kept = [dets[i] for i in nms([d.box for d in dets], [d.score for d in dets], iou_threshold)]
    out: list[Detection] = []
    for det in kept:  # highest score first
        if det.kind == "face" and any(
            o.kind == "face" and containment(det.box, o.box) >= FACE_IN_FACE for o in out
        ):
            continue
        out.append(det)
    return out


def face_in_person(face: Box, person: Box) -> bool:
    """Whether ``face`` is the face of ``person``: centre in the upper half, much smaller."""
    cx, cy = (face[0] + face[2]) / 2, (face[1] + face[3]) / 2
    upper = person[1] + (person[3] - person[1]) / 2
    if not (person[0] <= cx <= person[2] and person[1] <= cy <= upper):
        return False
    return box_area(face) <= FACE_MAX_AREA_SHARE * box_area(person)


def merge_faces_into_persons(cands: list[Candidate]) -> list[Candidate]:
    """Pair faces with the persons they belong to (greedy, closest to the box's axis).

    Each person takes at most one face and each face joins at most one person; a
    merged subject keeps the person's box, the face as ``face``, the higher score
    and both detector names. Unpaired faces and persons stay as they are.
    """
    persons = [c for c in cands if c.kind == "person" and c.face is None]
    faces = [c for c in cands if c.kind == "face"]
    pairs = []
    for pi, p in enumerate(persons):
        width = max(p.box[2] - p.box[0], 1e-9)
        for fi, f in enumerate(faces):
            if face_in_person(f.box, p.box):
                pairs.append((abs(f.centre[0] - p.centre[0]) / width, pi, fi))
    used_p: set[int] = set()
    used_f: set[int] = set()
    merged: list[Candidate] = []
    for _, pi, fi in sorted(pairs):
        if pi in used_p or fi in used_f:
            continue
        used_p.add(pi)
        used_f.add(fi)
        p, f = persons[pi], faces[fi]
        merged.append(replace(p, face=f.box, score=max(p.score, f.score),
                              detector=f"{p.detector}+{f.detector}"))
    rest = [c for c in cands if c.kind == "person" and c.face is not None]
    rest += [p for i, p in enumerate(persons) if i not in used_p]
    rest += [f for i, f in enumerate(faces) if i not in used_f]
    return merged + rest


def body_below_face(face: Box, person: Box) -> bool:
    """Whether ``person`` is just the body under ``face`` (HOG firing on a torso).

    True when the person box starts between the face's middle and one face height
    under its chin, is centred within 1.5 face widths of the face's axis, and is at
    most 6 face heights tall (a separate standing person would be taller, or carry
    its own face).
    """
    fw, fh = face[2] - face[0], face[3] - face[1]
    fcx, fcy = (face[0] + face[2]) / 2, (face[1] + face[3]) / 2
    pcx = (person[0] + person[2]) / 2
    return (
        fcy <= person[1] <= face[3] + fh
        and abs(pcx - fcx) <= 1.5 * fw
        and person[3] - person[1] <= 6 * fh
    )


def drop_bodies_below_faces(cands: list[Candidate]) -> list[Candidate]:
    """Remove faceless person boxes that are only the body of a known face."""
    faces = [c.box if c.kind == "face" else c.face for c in cands]
    known = [f for f in faces if f is not None]
    return [
        c for c in cands
        if not (c.kind == "person" and c.face is None
                and any(body_below_face(f, c.box) for f in known))
    ]


def bodies_from_faces(cands: list[Candidate]) -> list[Candidate]:
    """Faces that no person claimed become persons with a box estimated from the face."""
    return [
        replace(c, kind="person", box=estimate_body(c.box), face=c.box,
                detector=f"{c.detector}+{BODY_ESTIMATE}") if c.kind == "face" else c
        for c in cands
    ]


def _link_score(a: Candidate, b: Candidate) -> float:
    """How well ``b`` continues ``a``: IoU of bodies, or of faces across kinds."""
    if a.kind == b.kind:
        return iou(a.box, b.box)
    face_a = a.box if a.kind == "face" else a.face
    face_b = b.box if b.kind == "face" else b.face
    return iou(face_a, face_b) if face_a is not None and face_b is not None else 0.0


def link_tracks(per_frame: list[list[Candidate]], min_iou: float = TRACK_IOU,
                max_gap: int = TRACK_MAX_GAP) -> list[list[Candidate]]:
    """Greedy IoU linking of per-frame candidates into tracks (lists in frame order)."""
    tracks: list[list[Candidate]] = []
    for t, cands in enumerate(per_frame):
        active = [i for i, tr in enumerate(tracks) if t - tr[-1].frame <= max_gap + 1]
        pairs = [
            (score, ti, ci)
            for ti in active
            for ci, c in enumerate(cands)
            if (score := _link_score(tracks[ti][-1], c)) >= min_iou
        ]
        taken_t: set[int] = set()
        taken_c: set[int] = set()
        for _, ti, ci in sorted(pairs, key=lambda p: (-p[0], p[1], p[2])):
            if ti in taken_t or ci in taken_c:
                continue
            taken_t.add(ti)
            taken_c.add(ci)
            tracks[ti].append(cands[ci])
        tracks.extend([c] for ci, c in enumerate(cands) if ci not in taken_c)
    return tracks


@overload
def _round(box: Box) -> list[float]: ...
@overload
def _round(box: Box | None) -> list[float] | None: ...
def _round(box: Box | None) -> list[float] | None:
    return None if box is None else [round(float(v), ROUND) for v in box]


def crop_subject(rgb: np.ndarray, box: Box, max_side: int,
                 margin: float = CROP_MARGIN) -> np.ndarray:
    """The region of normalized ``box`` (plus ``margin``) of ``rgb``, long side <= max_side."""
    h, w = rgb.shape[:2]
    mx, my = (box[2] - box[0]) * margin, (box[3] - box[1]) * margin
    x0 = min(max(int(np.floor((box[0] - mx) * w)), 0), w - 1)
    y0 = min(max(int(np.floor((box[1] - my) * h)), 0), h - 1)
    x1 = max(min(int(np.ceil((box[2] + mx) * w)), w), x0 + 1)
    y1 = max(min(int(np.ceil((box[3] + my) * h)), h), y0 + 1)
    crop = rgb[y0:y1, x0:x1]
    small, _ = downscale(crop, max_side)
    return np.ascontiguousarray(small)


class SubjectDetector:
    """Finds the people and faces of a sample's frames (see the module doc)."""

    def __init__(self, cfg: DetectSpec, backend: DetectorBackend | None = None) -> None:
        self.cfg = cfg
        self._backend = backend

    @property
    def backend(self) -> DetectorBackend:
        """The detector backend, built on first use (loads its model in this process)."""
        if self._backend is None:
            self._backend = build_detector(self.cfg)
        return self._backend

    def detect_frame(self, rgb: np.ndarray, frame: int = 0) -> list[Candidate]:
        """Candidates of one RGB frame, normalized to it, faces merged into persons."""
        small, scale = downscale(rgb, self.cfg.detect_side)
        height, width = small.shape[:2]
        min_px = max(1, round(self.cfg.min_face_px * scale))
        dets: list[Detection] = self.backend.detect(small, min_px)
        cands = [
            Candidate(d.kind, _normalize(d.box, width, height), d.score, d.detector, frame)
            for d in suppress(dets, self.cfg.nms_iou)
        ]
        cands = drop_bodies_below_faces(merge_faces_into_persons(cands))
        return bodies_from_faces(cands) if self.cfg.body_from_face else cands

    def detect(self, frames: list[np.ndarray]) -> tuple[list[Subject], dict[str, np.ndarray]]:
        """Subjects ``S1..Sn`` (left to right) of one sample, and their RGB crops.

        ``frames`` are the sample's stored frames (RGB uint8 H x W x 3): one for an
        image, the keyframes for a clip. Crops are keyed by member suffix
        (``"s1.jpg"``: lowercase, as webdataset lowercases suffixes), the same string as
        ``Subject.crop``.
        """
        for i, frame in enumerate(frames):
            _check_frame(frame, i)
        if not frames or self.cfg.max_subjects == 0 or isinstance(self.backend, NoDetector):
            return [], {}  # nothing to find: skip downscaling every frame for it
        tracks = link_tracks([self.detect_frame(f, i) for i, f in enumerate(frames)])
        best = [max(tr, key=lambda c: (c.area, -c.frame)) for tr in tracks]
        order = sorted(range(len(tracks)), key=lambda i: -best[i].area)[: self.cfg.max_subjects]
        order.sort(key=lambda i: (best[i].centre[0], best[i].centre[1]))
        subjects: list[Subject] = []
        crops: dict[str, np.ndarray] = {}
        for n, ti in enumerate(order, start=1):
            subject = self._subject(n, best[ti], tracks[ti], clip=len(frames) > 1)
            crops[cast(str, subject.crop)] = crop_subject(frames[best[ti].frame], best[ti].box,
                                               self.cfg.crop_side)
            subjects.append(subject)
        return subjects, crops

    @staticmethod
    def _subject(n: int, rep: Candidate, track: list[Candidate], clip: bool) -> Subject:
        points = [TrackPoint(frame=c.frame, bbox=_round(c.box)) for c in track] if clip else []
        return Subject(
            id=f"S{n}",
            kind=rep.kind,
            bbox=_round(rep.box),
            frame=rep.frame,
            face_bbox=_round(rep.face),
            score=round(max(c.score for c in track), 4),
            detector=rep.detector,
            crop=f"s{n}.jpg",
            track=points,
        )
