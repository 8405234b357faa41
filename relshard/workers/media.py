"""The media stage: decode an input, detect its subjects, encode frames and crops.

Decoding and detection run together, in the isolated child process when
``decode.isolate`` is on, so raw frames never leave the process that made them:
what comes back is compact (JPEG frames, crops, detections). The handler
:func:`prepare_payload` is what the child runs; :class:`MediaStage` is the Stage
the pipeline schedules.

``followers``: cheap stateless stages (the heuristic annotator) that run right
after, on the same input, in the same process — in the child when isolated — so an
input crosses the pipe once and what comes back is already the row the shard
writer takes (:meth:`MediaStage.process_payloads`); the worker only forwards bytes.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from relshard.plugins import import_plugins
from relshard.record import clip_key
from relshard.shards.item import Frame, SampleDraft, WorkItem
from relshard.spec import DecodeSpec, DetectSpec, Resources
from relshard.workers.allocator import keep_freed_memory
from relshard.workers.decode import DecodedClip, DecodeError, decode_input
from relshard.workers.detect.subjects import SubjectDetector
from relshard.workers.isolation import ChildFailure, IsolatedRunner, shared_runner
from relshard.workers.stage import Stage

STAGE = "decode"
HANDLER = "relshard.workers.media:prepare_payload"
# Inputs per Ray task when decode.batch_size is not set (bench/README.md, issue #17).
# Between two tasks the decode child waits for Ray to finish one task and start the
# next (~0.1 s on a busy 2-core node, estimated from the figures below), so a task
# holds ~1 s of work: 256 images (~5 ms each) or 16 videos (~50-150 ms for 8 frames).
# On 6,000 images, tasks of 64 ran at 179 img/s and of 256 at 226 img/s.
IMAGE_BATCH = 256
VIDEO_BATCH = 16


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


def prepare_payload(config: dict[str, Any], payload: bytes) -> bytes:
    """Child-process entry point: WorkItem bytes in, WorkItem bytes out."""
    limit_threads(config["num_cpus"])
    decode, _, detector = _configs(config["decode"], config["detect"])
    item = prepare(WorkItem.from_bytes(payload), decode, detector)
    return _run_followers([item], config["followers"])[0].to_bytes()


class MediaStage(Stage):
    """Decode + detect (+ encode), optionally isolated in a child process, then the
    ``followers`` on each input in the same process."""

    name = STAGE

    def __init__(self, decode: DecodeSpec, detect: DetectSpec, plugins: list[str] | None = None,
                 followers: Sequence[Stage] = (), video_share: float = 0.0) -> None:
        self.decode = decode
        self.detect = detect
        self.plugins = plugins or []
        self.followers = list(followers)
        self.batch_size = decode.batch_size or (VIDEO_BATCH if video_share >= 0.5
                                                else IMAGE_BATCH)
        self.resources: Resources = decode.resources
        # the child gets this through spawn (our own objects, never shard data)
        self._config: dict[str, Any] = {
            "decode": decode.model_dump_json(), "detect": detect.model_dump_json(),
            "num_cpus": self.resources.num_cpus, "followers": self.followers}
        self._key = "|".join([self._config["decode"], self._config["detect"], *self.plugins,
                              *(f.config_key() for f in self.followers)])

    def takes_payloads(self) -> bool:
        """Isolated: inputs go to the child as bytes and come back as the writer's rows."""
        return self.decode.isolate

    def _runner(self) -> IsolatedRunner:
        return shared_runner(
            self._key,
            lambda: IsolatedRunner(
                HANDLER, self._config, timeout_s=self.decode.timeout_s,
                crash_retries=self.decode.crash_retries,
                max_memory_mb=self.decode.max_memory_mb, plugins=self.plugins,
            ),
            HANDLER,
        )

    def process_payloads(self, payloads: list[bytes]) -> list[bytes]:
        """WorkItem bytes in, WorkItem bytes out, through the child; the worker decodes
        only the inputs the child failed on (to record why)."""
        out = []
        for payload, result in zip(payloads, self._runner().call_many(payloads), strict=True):
            if isinstance(result, ChildFailure):
                item = WorkItem.from_bytes(payload)
                result = item.fail(STAGE, result.reason, result.detail,
                                   attempts=result.attempts).to_bytes()
            out.append(result)
        return out

    def process_batch(self, items: list[WorkItem]) -> list[WorkItem]:
        import_plugins(self.plugins)  # once per process: plugin decoders and detectors
        if not self.decode.isolate:
            limit_threads(self.resources.num_cpus)
            keep_freed_memory()
            decode, _, detector = _configs(self._config["decode"], self._config["detect"])
            return _run_followers([prepare(it, decode, detector) for it in items],
                                  self.followers)
        live = [i for i, it in enumerate(items) if not it.rejected]
        results = self.process_payloads([items[i].to_bytes() for i in live])
        out = list(items)
        for i, blob in zip(live, results, strict=True):
            out[i] = WorkItem.from_bytes(blob)
        return out
