"""Test plugin: handlers and a decoder that crash the process like a broken native decoder."""

from __future__ import annotations

import ctypes
import os
import signal
import time


def segfault(config: dict, payload: bytes) -> bytes:
    """An isolated-runner handler that dies by SIGSEGV on payloads starting with b'crash'."""
    if payload.startswith(b"crash"):
        ctypes.string_at(0)  # dereference NULL: a real segmentation fault
    if payload.startswith(b"hang"):
        time.sleep(60)
    if payload.startswith(b"abort"):
        os.kill(os.getpid(), signal.SIGABRT)
    return payload.upper()


def _crash_decoder(ref, cfg):  # noqa: ANN001 - decoder signature
    ctypes.string_at(0)


try:  # registered when the decode package is importable
    from relshard.workers.decode import register_decoder

    register_decoder("crashy", [".crash"], _crash_decoder)
except ImportError:  # pragma: no cover
    pass


def main_modules(config: dict, payload: bytes) -> bytes:
    """An isolated-runner handler that names the main modules the child imported."""
    import sys

    names = sorted(k for k in sys.modules if k in ("pytest", "_pytest"))
    return ",".join(names).encode()
