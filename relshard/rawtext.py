"""Bounded, always-storable text from untrusted sources (model answers, server bodies).

A model server may answer with megabytes, invalid UTF-8 or lone surrogates.
Whatever keeps such text (a reject's ``raw_output``, an error message, a re-ask)
goes through :func:`clip_raw_output`: valid UTF-8 (bad bytes and lone surrogates
become U+FFFD), at most :data:`RAW_OUTPUT_MAX_BYTES` bytes, the head and the tail
kept around a marker saying how much was cut.
"""

from __future__ import annotations

RAW_OUTPUT_MAX_BYTES = 64 * 1024
CUT_MARKER = "\n[... relshard cut {cut} of {total} bytes ...]\n"


def decode_text(data: bytes) -> str:
    """Bytes from a server as text: UTF-8, each invalid byte a replacement character."""
    return data.decode("utf-8", "replace")


def storable(text: str) -> str:
    """``text`` with lone surrogates (``"\\ud800"`` from JSON escapes) replaced: UTF-8-safe."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def clip_raw_output(text: str | None, limit: int = RAW_OUTPUT_MAX_BYTES) -> str | None:
    """At most ``limit`` UTF-8 bytes of ``text``: its head and tail around a cut marker."""
    if text is None:
        return None
    if len(text) * 4 <= limit:  # short: no need to measure bytes
        return storable(text)
    data = storable(text).encode("utf-8")
    if len(data) <= limit:
        return data.decode("utf-8")
    marker_room = len(CUT_MARKER.format(cut=len(data), total=len(data)).encode("utf-8"))
    keep = max(0, limit - marker_room)
    head, tail = data[:keep - keep // 2], data[len(data) - keep // 2:] if keep // 2 else b""
    cut = len(data) - len(head) - len(tail)
    # a cut inside a multi-byte character drops that character's partial bytes
    return (head.decode("utf-8", "ignore") + CUT_MARKER.format(cut=cut, total=len(data))
            + tail.decode("utf-8", "ignore"))
