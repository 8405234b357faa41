"""Run risky per-input work (native decoders) in a child process.

A decoder that segfaults on one malformed video would take its Ray worker down,
and Ray Data retries a deterministic crash until the whole run fails. Instead,
each worker keeps one long-lived child process and streams it a task's inputs
over a pipe, as msgpack bytes (no pickle): the next input is already queued when
the child finishes one (``PIPELINE_DEPTH``), so the child never waits for its
parent between inputs. The child answers in order, one message per input, so
when it dies or overruns the time limit the input that was in it is known
exactly: that input is retried alone in a fresh child up to ``crash_retries``
times, then rejected (``worker_crash`` or ``timeout``); the inputs queued behind
it go to the fresh child, and the worker carries on.

The child is started with the ``spawn`` method (safe beside Ray's threads), caps
its own address space when asked (a decompression bomb fails there, not in the
worker), and exits when its parent goes away (the pipe closes).
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, cast

from relshard.errors import SpecError
from relshard.plugins import import_plugins
from relshard.workers.allocator import keep_freed_memory

log = logging.getLogger(__name__)

# A handler is "module:function"; it takes (config: dict, payload: bytes) -> bytes.
Handler = Callable[[dict[str, Any], bytes], bytes]
READY = b"relshard-child-ready"
FAILED = b"relshard-child-failed:"  # + one sentence: the child cannot run (a plugin import)
STARTUP_TIMEOUT_S = 300.0  # imports on a loaded node can take long; not an input's fault
# Inputs sent ahead of the one the child is working on. Queued payloads sit in the
# pipe's buffer (64 KiB on Linux) while the child writes its answer, so only small
# payloads (input references) are sent ahead: a large one waits its turn, or parent
# and child could each block writing to the other.
PIPELINE_DEPTH = 2
PIPELINE_MAX_PAYLOAD = 16 * 1024


@dataclass
class ChildFailure:
    """Why the child produced no answer for one payload."""

    reason: str  # "worker_crash" | "timeout"
    detail: str
    attempts: int


def _resolve(spec: str) -> Handler:
    module, _, func = spec.partition(":")
    return cast(Handler, getattr(importlib.import_module(module), func))


def _child_main(conn: Connection, handler_spec: str, config: dict[str, Any],
                plugins: list[str], max_memory_mb: int | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    keep_freed_memory()  # frames reuse heap pages: no page faults per input
    if max_memory_mb:
        import resource

        limit = max_memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        import_plugins(plugins)  # before the handler: it may decode with a plugin's decoder
    except SpecError as exc:  # this node's environment lacks a plugin: say which, and stop
        conn.send_bytes(FAILED + str(exc).encode())
        return
    handler = _resolve(handler_spec)
    conn.send_bytes(READY)  # imports done: the parent's per-input clock starts now
    while True:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return
        conn.send_bytes(handler(config, payload))


_MAIN_LOCK = threading.Lock()


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start a spawned child without re-running the parent's ``__main__``.

    ``spawn`` imports the parent's main script in the child (as ``__mp_main__``). In a Ray
    worker that script is Ray's ``default_worker.py``: every decode child imported all of
    Ray for nothing (~0.3 CPU-s and its memory). The child's entry point lives in this
    module, so it needs nothing from ``__main__``; a bare stand-in is shown to ``spawn``
    while it reads what to prepare (the few milliseconds of ``Process.start``).
    """
    with _MAIN_LOCK:
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            if main is not None:
                sys.modules["__main__"] = main


class IsolatedRunner:
    """One child process that runs ``handler`` on payloads, one at a time."""

    def __init__(self, handler: str, config: dict[str, Any], *, timeout_s: float,
                 crash_retries: int, max_memory_mb: int | None = None,
                 plugins: list[str] | None = None) -> None:
        self.handler = handler
        self.config = config
        self.timeout_s = timeout_s
        self.crash_retries = crash_retries
        self.max_memory_mb = max_memory_mb
        self.plugins = plugins or []
        self._ctx = mp.get_context("spawn")
        self._proc: Any = None
        self._conn: Connection | None = None
        self.restarts = 0

    def _start(self) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_child_main,
            args=(child, self.handler, self.config, self.plugins, self.max_memory_mb),
            daemon=True,
            name="relshard-decode",
        )
        with _main_module_hidden():
            proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        try:
            answer = parent.recv_bytes() if parent.poll(STARTUP_TIMEOUT_S) else b""
        except (EOFError, OSError):
            answer = b""
        if answer.startswith(FAILED):
            self._kill()
            raise SpecError(answer[len(FAILED):].decode(errors="replace"))
        if answer != READY:
            code = proc.exitcode
            self._kill()
            raise RuntimeError(
                f"the decode child process did not start (exit code {code}); check that "
                f"relshard and the spec's plugins import in a fresh Python"
            )

    def _kill(self) -> None:
        if self._proc is not None:
            if self._proc.is_alive():
                os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
        self._proc, self._conn = None, None

    def _crash_failure(self) -> ChildFailure:
        """The child's pipe broke: reap it and say how it ended."""
        assert self._proc is not None
        self._proc.join(timeout=5)
        code = self._proc.exitcode
        self._kill()
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            detail = f"decoder process killed by {name}"
        else:
            detail = f"decoder process exited with code {code}"
        return ChildFailure("worker_crash", detail, 1)

    def _stream(self, payloads: Sequence[bytes], first: int,
                out: list[bytes | ChildFailure]) -> ChildFailure | None:
        """Run ``payloads[first:]`` in the child, appending answers to ``out`` in order.

        Returns None when every payload was answered, else the failure of the payload
        at ``len(out)`` (the child is gone then; the ones after it were not answered).
        """
        if self._proc is None or not self._proc.is_alive():
            if self._proc is not None:
                self._kill()
            self._start()
        assert self._conn is not None and self._proc is not None
        conn, n = self._conn, len(payloads)
        small = [len(p) <= PIPELINE_MAX_PAYLOAD for p in payloads]
        sent = first
        try:
            for i in range(first, n):
                # keep the child fed: send up to PIPELINE_DEPTH payloads ahead of i
                while sent < n and (sent == i or (sent - i < PIPELINE_DEPTH
                                                  and all(small[i:sent + 1]))):
                    conn.send_bytes(payloads[sent])
                    sent += 1
                # the child is sequential: payload i's clock starts at answer i-1
                if not conn.poll(self.timeout_s):
                    self._kill()
                    return ChildFailure("timeout", f"no result within {self.timeout_s:g} s", 1)
                out.append(conn.recv_bytes())
        except (EOFError, OSError, BrokenPipeError):
            return self._crash_failure()
        return None

    def _call_once(self, payload: bytes) -> bytes | ChildFailure:
        out: list[bytes | ChildFailure] = []
        failure = self._stream([payload], 0, out)
        return out[0] if failure is None else failure

    def _note_failure(self, failure: ChildFailure, attempt: int) -> ChildFailure:
        self.restarts += 1  # the child was killed or died: the next call starts a new one
        log.warning("isolated call failed (%s, attempt %d)", failure.detail, attempt)
        return ChildFailure(failure.reason, failure.detail, attempt)

    def _retry(self, payload: bytes, failure: ChildFailure) -> bytes | ChildFailure:
        """Retry a payload that failed once, alone in fresh children, then give up."""
        failure = self._note_failure(failure, 1)
        for attempt in range(2, self.crash_retries + 2):
            result = self._call_once(payload)
            if not isinstance(result, ChildFailure):
                return result
            failure = self._note_failure(result, attempt)
        return failure

    def call_many(self, payloads: Sequence[bytes]) -> list[bytes | ChildFailure]:
        """Run payloads in order, streamed through the child; one answer per payload.

        A crash or time-out rejects only the payload that caused it (after its
        retries); the payloads behind it run in the next child.
        """
        out: list[bytes | ChildFailure] = []
        while len(out) < len(payloads):
            failure = self._stream(payloads, len(out), out)
            if failure is not None:
                out.append(self._retry(payloads[len(out)], failure))
        return out

    def call(self, payload: bytes) -> bytes | ChildFailure:
        """Run one payload; retry crashes and time-outs in a fresh child, then give up."""
        return self.call_many([payload])[0]

    def close(self) -> None:
        self._kill()


_RUNNERS: dict[tuple[str, str], IsolatedRunner] = {}


def shared_runner(key: str, factory: Callable[[], IsolatedRunner],
                  handler: str) -> IsolatedRunner:
    """One runner per worker process and configuration, reused across Ray tasks."""
    runner = _RUNNERS.get((handler, key))
    if runner is None:
        runner = _RUNNERS[(handler, key)] = factory()
    return runner
