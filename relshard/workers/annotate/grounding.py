"""Subjects the model grounds itself: its boxes read, checked, merged with the detector's.

With ``annotate.subjects: both`` (the default) or ``model``, the prompt asks the model
to list the subjects it sees, with boxes; with ``detector`` nothing here runs and
the prompts are those of before (``v1`` by default, byte for byte).

Where the model lists them
    ``single`` mode: in the one answer, as ``"subjects": [{"id": "S3", "kind":
    "person", "bbox": [...]}, ...]`` beside the attributes, relations and captions.
    The detected subjects are shown as ``S1..Sn``; the model lists the ones the
    detector missed with ids from ``S(n+1)`` and can group attributes under them,
    relate them and write them as placeholders *in the same answer*, so grouping and
    grounding cannot disagree and a sample still costs one call. ``staged`` mode: a
    ``ground`` step runs first and asks only for the subjects; the merged list
    (with final ids, drawn on the images or sent as crops) is what the later steps
    see, exactly as detector subjects are seen.

Boxes
    ``"bbox"``: normalized ``[x0, y0, x1, y1]`` on the image. ``"bbox_2d"``:
    absolute pixels of the image that was *sent* (what Qwen2.5-VL answers in); the
    engine knows each sent image's size and divides by it. A ``"bbox"`` whose
    values exceed 2 is read as pixels too (with a warning). Sent images are the
    stored frames uniformly resized, so normalized coordinates of the sent image
    are those of the stored frame. ``"image"`` (1-based, default 1) says which
    sent frame the box is on; it maps to the stored frame index. A server that
    resizes again (Qwen's processor rounds sides to multiples of 28) shifts pixel
    boxes by a few percent at most, which the clipping tolerance absorbs.

Checks, per box (:func:`check_box`)
    Not degenerate (``x1 > x0``, ``y1 > y0``); not wholly outside the frame; a box
    that overshoots an edge by at most ``clip_tolerance`` (normalized) is clipped,
    more is rejected (its coordinates are in some other space); after clipping
    each side is at least ``min_side`` and the area at least ``min_area``.

Merge (:func:`ground_subjects`), in the order the model listed its boxes
    An entry that reuses a detected id is that detected subject (its box, if it
    overlaps by IoU >= ``match_iou``, marks the subject ``source="both"``). A box
    with IoU >= ``match_iou`` with a detected subject's box (or face box) on the
    same frame *is* that subject: it keeps the detector's id and box and becomes
    ``"both"``. A box with IoU >= ``duplicate_iou`` with an earlier accepted model
    box is a duplicate and is dropped. The rest are new subjects, numbered after
    the detector's (``S(n+1)``, ... in listed order; ``S1..`` with ``subjects:
    model``), ``source="model"``, crop member ``sN.jpg``.

References (:func:`ground_answer`)
    Attribute owners, relation ends, ``names`` keys and relational-caption
    placeholders that name a model id are renamed to its final id (a merged or
    duplicate id becomes the id it merged into). A reference to a box that was
    rejected, or to an id that is neither detected nor listed, is an
    :class:`InvalidAnswer`: the model is asked again with the reason. A rejected box
    nobody refers to is dropped with a warning.

Crops (:func:`model_crops`) for the new subjects are cut from the stored frame
with the detector's :func:`crop_subject` and encoded as JPEG.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from relshard.record import ATTRIBUTE_ID_RE, PLACEHOLDER_RE, SUBJECT_ID_RE, Subject
from relshard.shards.item import Frame
from relshard.workers.annotate.parsing import InvalidAnswer
from relshard.workers.annotate.visual import VisualError, decode_frame
from relshard.workers.detect.nms import iou
from relshard.workers.detect.subjects import crop_subject

Box = tuple[float, float, float, float]

STATE_KEY = "_ground"  # where the engine keeps a sample's GroundContext in its step state
CROP_SIDE = 256  # = DetectSpec.crop_side's default: model crops match detector crops
CROP_QUALITY = 90
PIXEL_HINT = 2.0  # a "bbox" with a value above this is in pixels, not normalized
ROUND = 5
_NUMBERED = re.compile(r"^[Ss]?([1-9][0-9]*)$")
_PERSON_WORDS = frozenset({"person", "people", "human", "man", "woman", "boy", "girl", "child",
                           "kid", "baby", "adult", "player", "pedestrian"})
_KINDS = frozenset({"person", "face", "animal", "object", "other"})


@dataclass(frozen=True)
class Rules:
    """Thresholds of the box checks and the merge (normalized units)."""

    match_iou: float = 0.5
    duplicate_iou: float = 0.7
    clip_tolerance: float = 0.05
    min_side: float = 0.01
    min_area: float = 0.0004


@dataclass(frozen=True)
class SentImage:
    """A frame as sent to the model: the stored frame it shows and its size in pixels."""

    frame: int
    width: int
    height: int


@dataclass
class GroundContext:
    """What one sample's grounding needs: the mode, the detected subjects, the sent frames."""

    mode: str  # "both" | "model"
    base: list[Subject]  # detected subjects shown to the model ([] with subjects: model)
    images: list[SentImage]  # the frames sent, in order ("image": 1 is the first)
    rules: Rules = field(default_factory=Rules)


@dataclass
class Grounded:
    """The merge's outcome: final subjects and where every model label went."""

    subjects: list[Subject]
    mapping: dict[str, str]  # model label -> final subject id
    dropped: dict[str, str]  # model label -> why its box was rejected
    warnings: list[str]


class BoxError(ValueError):
    """A model box that cannot become a subject; the message says why."""


def normalize_id(value: object) -> str | None:
    """A model's subject label: ``"s3"``/``"3"``/``3`` -> ``"S3"``; other text kept; None."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    m = _NUMBERED.match(text)
    return f"S{m.group(1)}" if m else text


def normalize_kind(value: object) -> str:
    """A model's subject kind as a record kind (``"man"`` -> ``"person"``; unknown -> other)."""
    text = str(value or "person").strip().lower()
    if text in _KINDS:
        return text
    if text in _PERSON_WORDS or text.rstrip("s") in _PERSON_WORDS:
        return "person"
    return "other"


def jpeg_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` of a JPEG from its frame header (decoding only if that fails)."""
    i = 2
    if data[:2] == b"\xff\xd8":
        while i + 9 <= len(data) and data[i] == 0xFF:
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
                i += 2
                continue
            length = int.from_bytes(data[i + 2:i + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height = int.from_bytes(data[i + 5:i + 7], "big")
                width = int.from_bytes(data[i + 7:i + 9], "big")
                if width and height:
                    return width, height
                break
            i += 2 + length
    img = decode_frame(data)
    return img.shape[1], img.shape[0]


def sent_images(images: list[bytes], positions: list[int]) -> list[SentImage]:
    """The sent frames (crops, at position -1, are not frames) with their pixel sizes."""
    out = []
    for data, pos in zip(images, positions, strict=True):
        if pos >= 0:
            w, h = jpeg_size(data)
            out.append(SentImage(frame=pos, width=w, height=h))
    return out


def check_box(box: Sequence[float], rules: Rules) -> Box:
    """``box`` (normalized) clipped to the frame, or :class:`BoxError` (see the module doc)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(np.isfinite((x0, y0, x1, y1))):
        raise BoxError("has a coordinate that is not a number")
    if x1 <= x0 or y1 <= y0:
        raise BoxError("is degenerate (needs x0 < x1 and y0 < y1)")
    if x1 <= 0 or y1 <= 0 or x0 >= 1 or y0 >= 1:
        raise BoxError("lies outside the image")
    over = max(-x0, -y0, x1 - 1, y1 - 1)
    if over > rules.clip_tolerance:
        raise BoxError(f"reaches {over:.2f} beyond the image edge (boxes are normalized 0..1)")
    x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, 1.0), min(y1, 1.0)
    if min(x1 - x0, y1 - y0) < rules.min_side or (x1 - x0) * (y1 - y0) < rules.min_area:
        raise BoxError("is too small")
    return (round(x0, ROUND), round(y0, ROUND), round(x1, ROUND), round(y1, ROUND))


def locate(entry: dict[str, Any], images: list[SentImage], rules: Rules
           ) -> tuple[int, Box, bool]:
    """The stored frame and checked normalized box of one listed subject.

    Returns ``(frame, box, read_as_pixels)``; raises :class:`BoxError`.
    """
    number = entry.get("image") or 1
    if not 1 <= number <= len(images):
        raise BoxError(f"is on image {number}, but {len(images)} frame(s) were sent")
    img = images[number - 1]
    raw, pixels = entry.get("bbox"), False
    if raw is None:
        raw, pixels = entry.get("bbox_2d"), True
    if raw is None:
        raise BoxError("has no box")
    if not pixels and max(abs(float(v)) for v in raw) > PIXEL_HINT:
        pixels = True
    box = tuple(float(v) for v in raw)
    if pixels:
        box = (box[0] / img.width, box[1] / img.height, box[2] / img.width, box[3] / img.height)
    return img.frame, check_box(box, rules), pixels and entry.get("bbox") is not None


def overlap(subject: Subject, frame: int, box: Box) -> float:
    """IoU of ``box`` with ``subject``'s box (or face box) on ``frame``; 0 if absent there."""
    own = subject.box_on(frame)
    if own is None:
        return 0.0
    best = iou(own, box)
    if subject.face_bbox is not None and subject.frame == frame:
        best = max(best, iou(subject.face_bbox, box))
    return best


def _id_number(subject_id: str) -> int:
    return int(subject_id[1:]) if SUBJECT_ID_RE.match(subject_id) else 0


def ground_subjects(entries: list[dict[str, Any]], ctx: GroundContext) -> Grounded:
    """Check, dedupe and merge the model's listed subjects with ``ctx.base`` (module doc)."""
    rules = ctx.rules
    base = [s.model_copy(deep=True) for s in ctx.base]
    by_id = {s.id: s for s in base}
    mapping: dict[str, str] = {}
    dropped: dict[str, str] = {}
    warnings: list[str] = []
    labels: set[str] = set()
    accepted: list[tuple[int, Box, str | int]] = []  # frame, box, base id or new index
    new: list[tuple[str | None, str, int, Box]] = []  # label, kind, frame, box
    aliases: dict[str, str | int] = {}
    for n, entry in enumerate(entries, start=1):
        label = normalize_id(entry.get("id"))
        name = label or f"subject {n} of the list"
        if label is not None:
            if label in labels:
                raise InvalidAnswer(f"subject id {label!r} is listed twice in 'subjects'")
            if ATTRIBUTE_ID_RE.match(label):
                raise InvalidAnswer(f"subject id {label!r} looks like an attribute id; "
                                    f"use S{len(base) + 1}, ...")
            labels.add(label)
        try:
            frame, box, as_pixels = locate(entry, ctx.images, rules)
        except (BoxError, TypeError, ValueError) as err:
            reason = str(err) if isinstance(err, BoxError) else "has an unreadable box"
            if label in by_id:
                mapping[label] = label
                warnings.append(f"model_box_ignored: {label}'s box {reason}")
            else:
                dropped[label or f"#{n}"] = reason
                warnings.append(f"model_subject_dropped: {name} {reason}")
            continue
        if as_pixels:
            warnings.append(f"model_box_pixels: {name}'s bbox was read as pixels")
        if label in by_id:  # the model restates a detected subject
            mapping[label] = label
            if overlap(by_id[label], frame, box) >= rules.match_iou:
                by_id[label].source = "both"
                accepted.append((frame, box, label))
            else:
                warnings.append(f"model_box_ignored: {label}'s box does not match the "
                                f"detected one")
            continue
        scores = [overlap(s, frame, box) for s in base]
        best = int(np.argmax(scores)) if scores else -1
        if best >= 0 and scores[best] >= rules.match_iou:
            base[best].source = "both"
            accepted.append((frame, box, base[best].id))
            if label is not None:
                aliases[label] = base[best].id
            continue
        dup = next((target for f, b, target in accepted
                    if f == frame and iou(b, box) >= rules.duplicate_iou), None)
        if dup is not None:
            warnings.append(f"model_subject_duplicate: {name} repeats another listed box")
            if label is not None:
                aliases[label] = dup
            continue
        accepted.append((frame, box, len(new)))
        if label is not None:
            aliases[label] = len(new)
        new.append((label, normalize_kind(entry.get("kind")), frame, box))
    start = max((_id_number(s.id) for s in base), default=0)
    finals: list[str] = []
    subjects = list(base)
    for i, (_, kind, frame, box) in enumerate(new):
        number = start + i + 1
        finals.append(f"S{number}")
        subjects.append(Subject(id=f"S{number}", kind=kind, bbox=list(box), frame=frame,  # type: ignore[arg-type]
                                source="model", crop=f"s{number}.jpg"))
    for label, target in aliases.items():
        mapping[label] = finals[target] if isinstance(target, int) else target
    return Grounded(subjects=subjects, mapping=mapping, dropped=dropped, warnings=warnings)


def _referenced(part: dict[str, Any]) -> list[tuple[str, str]]:
    """``(where, id)`` of every subject reference in an answer (attribute ids excluded)."""
    attr_ids = {a["id"] for a in part.get("attributes", [])}
    refs = [(f"attribute {a['id']}", a["subject"]) for a in part.get("attributes", [])]
    for r in part.get("relations", []):
        refs.append(("a relation", r["subject"]))
        if r["object"] not in attr_ids and not ATTRIBUTE_ID_RE.match(r["object"]):
            refs.append(("a relation", r["object"]))
    for ph in PLACEHOLDER_RE.findall(part.get("relational_caption", "")):
        if ph not in attr_ids and not ATTRIBUTE_ID_RE.match(ph):
            refs.append(("relational_caption", ph))
    return refs


def rename(part: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    """``part`` with subject ids renamed everywhere at once (swaps are safe)."""
    def sub(x: str) -> str:
        return mapping.get(x, x)

    out = dict(part)
    if "attributes" in part:
        out["attributes"] = [{**a, "subject": sub(a["subject"])} for a in part["attributes"]]
    if "relations" in part:
        out["relations"] = [{**r, "subject": sub(r["subject"]), "object": sub(r["object"])}
                            for r in part["relations"]]
    if "names" in part:
        out["names"] = {sub(k): v for k, v in part["names"].items()}
    if "relational_caption" in part:
        out["relational_caption"] = PLACEHOLDER_RE.sub(
            lambda m: "{" + sub(m.group(1)) + "}", part["relational_caption"])
    return out


def ground_answer(part: dict[str, Any], ctx: GroundContext) -> dict[str, Any]:
    """A parsed ``single``/``ground`` answer with its subjects merged and references renamed.

    ``part["subjects"]`` becomes the final :class:`Subject` list and
    ``part["ground_warnings"]`` the merge's warnings. Raises :class:`InvalidAnswer`
    when the answer refers to a rejected box or to an id that names no subject.
    """
    grounded = ground_subjects(part.get("subjects") or [], ctx)
    known = {s.id for s in ctx.base} | set(grounded.mapping)
    for where, ref in _referenced(part):
        if ref in grounded.dropped:
            raise InvalidAnswer(f"{where} refers to subject {ref}, whose box "
                                f"{grounded.dropped[ref]}: give it a box inside the image or "
                                f"leave it out with everything that refers to it")
        if ref not in known:
            listed = ", ".join(sorted(known, key=lambda s: (len(s), s))) or "none"
            raise InvalidAnswer(f"{where} refers to {ref!r}, which is neither a detected "
                                f"subject nor listed in 'subjects' (known: {listed})")
    out = rename(part, grounded.mapping)
    if "relations" in out:  # two model ids that merged into one subject relate it to itself
        out["relations"] = [r for r in out["relations"] if r["subject"] != r["object"]]
    names = out.get("names")
    if names:
        final = {s.id for s in grounded.subjects}
        out["names"] = {k: v for k, v in names.items() if k in final}
    out["subjects"] = grounded.subjects
    out["ground_warnings"] = grounded.warnings
    return out


def model_crops(frames: list[Frame], subjects: list[Subject], side: int = CROP_SIDE,
                quality: int = CROP_QUALITY) -> dict[str, bytes]:
    """JPEG crops (member suffix -> bytes) of the subjects the model found alone."""
    out: dict[str, bytes] = {}
    decoded: dict[int, np.ndarray] = {}
    for s in subjects:
        if s.source != "model" or s.crop is None:
            continue
        if not 0 <= s.frame < len(frames):
            raise VisualError(f"subject {s.id} is on frame {s.frame}, which is not stored")
        if s.frame not in decoded:
            decoded[s.frame] = decode_frame(frames[s.frame].jpeg)
        crop = crop_subject(decoded[s.frame], tuple(s.bbox), side)  # type: ignore[arg-type]
        ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise VisualError(f"the crop of {s.id} could not be encoded")
        out[s.crop] = buf.tobytes()
    return out
