"""A small real output for the gallery tests: images, a clip, an event window, rejects.

Written by the real :class:`ShardWriter` (no Ray): frames are real JPEGs drawn
with numpy/OpenCV, the event window carries ``times.npy``/``types.npy`` saved
without pickle, and the rejects point at a local image that exists (a
thumbnail), one that does not, and a broken file.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np

from relshard.record import (
    Attribute,
    Provenance,
    Relation,
    SourceInfo,
    Subject,
    TrackPoint,
    make_input_key,
)
from relshard.shards import ShardWriter, build_manifest, write_manifest
from relshard.shards.item import Frame, InputRef, SampleDraft, WorkItem

HEUR = Provenance(backend="heuristic", relshard_version="0.1.0")
OPENAI = Provenance(backend="openai", model="qwen-vl", prompt_version="v2",
                    relshard_version="0.1.0", latency_s=1.25)
HAWKES = Provenance(backend="hawkes", method="multivariate Hawkes", relshard_version="0.1.0")
EVIL = "<script>alert('x')</script> & <b>bold</b>"


def picture(seed: int, width: int = 320, height: int = 240) -> bytes:
    """A real JPEG: a gradient with a few coloured rectangles."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), dtype=np.uint8)
    img[..., 0] = np.linspace(40, 200, width, dtype=np.uint8)[None, :]
    img[..., 1] = np.linspace(200, 40, height, dtype=np.uint8)[:, None]
    for _ in range(4):
        x, y = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.rectangle(img, (x, y), (x + 40, y + 40), color, -1)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return buf.tobytes()


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _item(name: str, modality: str) -> tuple[WorkItem, str, str]:
    uri = f"file:///data/{name}"
    key = make_input_key(name)
    return WorkItem(InputRef(key, uri, modality, extra={})), key, uri


def image_item(name: str, seed: int, *, provenance: Provenance = HEUR, caption: str = "",
               model_subject: bool = True) -> WorkItem:
    """An image with S1 (detector) and S2 (model, or both), a grounded attribute, crops."""
    item, key, uri = _item(name, "image")
    source = SourceInfo(uri=uri, input_key=key, modality="image", frame_width=320,
                        frame_height=240, width=640, height=480)
    subjects = [Subject(id="S1", kind="person", bbox=[0.1, 0.15, 0.45, 0.9], score=0.91,
                        detector="centerface", crop="s1.jpg")]
    relations = [Relation(subject="S1", predicate="wears", object="A1", confidence=0.8)]
    attributes = [Attribute(id="A1", text="red hat", category="clothing",
                            bbox=[0.15, 0.15, 0.35, 0.3], frame=0)]
    if model_subject:
        subjects.append(Subject(id="S2", kind="person", bbox=[0.55, 0.2, 0.95, 0.95],
                                source="model" if seed % 2 else "both", crop="s2.jpg"))
        attributes.append(Attribute(id="A2", text="blue scarf", category="accessory"))
        relations += [Relation(subject="S2", predicate="holds", object="A2"),
                      Relation(subject="S1", predicate="left_of", object="S2")]
    draft = SampleDraft(
        key=key, source=source, frames=[Frame(picture(seed), 320, 240)], subjects=subjects,
        attributes=attributes, relations=relations,
        caption=caption or f"a person in a red hat ({name})",
        relational_caption="{S1} wears {A1}; {S1} is left of {S2}." if model_subject
        else "{S1} wears {A1}.", provenance=provenance)
    draft.add_member("s1.jpg", picture(seed + 100, 64, 96))
    if model_subject:
        draft.add_member("s2.jpg", picture(seed + 200, 64, 96))
    item.samples.append(draft)
    return item


def video_item(name: str, seed: int, n_frames: int = 3) -> WorkItem:
    """A clip of ``n_frames`` keyframes with a tracked subject."""
    item, key, uri = _item(name, "video")
    source = SourceInfo(uri=uri, input_key=key, modality="video", frame_width=320,
                        frame_height=240, fps=25.0, duration=4.0,
                        frame_indices=list(range(0, 25 * n_frames, 25)),
                        frame_times=[float(i) for i in range(n_frames)], clip_index=0)
    track = [TrackPoint(frame=i, bbox=[0.1 + 0.1 * i, 0.2, 0.4 + 0.1 * i, 0.8])
             for i in range(n_frames)]
    draft = SampleDraft(
        key=f"{key}_c0000", source=source,
        frames=[Frame(picture(seed + i), 320, 240, index=25 * i) for i in range(n_frames)],
        subjects=[Subject(id="S1", kind="person", bbox=[0.1, 0.2, 0.4, 0.8], track=track,
                          crop="s1.jpg")],
        attributes=[Attribute(id="A1", text="green coat", category="clothing")],
        relations=[Relation(subject="S1", predicate="wears", object="A1")],
        caption="a person walks right in a green coat", relational_caption="{S1} wears {A1}.",
        provenance=HEUR)
    draft.add_member("s1.jpg", picture(seed + 50, 64, 96))
    draft.add_member("mp4", b"\x00" * 3000)  # a clip member the gallery must not read
    item.samples.append(draft)
    return item


def events_item(name: str, n_events: int = 120) -> WorkItem:
    """One event window: types 0 and 2 present, 0 excites 2."""
    item, key, uri = _item(name, "events")
    rng = np.random.default_rng(7)
    times = np.sort(rng.uniform(0, 3600, n_events)).astype(np.float64)
    types = rng.choice([0, 2], n_events).astype(np.int64)
    source = SourceInfo(uri=uri, input_key=key, modality="events", sequence="north",
                        window_index=0, event_count=n_events,
                        time_span=[float(times[0]), float(times[-1])],
                        duration=float(times[-1] - times[0]))
    subjects = [Subject(id=f"S{t + 1}", kind="other", bbox=[0.0, 0.0, 1.0, 1.0],
                        detector="events") for t in (0, 2)]
    attributes = [Attribute(id="A1", text="M3", category="other"),
                  Attribute(id="A3", text="M5", category="other")]
    relations = [Relation(subject="S1", predicate="has_type", object="A1"),
                 Relation(subject="S3", predicate="has_type", object="A3"),
                 Relation(subject="S1", predicate="excites", object="S3", confidence=0.9,
                          weight=0.48)]
    draft = SampleDraft(
        key=f"{key}_w000000", source=source, subjects=subjects, attributes=attributes,
        relations=relations, caption=f"{n_events} events of sequence 'north', M3 and M5.",
        relational_caption="events of {S1} are followed by {S3}.", provenance=HAWKES)
    draft.add_member("times.npy", npy(times))
    draft.add_member("types.npy", npy(types))
    item.samples.append(draft)
    return item


def reject_items(media: Path) -> list[WorkItem]:
    """Rejects: a local image that exists, a missing one, a broken file, a model answer."""
    media.mkdir(parents=True, exist_ok=True)
    good = media / "too_dark.jpg"
    good.write_bytes(picture(99, 200, 150))
    broken = media / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = []
    for name, uri, stage, reason, raw in [
        ("too_dark", good.as_uri(), "detect", "no_subjects", None),
        ("gone", (media / "gone.jpg").as_uri(), "decode", "corrupt", None),
        ("broken", str(broken), "decode", "truncated", None),
        ("answer", "file:///nowhere/answer.jpg", "annotate", "invalid_answer",
         "not json " + EVIL + " x" * 5000),
    ]:
        item = WorkItem(InputRef(make_input_key(name), uri, "image"))
        out.append(item.fail(stage, reason, detail=f"{name}: {EVIL}", raw_output=raw))
    return out


def write_gallery_build(root: Path, *, n_images: int = 4, backend: Provenance = HEUR,
                        rejects: bool = True, samples: bool = True, prefix: str = "g0",
                        max_samples: int = 3) -> Path:
    """The output folder: images (one with a hostile caption), a clip, an event window."""
    items: list[WorkItem] = []
    if samples:
        items = [image_item(f"img{i}.jpg", i, provenance=backend,
                            caption=EVIL if i == 0 else "", model_subject=i != 3)
                 for i in range(n_images)]
        items += [video_item("walk.mp4", 50), events_item("quakes.csv")]
    if rejects:
        items += reject_items(root.parent / f"{root.name}-media")
    with ShardWriter(str(root), prefix, max_samples, 64_000_000) as writer:
        for item in items:
            writer.add(item)
    write_manifest(str(root), build_manifest(str(root), "gallery", "hash-gallery"))
    return root
