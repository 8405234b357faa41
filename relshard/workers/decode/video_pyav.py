"""The PyAV video reader: seeks to sampled frames, decodes them at the output size, cuts clips.

PyAV (``av`` on PyPI) wraps the FFmpeg libraries its wheels bundle, so it decodes and
muxes on every platform FFmpeg builds for (ARM workers included).

Opening a file demuxes the video stream's packets once, without decoding them: their
presentation timestamps, sorted, are the frame timeline (frame ``i`` is the ``i``-th
frame in presentation order, as decord and OpenCV number them), and the keyframe flags
say where decoding can start. Nothing but those integers is kept. The demux reads at
most the file (other streams are discarded by the demuxer), and it stops at the first
packet the file cannot give: a truncated file yields fewer packets than the container
declares, which the caller compares (``truncated``, ``frame_count_readable``). Opening
decodes nothing: the size, the output size and the rotation come from the first frame
the reader decodes (the first wanted frame; the first frame of the file when they are
asked for before any read, or when no wanted frame decodes: a file where even that one
does not decode fails with :class:`ReaderFailed`, so the next reader is tried).

Reading sampled frames: for each wanted frame (in ascending order), when a keyframe lies
between the last decoded frame and the wanted one (or the wanted one is behind), the
reader seeks to the keyframe at or before it and decodes forward; otherwise it keeps
decoding from where it is. Only the wanted frames are converted to RGB, straight at the
output size (swscale scales and converts in one pass, area averaging, with one swscale
context per reader), then turned by the display matrix (phones' rotation metadata), as
the other backends do. Every decode loop is bounded by the number of packets between
the keyframe and the wanted frame (plus a margin for reordered B-frames): a broken file
gives a missing frame, never a hang.

Threads: ``decode.video_threads`` codec and swscale threads (0: one per CPU the stage
asked for), slice threading (frame threading delays each output by one frame per thread,
which a seek pays again every time).

:meth:`PyAVReader.cut` remuxes the packets of one clip (from the keyframe at or before
its first frame to its last frame, plus any later-decoded reference frame the last
frames depend on) into an MP4 in memory: no re-encoding, the clip's own bytes.
"""

from __future__ import annotations

import bisect
import io
from typing import Any

import cv2
import numpy as np

from relshard.spec import DecodeSpec
from relshard.workers.decode.base import fit_size, own

REORDER_SLACK = 32  # frames decoded past a target's keyframe distance before giving up
SEEK_BACK = (0, 1, 4)  # keyframes further back to seek to when a seek lands past the target
_OVERSHOT = object()
MAX_DEMUX_ERRORS = 16  # undecodable packets skipped while demuxing before the timeline ends


class ReaderFailed(Exception):
    """A frame reader could not open or read the file (the next reader is tried)."""


def import_av() -> Any:
    try:
        import av
    except ImportError as exc:  # pragma: no cover - av is a dependency
        raise ReaderFailed(f"pyav is not installed ({exc})") from None
    return av


def _message(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def _threads(cfg: DecodeSpec) -> int:
    return cfg.video_threads or max(1, int(cfg.resources.num_cpus or 1))


# quarter turns counterclockwise -> cv2.rotate's code (what np.rot90 gives, without its
# strided copy)
_ROTATIONS = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}


def _rotate(frame: np.ndarray, degrees: float) -> np.ndarray:
    """Turn a decoded frame upright: ``degrees`` is the display matrix's counterclockwise angle."""
    turns = round(degrees / 90) % 4
    return cv2.rotate(frame, _ROTATIONS[turns]) if turns else frame


class PyAVReader:
    """Frames of one video through PyAV, by index in presentation order."""

    name = "pyav"

    def __init__(self, path: str, probe: Any, cfg: DecodeSpec) -> None:
        self.av = import_av()
        self.path = path
        self.max_side = cfg.max_side
        self.threads = _threads(cfg)
        # one scaler for every frame: a frame's own to_ndarray() builds a new swscale
        # context (and, threads unset, a thread pool) per call
        self._scaler = self.av.video.reformatter.VideoReformatter()
        try:
            self.container = self.av.open(path, mode="r", metadata_errors="ignore")
        except Exception as exc:  # av.FFmpegError, OSError, UnicodeDecodeError
            raise ReaderFailed(f"pyav: cannot open ({_message(exc)})") from None
        try:
            self._setup(probe, cfg)
        except ReaderFailed:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise ReaderFailed(f"pyav: {_message(exc)}") from None

    # -- opening --

    def _setup(self, probe: Any, cfg: DecodeSpec) -> None:
        if not self.container.streams.video:
            raise ReaderFailed("pyav: no video stream")
        stream = self.stream = self.container.streams.video[0]
        for other in self.container.streams:
            if other.index != stream.index:
                other.discard = self.av.stream.Discard.all  # the demuxer skips their bytes
        ctx = stream.codec_context
        ctx.thread_count = self.threads
        ctx.thread_type = "SLICE"
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate and float(rate) > 0 else None
        self.time_base = float(stream.time_base) if stream.time_base else None
        self.declared = int(stream.frames) if stream.frames and stream.frames > 0 else None
        self._frames: Any = None
        self._last: int | None = None  # pts of the last decoded frame
        self._timeline()
        self.count = len(self.pts)
        if self.count == 0:
            raise ReaderFailed("pyav: no video packets")
        self._probe = probe
        self._geometry: tuple[tuple[int, int], tuple[int, int]] | None = None  # size, target
        self.rotation = 0.0  # set with the geometry

    # -- geometry: from the first frame decoded --

    def _learn(self, frame: Any) -> None:
        """Size, output size and rotation from a decoded frame (the first the reader decodes)."""
        coded = (frame.width, frame.height)
        self.rotation = float(getattr(frame, "rotation", 0) or 0)
        turned = round(self.rotation / 90) % 2 == 1
        size = (coded[1], coded[0]) if turned else coded
        probe = self._probe
        if probe and probe.width and probe.height and (probe.width, probe.height) in (
                size, size[::-1]):
            size = (probe.width, probe.height)
        self._geometry = (size, fit_size(coded[0], coded[1], self.max_side))

    def _known_geometry(self) -> tuple[tuple[int, int], tuple[int, int]]:
        if self._geometry is None:  # asked before any read: decode the first frame for it
            self._learn(self._first_frame())
        assert self._geometry is not None
        return self._geometry

    @property
    def size(self) -> tuple[int, int]:
        """The source (width, height) after rotation."""
        return self._known_geometry()[0]

    @property
    def target(self) -> tuple[int, int]:
        """The (width, height) frames are decoded at: the coded size fit to ``max_side``."""
        return self._known_geometry()[1]

    def _timeline(self) -> None:
        """Presentation timestamps of every packet (sorted) and those of keyframes."""
        pts: list[int] = []
        keys: list[int] = []
        errors = 0
        demux = self.container.demux(self.stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                break
            except (self.av.FFmpegError, OSError):
                errors += 1  # a packet the file cannot give: stop at the readable end
                break
            if packet.size == 0 or packet.pts is None:
                if packet.size and packet.dts is not None:
                    pts.append(packet.dts)
                    if packet.is_keyframe:
                        keys.append(packet.dts)
                continue
            if packet.is_corrupt:
                errors += 1
                if errors > MAX_DEMUX_ERRORS:
                    break
                continue
            pts.append(packet.pts)
            if packet.is_keyframe:
                keys.append(packet.pts)
        pts.sort()
        keys.sort()
        self.pts = pts
        self.keys = keys or pts[:1]

    def _seek(self, pts: int) -> None:
        try:
            self.container.seek(pts, stream=self.stream, backward=True, any_frame=False)
        except self.av.FFmpegError:
            try:  # a file without an index: from the start
                self.container.seek(0, backward=True)
            except self.av.FFmpegError as exc:
                raise ReaderFailed(f"pyav: cannot seek ({_message(exc)})") from None
        self._frames = self.container.decode(self.stream)
        self._last = None

    def _next_frame(self) -> Any | None:
        try:
            return next(self._frames)
        except StopIteration:
            return None
        except (self.av.FFmpegError, OSError, ValueError):
            return None

    def _first_frame(self) -> Any:
        self._seek(self.keys[0])
        for _ in range(REORDER_SLACK + 1):
            frame = self._next_frame()
            if frame is not None:
                self._last = frame.pts
                return frame
        raise ReaderFailed("pyav: no frame decodes")

    # -- reading --

    def _needs_seek(self, target: int) -> bool:
        if self._frames is None or self._last is None or target <= self._last:
            return True
        key = self.keys[bisect.bisect_right(self.keys, target) - 1] if self.keys else target
        return key > self._last  # a keyframe in between: seeking skips work

    def _decode_to(self, index: int) -> Any | None:
        """The decoded frame at ``index`` (an ``av.VideoFrame``), or None when it cannot be read.

        Some demuxers seek by decode time (MPEG-TS/PS) and land after the wanted frame:
        then the reader seeks again to an earlier keyframe, and at last to the start.
        """
        target = self.pts[index]
        if self._last is not None and not self._needs_seek(target):
            found = self._forward(index, bisect.bisect_left(self.pts, self._last), True)
            return None if found is _OVERSHOT else found
        pos = max(bisect.bisect_right(self.keys, target) - 1, 0)
        tries = [max(pos - back, 0) for back in SEEK_BACK]
        for key in sorted(set(tries), reverse=True):
            self._seek(self.keys[key])
            found = self._forward(index, bisect.bisect_left(self.pts, self.keys[key]), False)
            if found is not _OVERSHOT:
                return found
        self._seek(self.pts[0])
        found = self._forward(index, 0, True)
        return None if found is _OVERSHOT else found

    def _forward(self, index: int, from_index: int, decoding: bool) -> Any:
        """Decode forward to frame ``index``: the frame, None, or ``_OVERSHOT`` when the
        first frame out (``decoding`` False: right after a seek) is already past it."""
        target, after = self.pts[index], self._end_pts(index + 1)
        for _ in range(max(index - from_index + REORDER_SLACK, 1)):
            frame = self._next_frame()
            if frame is None:
                self._frames = None
                return None
            stamp = frame.pts if frame.pts is not None else frame.dts
            if stamp is None:
                continue
            self._last = stamp
            if stamp < target:
                decoding = True
                continue
            if stamp < after:  # the wanted frame (stamps may round)
                return frame
            return None if decoding else _OVERSHOT  # not produced: a broken stream
        self._frames = None
        return None

    def _to_rgb(self, frame: Any) -> np.ndarray:
        """The frame as RGB at ``target``: swscale scales and converts in one pass.

        swscale writes BGR (its x86 scaled-output path has SIMD for BGR, not for RGB: twice
        as fast, and no less accurate) and OpenCV swaps the channels; the reader's one
        scaler keeps its swscale context from frame to frame.
        """
        width, height = self.target
        bgr = self._scaler.reformat(frame, format="bgr24", width=width, height=height,
                                    interpolation="AREA", threads=self.threads).to_ndarray()
        return own(_rotate(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self.rotation))

    def read(self, indices: list[int]) -> tuple[list[int], list[np.ndarray]]:
        got, frames = [], []
        for index in sorted(set(indices)):
            frame = self._decode_to(index)
            if frame is not None:
                if self._geometry is None:
                    self._learn(frame)
                got.append(index)
                frames.append(self._to_rgb(frame))
        if not got:
            self._known_geometry()  # ReaderFailed when not even the first frame decodes
        return got, frames

    def _seconds(self, pts: int) -> float:
        start = self.stream.start_time or 0
        return round((pts - start) * self.time_base, 6) if self.time_base else 0.0

    def _end_pts(self, end: int) -> int:
        if end < self.count:
            return self.pts[end]
        if self.count > 1:
            return self.pts[-1] + (self.pts[-1] - self.pts[-2])
        return self.pts[-1] + 1

    def times(self, indices: list[int]) -> list[float]:
        return [self._seconds(self.pts[i]) for i in indices]

    def span(self, start: int, end: int) -> list[float]:
        return [self._seconds(self.pts[start]), self._seconds(self._end_pts(end))]

    # -- cutting --

    def cut(self, start: int, end: int, max_bytes: int) -> bytes:
        """Frames ``[start, end)`` as an MP4 remuxed from the source packets (no re-encode).

        Starts at the keyframe at or before ``start``; raises :class:`ReaderFailed` when the
        codec cannot go into an MP4 or the clip would exceed ``max_bytes``.
        """
        pos = max(bisect.bisect_right(self.keys, self.pts[start]) - 1, 0)
        first_key, stop = self.keys[pos], self._end_pts(end)
        buf = io.BytesIO()
        try:
            self.container.seek(first_key, stream=self.stream, backward=True, any_frame=False)
            with self.av.open(buf, mode="w", format="mp4") as out:
                ostream = out.add_stream_from_template(self.stream)
                self._remux(out, ostream, first_key, stop, buf, max_bytes)
        except ReaderFailed:
            raise
        except Exception as exc:
            raise ReaderFailed(f"pyav: cannot cut the clip into an MP4 ({_message(exc)})") from None
        finally:
            self._frames = None
        data = buf.getvalue()
        if len(data) > max_bytes:
            raise ReaderFailed(f"the clip is {len(data)} bytes > {max_bytes}")
        return data

    def _decode_stamp(self, k0: int, k: int, depth: int) -> int:
        """A decode timestamp for the ``k``-th packet from keyframe ``k0`` when the demuxer
        gives none (Matroska with B-frames): the ``(k - depth)``-th presentation time."""
        i = k0 + k - depth
        if i >= 0:
            return self.pts[min(i, self.count - 1)]
        step = (self.pts[1] - self.pts[0]) if self.count > 1 else 1
        return self.pts[0] + i * step

    def _remux(self, out: Any, ostream: Any, first_key: int, stop: int, buf: io.BytesIO,
               max_bytes: int) -> None:
        offset: int | None = None
        k0 = bisect.bisect_left(self.pts, first_key)
        reorder = int(self.stream.codec_context.has_b_frames or 0)
        depth = reorder + 1 if reorder else 0
        k = 0
        for packet in self.container.demux(self.stream):
            stamp = packet.pts if packet.pts is not None else packet.dts
            if packet.size == 0 or stamp is None:
                continue
            if offset is None and (not packet.is_keyframe or stamp < first_key):
                continue
            dts = packet.dts if packet.dts is not None else self._decode_stamp(k0, k, depth)
            if offset is None:
                offset = dts
            if dts >= stop:
                break
            packet.pts, packet.dts = stamp - offset, dts - offset
            packet.stream = ostream
            out.mux(packet)
            k += 1
            if buf.tell() > max_bytes:
                raise ReaderFailed(f"the clip is more than {max_bytes} bytes")
        if offset is None:
            raise ReaderFailed("pyav: no keyframe packet to start the clip")

    def close(self) -> None:
        self._frames = None
        self.container.close()
