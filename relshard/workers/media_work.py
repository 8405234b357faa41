"""The media stage's work: decode an input, detect its subjects, encode frames and crops,
then the followers. :func:`prepare_payload` is what the decode child runs; without
isolation :class:`relshard.workers.media.MediaStage` calls :func:`prepare_items` in the
worker (the child's handler calls it too).

A module of its own so that the worker process that schedules the stage (and only
forwards bytes to and from its child) does not import OpenCV, Pillow, the decoders and
the detectors (importing the media stage alone: 0.56 CPU-s with them, 0.18 without, in a
fresh interpreter; less in a Ray worker, which has NumPy already).
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from relshard.record import clip_key
from relshard.shards.item import Frame, SampleDraft, WorkItem
from relshard.spec import DecodeSpec, DetectSpec
from relshard.workers.decode import DecodedClip, DecodeError, decode_input
from relshard.workers.detect.subjects import SubjectDetector
from relshard.workers.media import STAGE, load_followers
from relshard.workers.stage import Stage


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """Encode an RGB uint8 image as JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


@lru_cache(maxsize=4)
def _configs(decode_json: str, detect_json: str) -> tuple[DecodeSpec, DetectSpec, SubjectDetector]:
    decode = DecodeSpec.model_validate_json(decode_json)
    detect = DetectSpec.model_validate_json(detect_json)
    return decode, detect, SubjectDetector(detect)


def _sample_from_clip(item: WorkItem, clip: DecodedClip, decode: DecodeSpec,
                      detector: SubjectDetector) -> SampleDraft:
    src = clip.source
    key = (item.input.input_key if decode.clip_seconds is None or src.clip_index is None
           else clip_key(item.input.input_key, src.clip_index))
    subjects, crops = detector.detect(clip.frames)
    indices = src.frame_indices or [0] * len(clip.frames)
    times: Sequence[float | None] = src.frame_times or [None] * len(clip.frames)
    frames = [
        Frame(encode_jpeg(f, decode.jpeg_quality), f.shape[1], f.shape[0], int(i), t)
        for f, i, t in zip(clip.frames, indices, times, strict=False)
    ]
    draft = SampleDraft(key=key, source=src, frames=frames, subjects=subjects,
                        warnings=list(clip.warnings))
    for suffix, data in clip.members.items():
        draft.add_member(suffix, data)
    for suffix, crop in crops.items():
        draft.add_member(suffix, encode_jpeg(crop, decode.jpeg_quality))
    return draft


def prepare(item: WorkItem, decode: DecodeSpec, detector: SubjectDetector) -> WorkItem:
    """Decode, detect and encode one input in place; per-input problems reject it."""
    if item.rejected:
        return item
    try:
        clips = decode_input(item.input, decode)
    except DecodeError as exc:
        return item.fail(STAGE, exc.reason, exc.detail)
    except MemoryError:
        return item.fail(STAGE, "out_of_memory", "decoding exceeded decode.max_memory_mb")
    except Exception as exc:  # an unanticipated library error on odd input
        return item.fail(STAGE, "decode_error", _short_trace(exc))
    if not clips:
        return item.fail(STAGE, "no_frames", "the decoder produced no frames")
    try:
        item.samples = [_sample_from_clip(item, c, decode, detector) for c in clips]
    except MemoryError:
        return item.fail("detect", "out_of_memory", "detection exceeded decode.max_memory_mb")
    except Exception as exc:
        return item.fail("detect", "detect_error", _short_trace(exc))
    return item


def _short_trace(exc: BaseException) -> str:
    tail = traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:]
    return "".join(tail)[-2000:]


def limit_threads(num_cpus: float) -> None:
    """Keep OpenCV to the CPUs the task asked Ray for (it would use every core)."""
    cv2.setNumThreads(max(1, int(num_cpus)))


def _run_followers(items: list[WorkItem], followers: Sequence[Stage]) -> list[WorkItem]:
    for stage in followers:
        items = stage.process_batch(items)
    return items


def prepare_items(config: dict[str, Any], items: list[WorkItem]) -> list[WorkItem]:
    """Decode, detect and encode ``items``, then run the followers on them, with a
    :class:`relshard.workers.media.MediaStage`'s config (in the child, or in-process)."""
    limit_threads(config["num_cpus"])
    decode, _, detector = _configs(config["decode"], config["detect"])
    return _run_followers([prepare(it, decode, detector) for it in items],
                          load_followers(config["followers"]))


def prepare_payload(config: dict[str, Any], payload: bytes) -> bytes:
    """Child-process entry point: WorkItem bytes in, WorkItem bytes out."""
    return prepare_items(config, [WorkItem.from_bytes(payload)])[0].to_bytes()
