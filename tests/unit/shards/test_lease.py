"""One writer per output: the lease file, its heartbeat, refusal and takeover (issue #14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from relshard.errors import OutputConflictError
from relshard.shards.lease import (
    LEASE_NAME,
    LeaseLostError,
    OutputLease,
    OutputLockedError,
    pid_alive,
    read_lease,
)


def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        time.sleep(0.02)


def test_second_holder_is_refused_with_one_sentence_naming_the_first(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with OutputLease(str(out), "run-a", timeout_s=60) as first:
        assert (out / LEASE_NAME).exists()
        info = json.loads((out / LEASE_NAME).read_text())
        assert (info["run_id"], info["pid"]) == ("run-a", os.getpid())
        assert {"owner", "host", "user", "heartbeat"} <= set(info)
        with pytest.raises(OutputLockedError) as err:
            OutputLease(str(out), "run-b", timeout_s=60).acquire()
        text = str(err.value)
        assert "run run-a" in text and f"pid {os.getpid()}" in text and "\n" not in text
        assert isinstance(err.value, OutputConflictError)  # exit 2 in the CLI
        assert first.held
    assert not (out / LEASE_NAME).exists()  # released at the end
    OutputLease(str(out), "run-c").acquire()  # and free again


def test_release_on_error_and_no_temporary_files_left(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), OutputLease(str(out), "r1", timeout_s=60):
        raise RuntimeError("boom")
    assert os.listdir(out) == []


def test_heartbeat_refreshes_the_lease(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with OutputLease(str(out), "r1", timeout_s=0.4) as lease:
        first = read_lease(str(out)).heartbeat
        _wait_for(lambda: read_lease(str(out)).heartbeat > first)
        assert lease.lost is None


def _foreign(out: Path, *, age: float, host: str = "another-host", pid: int = 1,
             timeout: float = 30) -> None:
    out.mkdir(parents=True, exist_ok=True)
    now = time.time()
    (out / LEASE_NAME).write_text(json.dumps({
        "owner": "x" * 24, "run_id": "old-run", "host": host, "pid": pid, "user": "someone",
        "started": now - age, "heartbeat": now - age, "timeout_s": timeout}))


def test_a_live_lease_of_another_host_is_refused(tmp_path: Path) -> None:
    _foreign(tmp_path, age=1)
    with pytest.raises(OutputLockedError, match="someone@another-host"):
        OutputLease(str(tmp_path), "r2").acquire()


def test_a_lease_without_heartbeat_for_its_timeout_is_taken_over(tmp_path: Path) -> None:
    _foreign(tmp_path, age=100, timeout=30)
    lease = OutputLease(str(tmp_path), "r2")
    lease.acquire()
    assert lease.took_over and "no heartbeat for 100 s" in lease.took_over
    assert read_lease(str(tmp_path)).run_id == "r2"
    lease.release()


def test_kill_9_leaves_a_stale_lease_that_the_next_run_on_this_host_takes_over(
        tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from relshard.shards.lease import OutputLease\n"
         f"l = OutputLease({str(out)!r}, 'victim', timeout_s=3600); l.acquire()\n"
         "print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputLockedError, match="victim"):
            OutputLease(str(out), "r2").acquire()
    finally:
        holder.kill()  # SIGKILL: no release
        holder.wait()
    assert read_lease(str(out)).run_id == "victim"
    lease = OutputLease(str(out), "r3")
    lease.acquire()
    assert "process" in (lease.took_over or "") and "is gone" in lease.took_over
    lease.release()


def test_a_reused_pid_does_not_keep_a_dead_holder_alive() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(os.getpid(), start=-5)  # same pid, other start time
    assert not pid_alive(0)


def test_a_lease_taken_over_meanwhile_is_noticed_at_the_next_heartbeat(tmp_path: Path) -> None:
    lease = OutputLease(str(tmp_path), "r1", timeout_s=0.3)
    lease.acquire()
    lease.start_heartbeat()
    _foreign(tmp_path, age=0, host="thief")  # someone broke and re-took it
    _wait_for(lambda: lease.lost is not None)
    with pytest.raises(LeaseLostError, match="taken over"):
        lease.check()
    lease.release()
    assert read_lease(str(tmp_path)).host == "thief"  # not ours: left alone


def test_an_unreadable_lease_counts_as_held_until_its_mtime_is_old(tmp_path: Path) -> None:
    (tmp_path / LEASE_NAME).write_text("{half")
    with pytest.raises(OutputLockedError):
        OutputLease(str(tmp_path), "r1", timeout_s=30).acquire()
    old = time.time() - 100
    os.utime(tmp_path / LEASE_NAME, (old, old))
    lease = OutputLease(str(tmp_path), "r1", timeout_s=30)
    lease.acquire()
    assert lease.took_over
    lease.release()


def test_memory_filesystem_uses_the_exclusive_create() -> None:
    root = f"memory://lease-test-{os.getpid()}"
    with OutputLease(root, "m1", timeout_s=60), pytest.raises(OutputLockedError, match="m1"):
        OutputLease(root, "m2").acquire()
    with OutputLease(root, "m3"):
        pass
