"""Video decoding: PyAV or decord for the sampled frames, OpenCV as the fallback.

Only sampled frames are decoded, never a whole video:

- One clip per video (``clip_seconds`` None): ``frames_per_clip`` frame indices at
  the centres of equal segments of the video.
- Clips (``clip_seconds`` set): the video is cut into consecutive clips of that
  length (a trailing piece shorter than half a clip is dropped); when there are
  more than ``max_clips_per_video``, that many are chosen evenly over the video.
  Each clip gets ``frames_per_clip`` frames the same way, its ``clip_index`` (its
  position among all clips, so keys are stable) and its ``time_span``.

A cheap OpenCV probe (container metadata, no decoding) gives the size after
rotation, the fps and the frame count the container declares.

``decode.video_backend`` picks the reader tried first: ``pyav`` (:mod:`.video_pyav`:
seeks to the keyframe before each sampled frame, decodes forward, converts only the
sampled frames, at the output size), ``decord``, or ``auto``: :data:`AUTO_ORDER`, the
faster of the two on ``bench/decode.py`` first and the other next. OpenCV comes last
either way. decord opens
the file with ``num_threads=decode.video_threads`` (VP9 needs it set) and, when
the video is larger than ``max_side``, with decord's ``width``/``height`` so that
frames are decoded straight at the reduced size; it reads each clip's frames with
one ``get_batch``. Both decord and OpenCV apply the container's rotation.

When the chosen readers cannot open the file, or fail while reading, OpenCV reads it
(seeking to distant frames, grabbing forward to near ones). OpenCV reports short
reads on truncated files only as failed reads, so it first checks that the last
declared frame reads; if not, it binary-searches the last readable frame. Either
way, when fewer frames are readable than the container declares, the samples are
drawn within the readable range, ``truncated`` is set, ``frame_count_readable``
holds the readable count and a warning says so. A file where no frame decodes is
rejected: ``truncated`` when the container's own size fields point past the end
of the file, else ``corrupt``.

``keep_clip`` stores each clip as member ``mp4``: the source file itself when it is
an MP4 of at most ``KEEP_CLIP_MAX_BYTES`` that yields a single clip; otherwise, when
PyAV read the frames, the clip's own packets remuxed into an MP4 (video only, cut at
the keyframe at or before the clip's first frame, no re-encoding, at most
``KEEP_CLIP_MAX_BYTES``). decord and OpenCV cannot cut: they store the single-clip
MP4 or nothing, with a warning.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from relshard.record import SourceInfo
from relshard.spec import DecodeSpec
from relshard.workers.decode.base import DecodedClip, DecodeError, fit_frame, fit_size
from relshard.workers.decode.base import sample_indices as _segment_centres
from relshard.workers.decode.files import LocalCopy, MediaFile
from relshard.workers.decode.formats import declares_more_than
from relshard.workers.decode.video_pyav import PyAVReader, ReaderFailed

log = logging.getLogger(__name__)

KEEP_CLIP_MAX_BYTES = 64 * 1024**2
SEEK_GAP = 48  # OpenCV: frames closer than this are reached by grabbing, not seeking
COUNT_TOLERANCE = 0.01  # readable may fall this far (and 1 frame) short of declared
_DECORD_LOG_PREFIX = re.compile(r"\[[0-9:]+\] \S+:\d+: ")
# ``video_backend: auto``: the faster reader on bench/decode.py first (see bench/README.md)
AUTO_ORDER: tuple[str, ...] = ("pyav", "decord")

__all__ = ["AUTO_ORDER", "PyAVReader", "ReaderFailed", "decode_video_media", "plan_clips"]


@dataclass
class Probe:
    """What the container declares (OpenCV, no decoding). Sizes are after rotation."""

    width: int | None
    height: int | None
    fps: float | None
    frame_count: int | None


@dataclass
class ClipPlan:
    index: int
    start: int
    end: int  # exclusive
    indices: list[int]


def ffmpeg_path(path: str) -> str:
    """An absolute path FFmpeg cannot mistake for a protocol ('a:b.mp4')."""
    path = os.path.abspath(path)
    return f"file:{path}" if ":" in path else path


def _positive(value: float) -> float | None:
    return float(value) if value and np.isfinite(value) and value > 0 else None


def probe_video(path: str) -> Probe | None:
    """Container metadata through OpenCV, or None if it cannot open the file.

    One codec thread: nothing is decoded, and OpenCV would otherwise start (and join) a
    decoder thread per CPU of the machine for each probe.
    """
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    try:
        if not cap.isOpened():
            return None
        width = _positive(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = _positive(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        count = _positive(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        return Probe(
            width=int(width) if width else None,
            height=int(height) if height else None,
            fps=_positive(cap.get(cv2.CAP_PROP_FPS)),
            frame_count=int(count) if count else None,
        )
    finally:
        cap.release()


def plan_clips(n_frames: int, fps: float | None, cfg: DecodeSpec) -> list[ClipPlan]:
    """Which frames of a video with ``n_frames`` readable frames to decode, per clip."""
    k = cfg.frames_per_clip
    if cfg.clip_seconds is None or not fps:
        return [ClipPlan(0, 0, n_frames, _segment_centres(0, n_frames, k))]
    length = max(1, round(cfg.clip_seconds * fps))
    starts = list(range(0, n_frames, length))
    if len(starts) > 1 and n_frames - starts[-1] < length / 2:
        starts.pop()
    chosen: Sequence[int] = range(len(starts))
    if len(starts) > cfg.max_clips_per_video:
        picks = np.linspace(0, len(starts) - 1, cfg.max_clips_per_video).round()
        chosen = sorted({int(i) for i in picks})
    plans = []
    for i in chosen:
        end = min(starts[i] + length, n_frames)
        plans.append(ClipPlan(i, starts[i], end, _segment_centres(starts[i], end, k)))
    return plans


class FrameReader(Protocol):
    name: str
    count: int  # frames it can index
    fps: float | None

    @property
    def size(self) -> tuple[int, int]:
        """The source (width, height) after rotation (PyAV: from the first frame it decodes)."""

    def read(self, indices: list[int]) -> tuple[list[int], list[np.ndarray]]: ...

    def times(self, indices: list[int]) -> list[float]: ...

    def span(self, start: int, end: int) -> list[float]: ...


def _decord_message(exc: BaseException) -> str:
    """decord's error text without its time stamp and source location."""
    return _DECORD_LOG_PREFIX.sub("", str(exc)).strip()[:300]


def _import_decord() -> Any:
    try:
        import decord
    except ImportError as exc:  # pragma: no cover - decord is a dependency
        raise ReaderFailed(f"decord is not installed ({exc})") from None
    return decord


class DecordReader:
    """decord's VideoReader, opened at the output size when the source is larger."""

    name = "decord"

    def __init__(self, path: str, probe: Probe | None, cfg: DecodeSpec) -> None:
        decord = _import_decord()
        self.max_side = cfg.max_side
        kwargs: dict[str, int] = {}
        if probe and probe.width and probe.height:
            self.size = (probe.width, probe.height)
            target = fit_size(probe.width, probe.height, cfg.max_side)
            if target != self.size:
                kwargs = {"width": target[0], "height": target[1]}
        try:
            self.vr = decord.VideoReader(path, ctx=decord.cpu(0),
                                         num_threads=cfg.video_threads, **kwargs)
            self.count = len(self.vr)
            self.fps = _positive(self.vr.get_avg_fps())
            if not (probe and probe.width and probe.height):
                shape = self.vr[0].shape
                self.size = (int(shape[1]), int(shape[0]))
        except Exception as exc:  # decord raises RuntimeError / DECORDError
            raise ReaderFailed(f"decord: {_decord_message(exc)}") from None
        if self.count == 0:
            raise ReaderFailed("decord: no video frames")

    def read(self, indices: list[int]) -> tuple[list[int], list[np.ndarray]]:
        try:
            batch = self.vr.get_batch(indices).asnumpy()
        except Exception as exc:
            raise ReaderFailed(f"decord get_batch: {_decord_message(exc)}") from None
        return list(indices), [fit_frame(frame, self.max_side) for frame in batch]

    def times(self, indices: list[int]) -> list[float]:
        stamps = self.vr.get_frame_timestamp(indices)
        return [round(float(t), 6) for t in np.asarray(stamps).reshape(-1, 2)[:, 0]]

    def span(self, start: int, end: int) -> list[float]:
        stamps = np.asarray(self.vr.get_frame_timestamp([start, end - 1])).reshape(-1, 2)
        return [round(float(stamps[0, 0]), 6), round(float(stamps[1, 1]), 6)]


class OpenCVReader:
    """cv2.VideoCapture, which finds the readable range of a broken file by itself."""

    name = "opencv"

    def __init__(self, path: str, probe: Probe | None, cfg: DecodeSpec) -> None:
        self.path = path
        self.max_side = cfg.max_side
        self._open()
        declared = _positive(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.declared = int(declared) if declared else None
        self.fps = _positive(self.cap.get(cv2.CAP_PROP_FPS))
        self.size = (int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                     int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self.count = self._readable_count()
        if self.count == 0:
            raise ReaderFailed("opencv: no frame decodes")

    def _open(self) -> None:
        self.cap = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG)
        self.pos = 0
        if not self.cap.isOpened():
            raise ReaderFailed("opencv: cannot open the file")

    def frame_at(self, index: int) -> np.ndarray | None:
        """The frame at ``index`` (BGR, full size), or None when it cannot be read."""
        if index < self.pos or index - self.pos > SEEK_GAP:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, index)
            self.pos = index
        while self.pos < index:
            if not self.cap.grab():
                self._broken()
                return None
            self.pos += 1
        ok, frame = self.cap.read()
        if not ok or frame is None:
            self._broken()
            return None
        self.pos += 1
        return frame

    def _broken(self) -> None:
        self.cap.release()
        self._open()  # a failed read leaves the capture in an unknown state
        return None

    def _count_by_reading(self) -> int:
        n = 0
        while self.cap.grab():
            n += 1
        self._broken()
        return n

    def _readable_count(self) -> int:
        if self.declared is None:
            return self._count_by_reading()
        if self.frame_at(self.declared - 1) is not None:
            return self.declared
        if self.frame_at(0) is None:
            return 0
        good, bad = 0, self.declared - 1
        while bad - good > 1:
            mid = (good + bad) // 2
            if self.frame_at(mid) is not None:
                good = mid
            else:
                bad = mid
        return good + 1

    def read(self, indices: list[int]) -> tuple[list[int], list[np.ndarray]]:
        got, frames = [], []
        for index in indices:
            frame = self.frame_at(index)
            if frame is not None:
                got.append(index)
                frames.append(fit_frame(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), self.max_side))
        return got, frames

    def times(self, indices: list[int]) -> list[float]:
        return [round(i / self.fps, 6) if self.fps else 0.0 for i in indices]

    def span(self, start: int, end: int) -> list[float]:
        return [round(start / self.fps, 6), round(end / self.fps, 6)] if self.fps else [0.0, 0.0]


@dataclass
class _Job:
    """Everything the clips of one video share."""

    media: MediaFile
    local: LocalCopy
    probe: Probe | None
    cfg: DecodeSpec
    warnings: list[str]


def _truncation(reader: FrameReader, declared: int | None, warns: list[str]) -> bool:
    if declared is None:
        return False
    if reader.count >= declared - max(1, declared * COUNT_TOLERANCE):
        return False
    warns.append(f"only {reader.count} of the {declared} frames the container declares are "
                 f"readable ({reader.name}); frames are sampled within those")
    return True


def _whole_file(job: _Job) -> bytes:
    if job.local.data is not None:
        return job.local.data
    with open(job.local.path, "rb") as fh:
        return fh.read(KEEP_CLIP_MAX_BYTES + 1)


def _clip_member(job: _Job, reader: FrameReader, plan: ClipPlan, n_clips: int,
                 warns: list[str]) -> dict[str, bytes]:
    """The ``mp4`` member of one clip under ``keep_clip`` (warnings say why there is none)."""
    if not job.cfg.keep_clip:
        return {}
    fmt, size = job.media.format, job.media.size
    if n_clips == 1 and fmt == "mp4" and size <= KEEP_CLIP_MAX_BYTES:
        return {"mp4": _whole_file(job)}
    if isinstance(reader, PyAVReader):
        try:
            return {"mp4": reader.cut(plan.start, plan.end, KEEP_CLIP_MAX_BYTES)}
        except ReaderFailed as exc:
            warns.append(f"keep_clip: {exc}; no mp4 member stored")
            return {}
    if n_clips != 1:
        warns.append(f"keep_clip: the video gives {n_clips} clips and {reader.name} cannot "
                     "cut them (pyav can); no mp4 member stored")
    elif fmt != "mp4":
        warns.append(f"keep_clip: only MP4 files are stored by {reader.name}, this is "
                     f"{fmt or 'unknown'}")
    else:
        warns.append(f"keep_clip: {size} bytes > {KEEP_CLIP_MAX_BYTES}; not stored")
    return {}


def _declared(job: _Job, reader: FrameReader) -> int | None:
    if isinstance(reader, OpenCVReader):
        return reader.declared
    if job.probe and job.probe.frame_count:
        return job.probe.frame_count
    return getattr(reader, "declared", None)


def _clips_from(reader: FrameReader, job: _Job) -> list[DecodedClip]:
    warns = list(job.warnings)
    declared = _declared(job, reader)
    truncated = _truncation(reader, declared, warns)
    fps = reader.fps or (job.probe.fps if job.probe else None)
    if job.cfg.clip_seconds is not None and not fps:
        warns.append("unknown fps: the video is decoded as one clip")
    plans = plan_clips(reader.count, fps, job.cfg)
    frame_total = declared if declared is not None else reader.count
    duration = round(frame_total / fps, 6) if fps else None
    clips = []
    for plan in plans:
        got, frames = reader.read(plan.indices)
        if not frames:
            continue
        clip_warns = list(warns)
        if len(got) < len(plan.indices):
            clip_warns.append(f"{len(plan.indices) - len(got)} of the clip's sampled frames "
                              "did not decode")
        members = _clip_member(job, reader, plan, len(plans), clip_warns)
        src = SourceInfo(
            uri=job.media.uri, input_key=job.media.ref.input_key, modality="video",
            sha256=job.local.sha256, size=job.media.size,
            format=job.media.format or job.media.ext or None, decoder=reader.name,
            width=reader.size[0], height=reader.size[1],
            frame_width=frames[0].shape[1], frame_height=frames[0].shape[0],
            fps=fps, duration=duration, frame_count=declared, frame_count_readable=reader.count,
            frame_indices=got, frame_times=reader.times(got), clip_index=plan.index,
            time_span=reader.span(plan.start, plan.end), truncated=truncated,
        )
        clips.append(DecodedClip(source=src, frames=frames, members=members,
                                 warnings=clip_warns))
    if not clips:
        raise ReaderFailed(f"{reader.name}: no sampled frame decodes")
    return clips


def _no_frames_reason(media: MediaFile) -> str:
    if declares_more_than(media.format, media.read_at, media.size):
        return "truncated"
    return "corrupt"


def reader_types(cfg: DecodeSpec) -> list[Any]:
    """The readers to try, in order, for ``cfg.video_backend`` (OpenCV always last)."""
    by_name: dict[str, Any] = {"pyav": PyAVReader, "decord": DecordReader}
    order = AUTO_ORDER if cfg.video_backend == "auto" else (cfg.video_backend,)
    return [by_name[name] for name in order] + [OpenCVReader]


def _decode_local(job: _Job) -> list[DecodedClip]:
    path = ffmpeg_path(job.local.path)
    failures = []
    for reader_type in reader_types(job.cfg):
        reader = None
        try:
            reader = reader_type(path, job.probe, job.cfg)
            return _clips_from(reader, job)
        except ReaderFailed as exc:
            failures.append(str(exc))
            job.warnings.append(f"{exc}; trying the next reader")
            log.debug("%s: %s", job.media.uri, exc)
        finally:
            close = getattr(reader, "close", None)
            if close is not None:
                close()
    raise DecodeError(_no_frames_reason(job.media), "; ".join(failures))


def decode_video_media(media: MediaFile, cfg: DecodeSpec) -> list[DecodedClip]:
    """The built-in video decoder, on an opened input: one clip per planned clip."""
    warns: list[str] = []
    # the source bytes are kept while hashing when they may become the clip's member
    keep = cfg.keep_clip and media.format == "mp4" and media.size <= KEEP_CLIP_MAX_BYTES
    with media.local(keep_bytes=keep) as local:
        probe = probe_video(ffmpeg_path(local.path))
        return _decode_local(_Job(media, local, probe, cfg, warns))
