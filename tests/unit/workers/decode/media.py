"""Helpers for the decoder tests: videos written by OpenCV, MP4 box surgery."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from relshard.shards.item import InputRef
from relshard.spec import DecodeSpec

_MP4_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"udta", b"dinf"}


def ref(path: Path | str, modality: str = "auto", key: str = "k") -> InputRef:
    return InputRef(input_key=key, uri=str(path), modality=modality)


def cfg(**kw: object) -> DecodeSpec:
    return DecodeSpec(**kw)


def levels(i: int) -> tuple[int, int]:
    """Gray levels of the left and right halves of frame ``i`` (its tens and units digits)."""
    return 20 + 20 * (i // 10), 20 + 20 * (i % 10)


def write_video(path: Path, n: int = 100, size: tuple[int, int] = (320, 240), fps: float = 10,
                fourcc: str = "mp4v",
                draw: Callable[[int, np.ndarray], None] | None = None) -> Path:
    """A video whose frame ``i`` (i < 120) shows its number as two gray levels (:func:`levels`)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if not writer.isOpened():
        pytest.skip(f"this OpenCV build cannot write {fourcc}")
    half = size[0] // 2
    for i in range(n):
        frame = np.empty((size[1], size[0], 3), np.uint8)
        frame[:, :half], frame[:, half:] = levels(i)
        if draw:
            draw(i, frame)
        writer.write(frame)
    writer.release()
    return path


def frame_number(frame: np.ndarray) -> int:
    """Which :func:`write_video` frame a decoded frame shows."""
    h, w = frame.shape[:2]
    left = float(frame[h // 4: 3 * h // 4, w // 8: 3 * w // 8].mean())
    right = float(frame[h // 4: 3 * h // 4, 5 * w // 8: 7 * w // 8].mean())
    return 10 * round((left - 20) / 20) + round((right - 20) / 20)


def _boxes(buf: bytes | bytearray, start: int, end: int):
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", buf[pos:pos + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", buf[pos + 8:pos + 16])[0], 16
        elif size == 0:
            size = end - pos
        yield pos, size, kind, header
        pos += size


def _shift_chunk_offsets(buf: bytearray, start: int, end: int, delta: int) -> None:
    for pos, size, kind, header in _boxes(buf, start, end):
        if kind in _MP4_CONTAINERS:
            _shift_chunk_offsets(buf, pos + header, pos + size, delta)
        elif kind in (b"stco", b"co64"):
            width = 4 if kind == b"stco" else 8
            fmt = ">I" if width == 4 else ">Q"
            (count,) = struct.unpack(">I", buf[pos + 12:pos + 16])
            for i in range(count):
                at = pos + 16 + width * i
                (value,) = struct.unpack(fmt, buf[at:at + width])
                struct.pack_into(fmt, buf, at, value + delta)


def faststart(data: bytes) -> bytes:
    """Move the moov box before mdat (as web MP4s are), fixing the chunk offsets."""
    top = list(_boxes(data, 0, len(data)))
    pos, size, _, _ = next(b for b in top if b[2] == b"moov")
    moov = bytearray(data[pos:pos + size])
    _shift_chunk_offsets(moov, 8, len(moov), size)
    out = bytearray()
    for bpos, bsize, kind, _ in top:
        if kind == b"moov":
            continue
        out += data[bpos:bpos + bsize]
        if kind == b"ftyp":
            out += moov
    return bytes(out)


def set_rotation(data: bytes, degrees: int) -> bytes:
    """Write a display rotation into the first track header's matrix (as phones do)."""
    buf = bytearray(data)
    moov = next(b for b in _boxes(buf, 0, len(buf)) if b[2] == b"moov")
    trak = next(b for b in _boxes(buf, moov[0] + 8, moov[0] + moov[1]) if b[2] == b"trak")
    tkhd = next(b for b in _boxes(buf, trak[0] + 8, trak[0] + trak[1]) if b[2] == b"tkhd")
    version = buf[tkhd[0] + 8]
    at = tkhd[0] + 8 + 4 + (20 if version == 0 else 32) + 16
    one, neg = 0x00010000, 0xFFFF0000
    a, b, c, d = {90: (0, one, neg, 0), 180: (neg, 0, 0, neg), 270: (0, neg, one, 0)}[degrees]
    struct.pack_into(">9I", buf, at, a, b, 0, c, d, 0, 0, 0, 0x40000000)
    return bytes(buf)


def write_av(path: Path, codec: str = "libx264", n: int = 100, size: tuple[int, int] = (320, 240),
             fps: int = 10, gop: int = 12, options: dict[str, str] | None = None,
             audio: bool = False, fmt: str | None = None,
             draw: Callable[[int, np.ndarray], None] | None = None) -> Path:
    """A :func:`write_video` video encoded by PyAV (codecs and containers OpenCV cannot write)."""
    import av

    half = size[0] // 2
    with av.open(str(path), mode="w", format=fmt) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = {"gif": "rgb8", "mjpeg": "yuvj420p"}.get(codec, "yuv420p")
        stream.codec_context.gop_size = gop
        if options:
            stream.codec_context.options = options
        sound = out.add_stream("aac", rate=16000) if audio else None
        for i in range(n):
            frame = np.empty((size[1], size[0], 3), np.uint8)
            frame[:, :half], frame[:, half:] = levels(i)
            if draw:
                draw(i, frame)
            video = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[..., ::-1]), "rgb24")
            out.mux(stream.encode(video))
        out.mux(stream.encode())
        if sound is not None:
            samples = 16000 * n // fps
            wave = (0.1 * np.sin(np.arange(samples) / 10.0)).astype(np.float32)[None, :]
            chunk = 1024
            for start in range(0, samples - chunk, chunk):
                piece = av.AudioFrame.from_ndarray(np.ascontiguousarray(
                    wave[:, start:start + chunk]), format="fltp", layout="mono")
                piece.sample_rate, piece.pts = 16000, start
                out.mux(sound.encode(piece))
            out.mux(sound.encode())
    return path
