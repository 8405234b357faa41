"""One writer per output: the lease file ``ROOT/lease.json``.

A run takes the lease before it touches its output (before recovery, which would
delete a live run's temporary files) and gives it back at the end, also on errors.
The file says who holds it: an ``owner`` token, the run id, user, host, pid (with
the process start time, so a reused pid is not mistaken for the holder), and a
``heartbeat`` (unix time) that a daemon thread of the driver rewrites every
quarter of ``timeout_s``.

Taking the lease is one atomic create that fails when the file exists:

- local disk: the lease is written to a temporary file and hard-linked to
  ``lease.json`` (``link`` fails if the name exists; readers never see half a
  file); where links are refused, ``O_CREAT | O_EXCL``;
- object stores: a conditional put, fsspec's ``open(path, "xb")`` (S3
  ``If-None-Match: *``). A filesystem without exclusive create falls back to
  check-then-write and says so in the log.

A lease held by someone else is refused (:class:`OutputLockedError`, exit 2),
unless it is stale: its pid is gone on this host, or it has had no heartbeat for
``timeout_s`` (the holder's own value). A stale lease is taken over, with a
warning naming the old holder. Locally the takeover renames the stale file away
and checks that it moved the lease it judged stale (else it puts it back); on an
object store it deletes and re-creates. Two runs that take over the same stale
lease at the same instant are settled by the exclusive create; the loser of a
delete race notices at its next heartbeat (the file names another owner), marks
the lease lost, and :meth:`OutputLease.check` stops it before it writes the
manifest. A ``kill -9`` leaves the file behind: the next run on this host sees
the dead pid and takes over at once; elsewhere it waits out ``timeout_s``.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from relshard.errors import OutputConflictError, ShardWriteError
from relshard.shards.layout import OutputLayout, tmp_name_for

log = logging.getLogger(__name__)

LEASE_NAME = "lease.json"
TAKEOVER_ATTEMPTS = 4


class OutputLockedError(OutputConflictError):
    """Another live run holds the output's lease."""


class LeaseLostError(ShardWriteError):
    """This run's lease was taken over by another run while it was working."""


def _pid_start(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int, start: int | None = None) -> bool:
    """Whether process ``pid`` of this host exists (and, given ``start``, is the same one)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    except OSError:
        return True
    if start is not None:
        now = _pid_start(pid)
        if now is not None and now != start:
            return False  # the pid was reused by another process
    return True


@dataclass
class LeaseInfo:
    """The content of ``lease.json``."""

    owner: str
    run_id: str
    host: str
    pid: int
    user: str
    started: float
    heartbeat: float
    timeout_s: float
    pid_start: int | None = None

    def to_bytes(self) -> bytes:
        return (json.dumps(asdict(self), sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, blob: bytes) -> LeaseInfo:
        data = json.loads(blob)
        return cls(owner=str(data["owner"]), run_id=str(data.get("run_id", "?")),
                   host=str(data.get("host", "?")), pid=int(data.get("pid", 0)),
                   user=str(data.get("user", "?")), started=float(data.get("started", 0)),
                   heartbeat=float(data["heartbeat"]),
                   timeout_s=float(data.get("timeout_s", 300)),
                   pid_start=data.get("pid_start"))

    def describe(self, now: float) -> str:
        return (f"run {self.run_id} ({self.user}@{self.host}, pid {self.pid}, last heartbeat "
                f"{max(0.0, now - self.heartbeat):.0f} s ago)")

    def stale_because(self, now: float, host: str) -> str | None:
        """Why this lease may be taken over, or None while its holder counts as alive."""
        if self.host == host and not pid_alive(self.pid, self.pid_start):
            return f"its process {self.pid} on this host is gone"
        age = now - self.heartbeat
        if age > self.timeout_s:
            return f"it had no heartbeat for {age:.0f} s (lease timeout {self.timeout_s:g} s)"
        return None


class OutputLease:
    """The lease of one output root for one run; see the module doc."""

    def __init__(self, root: str | OutputLayout, run_id: str, timeout_s: float = 300.0) -> None:
        self.layout = OutputLayout.open(root)
        self.relpath = LEASE_NAME
        self.path = self.layout.path(LEASE_NAME)
        self.host = socket.gethostname()
        pid = os.getpid()
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid()) if hasattr(os, "getuid") else "?"
        now = time.time()
        self.info = LeaseInfo(owner=secrets.token_hex(12), run_id=run_id, host=self.host,
                              pid=pid, user=user, started=now, heartbeat=now,
                              timeout_s=float(timeout_s), pid_start=_pid_start(pid))
        self.took_over: str | None = None  # one sentence when a stale lease was taken over
        self.lost: str | None = None
        self.held = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reading and creating ---------------------------------------------------------

    def read(self) -> LeaseInfo | None:
        """The lease on disk, None when there is none; an unreadable file reads as a
        lease of unknown owner whose heartbeat is the file's modification time."""
        try:
            blob = self.layout.fs.cat_file(self.path)
        except FileNotFoundError:
            return None
        try:
            return LeaseInfo.from_bytes(blob)
        except (ValueError, KeyError, TypeError):
            return LeaseInfo(owner="?", run_id="?", host="?", pid=0, user="?", started=0,
                             heartbeat=self._mtime(), timeout_s=self.info.timeout_s)

    def _mtime(self) -> float:
        try:
            info = self.layout.fs.info(self.path)
        except FileNotFoundError:
            return 0.0
        for name in ("mtime", "LastModified", "last_modified", "updated", "created"):
            value = info.get(name)
            if isinstance(value, int | float):
                return float(value)
            if hasattr(value, "timestamp"):
                return float(value.timestamp())
        return time.time()  # unknown: count it as fresh

    def _create(self) -> bool:
        """Create the lease file atomically; False when one exists."""
        data = self.info.to_bytes()
        if self.layout.is_local:
            return self._create_local(data)
        try:
            with self.layout.fs.open(self.path, "xb") as f:
                f.write(data)
            return True
        except FileExistsError:
            return False
        except (ValueError, NotImplementedError, TypeError):
            log.warning("%s offers no exclusive create; the lease of %s is checked, not "
                        "atomic", type(self.layout.fs).__name__, self.layout.url)
            if self.layout.fs.exists(self.path):
                return False
            self.layout.fs.pipe_file(self.path, data)
            got = self.read()
            return got is not None and got.owner == self.info.owner

    def _create_local(self, data: bytes) -> bool:
        os.makedirs(self.layout.root, exist_ok=True)
        tmp = self.layout.path(tmp_name_for(self.relpath))
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some FUSE and network mounts)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        finally:
            with contextlib.suppress(OSError):
                os.remove(tmp)

    def _break(self, stale: LeaseInfo) -> None:
        """Remove the stale lease ``stale`` (and nothing newer that replaced it meanwhile)."""
        if not self.layout.is_local:
            with contextlib.suppress(FileNotFoundError):
                self.layout.fs.rm_file(self.path)
            return
        aside = self.layout.path(tmp_name_for(self.relpath))
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # someone else broke it first
        try:
            with open(aside, "rb") as f:
                moved = LeaseInfo.from_bytes(f.read())
        except (OSError, ValueError, KeyError, TypeError):
            moved = None
        if moved is not None and moved.owner != stale.owner:
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)  # a fresh lease: put it back
        with contextlib.suppress(OSError):
            os.remove(aside)

    # -- the public face ----------------------------------------------------------------

    def acquire(self) -> None:
        """Take the lease, taking over a stale one; raise :class:`OutputLockedError` when a
        live run holds it."""
        for _ in range(TAKEOVER_ATTEMPTS):
            now = time.time()
            self.info.heartbeat = now
            if self._create():
                self.held = True
                return
            holder = self.read()
            if holder is None:
                continue  # released meanwhile: try again
            why = holder.stale_because(now, self.host)
            if why is None:
                raise OutputLockedError(
                    f"Output {self.layout.url!r} is in use by {holder.describe(now)}; wait for "
                    f"it to end, or, if it is dead, re-run once it has had no heartbeat for "
                    f"{holder.timeout_s:g} s (output.lease_timeout_s) to take it over."
                )
            self._break(holder)
            self.took_over = (f"took over the stale lease of {holder.describe(now)}: {why}")
            log.warning("output %s: %s", self.layout.url, self.took_over)
        raise OutputLockedError(
            f"Output {self.layout.url!r} changed hands {TAKEOVER_ATTEMPTS} times while this "
            f"run tried to take its lease; another run is starting on it, try again later."
        )

    @property
    def interval_s(self) -> float:
        return max(0.05, self.info.timeout_s / 4)

    def refresh(self) -> bool:
        """Rewrite the heartbeat; False (and :attr:`lost` set) when another run holds it."""
        current = self.read()
        if current is None or current.owner != self.info.owner:
            self.lost = ("the lease was taken over by "
                         f"{current.describe(time.time()) if current else 'nobody (removed)'}")
            self._stop.set()
            return False
        self.info.heartbeat = time.time()
        data = self.info.to_bytes()
        if self.layout.is_local:
            tmp = self.layout.path(tmp_name_for(self.relpath))
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, self.path)
        else:
            self.layout.fs.pipe_file(self.path, data)
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if not self.refresh():
                    log.error("output %s: %s", self.layout.url, self.lost)
                    return
            except Exception as exc:  # noqa: BLE001 - a missed beat is not fatal by itself
                log.warning("output %s: lease heartbeat failed: %s", self.layout.url, exc)

    def start_heartbeat(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="relshard-lease",
                                            daemon=True)
            self._thread.start()

    def check(self) -> None:
        """Raise :class:`LeaseLostError` when the lease was taken over."""
        if self.lost:
            raise LeaseLostError(
                f"Output {self.layout.url!r} is no longer this run's: {self.lost}; this run "
                f"stops before writing the manifest."
            )

    def release(self) -> None:
        """Stop the heartbeat and remove the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, self.interval_s * 2))
            self._thread = None
        if not self.held:
            return
        self.held = False
        try:
            current = self.read()
            if current is not None and current.owner == self.info.owner:
                self.layout.fs.rm_file(self.path)
        except OSError as exc:
            log.warning("output %s: could not remove the lease: %s", self.layout.url, exc)

    def __enter__(self) -> OutputLease:
        self.acquire()
        self.start_heartbeat()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def read_lease(root: str | OutputLayout) -> LeaseInfo | None:
    """The lease of ``root`` as stored, or None."""
    return OutputLease(root, "reader").read()
