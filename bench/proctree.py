"""Peak memory and CPU time of a whole process tree, sampled from /proc (Linux).

    become_subreaper()                      # once, in the measuring process
    before = children_cpu_s()
    proc = subprocess.Popen(...)
    with TreeSampler(proc.pid) as tree:
        ...; at = tree.mark()               # CPU so far, e.g. when a timed window starts
        proc.wait()
    reap_adopted()                          # the tree's orphans, adopted: wait for them
    cpu = max(tree.cpu_s, children_cpu_s() - before)
    tree.peak_pss_mb, tree.by_process()

The sampler walks the descendants of ``root`` (Ray's raylet, workers, object store,
the decode children...) and keeps each process's latest user+system CPU time; less
often it also sums their proportional set size (PSS: shared pages such as Ray's object
store are split between the processes that map them, not counted once per process) and
keeps the peak. Both sweeps hold their own cost to a small share of a core (see
:class:`TreeSampler`), so a peak that lasts less than a sweep's period (0.1-1 s) can
be missed. CPU a process spends after the last sample before it exits is missed (at
most a period per process), and a process that lives less than a period may be missed
altogether.

The kernel's count, ``RUSAGE_CHILDREN`` (:func:`children_cpu_s`), is exact for every
process that was reaped by its parent, and by its parent's parent, up to the measuring
process: a pool's workers. A process that is a child subreaper (:func:`become_subreaper`)
also adopts, and :func:`reap_adopted` reaps, the orphans of its descendants, so that
none outlives one measurement into the next. The count misses processes whose parent
let the kernel reap them: Ray's raylet ignores SIGCHLD, so its workers' CPU reaches no
one's count. Each figure is thus a lower bound: take the larger of the two.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_CHILD_SUBREAPER = 36


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            kids[int(fields[1])].append(int(entry.name))
    return kids


def _tree(root: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, ()))
    return out


def _cpu_s(pid: int) -> float | None:
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


TAGS = ("raylet", "gcs_server", "default_worker", "spawn_main", "resource_tracker",
        "dashboard", "log_monitor", "monitor.py", "runtime_env")


def _name(pid: int) -> str:
    """A short kind for a process: Ray's task name, a known program or script, else argv."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "?"
    if raw.startswith("ray::"):
        return raw.split("(")[0].split(" ")[0].strip()
    argv = raw.split()
    if not argv:
        return "?"
    head = " ".join(a.rsplit("/", 1)[-1] for a in argv[:2])  # the program, then its script
    for tag in TAGS:  # the raylet's own arguments name default_worker.py: look at argv[:2]
        if tag in head:
            return tag
    for tag in TAGS:
        if tag in raw:
            return tag
    return argv[0].rsplit("/", 1)[-1] + (" " + argv[1][-30:] if len(argv) > 1 else "")


def tree_cpu(root: int) -> dict[int, float]:
    """pid -> CPU seconds so far, for ``root`` and its living descendants."""
    out = {}
    for pid in _tree(root):
        cpu = _cpu_s(pid)
        if cpu is not None:
            out[pid] = cpu
    return out


def tree_affinity(root: int) -> set[int]:
    """The union of the CPUs that ``root`` and its living descendants may run on."""
    cores: set[int] = set()
    for pid in _tree(root):
        try:
            cores |= os.sched_getaffinity(pid)
        except OSError:
            continue
    return cores


def wait_until_idle(root: int, share: float = 0.1, step: float = 0.5,
                    limit: float = 20.0) -> float:
    """Sleep until the tree of ``root`` used less than ``share`` of a core over ``step``
    seconds (processes still starting up: Ray's), or ``limit`` passed; the seconds waited."""
    start = time.monotonic()
    last = tree_cpu(root)
    while time.monotonic() - start < limit:
        time.sleep(step)
        now = tree_cpu(root)
        used = sum(cpu - last.get(pid, 0.0) for pid, cpu in now.items())
        if used < share * step:
            break
        last = now
    return time.monotonic() - start


def become_subreaper() -> None:
    """Adopt the orphans of this process's descendants (Linux ``PR_SET_CHILD_SUBREAPER``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def _own_children() -> list[int]:
    return _children_map().get(os.getpid(), [])


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def reap_adopted(timeout: float = 15.0) -> list[int]:
    """Wait for every child of this process to exit and reap it; SIGKILL (by pid) those
    still running after ``timeout``. Call it only when every child left is an adopted
    orphan of a measured tree. Returns the pids that had to be killed."""
    deadline = time.monotonic() + timeout
    while True:
        _reap()
        left = _own_children()
        if not left:
            return []
        if time.monotonic() > deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
            _reap()
            return left
        time.sleep(0.05)


def children_cpu_s() -> float:
    """User+system CPU seconds of every child this process has reaped so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class TreeSampler:
    """Samples the tree of ``root`` from a thread: CPU, and every so often PSS.

    Each kind of sweep runs at most every ``interval`` seconds and, where it costs more
    (PSS: reading ``smaps_rollup`` takes ~2 ms a Ray process), as often as keeps its
    CPU cost in this process to ``budget`` of a core: ~0.1-0.15 s for a small pool,
    ~1 s for a Ray tree. ``overhead_s`` is the CPU the sampling thread took.
    """

    def __init__(self, root: int, interval: float = 0.1, budget: float = 0.02) -> None:
        self.root = root
        self.interval = interval
        self.budget = budget
        self.peak_pss_mb = 0.0
        self.overhead_s = 0.0
        self._cpu: dict[int, float] = {}
        self._alive: list[int] = []
        self._names: dict[int, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample_cpu(self) -> None:
        with self._lock:
            now = tree_cpu(self.root)
            self._alive = list(now)
            for pid, cpu in now.items():
                self._cpu[pid] = cpu
                name = _name(pid)
                if pid not in self._names or name not in ("ray::IDLE", "default_worker", "?"):
                    self._names[pid] = name

    def _sample_pss(self) -> None:
        total_kb = sum(_pss_kb(pid) for pid in self._alive)
        self.peak_pss_mb = max(self.peak_pss_mb, total_kb / 1024)

    def _pause(self, cost: float) -> float:
        return max(self.interval, cost / self.budget)

    def _loop(self) -> None:
        next_pss = 0.0
        while not self._stop.is_set():
            start = time.thread_time()
            self._sample_cpu()
            swept = time.thread_time()
            if time.monotonic() >= next_pss:
                self._sample_pss()
                next_pss = time.monotonic() + self._pause(time.thread_time() - swept)
            self.overhead_s = time.thread_time()
            self._stop.wait(self._pause(swept - start))

    def mark(self) -> float:
        """Sample now; the tree's CPU seconds so far."""
        self._sample_cpu()
        return self.cpu_s

    @property
    def cpu_s(self) -> float:
        return sum(self._cpu.values())

    def by_process(self) -> dict[str, tuple[int, float]]:
        """Process kind -> (how many, CPU seconds)."""
        out: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        for pid, cpu in self._cpu.items():
            row = out[self._names.get(pid, "?")]
            row[0] += 1
            row[1] += cpu
        return {k: (int(v[0]), v[1]) for k, v in sorted(out.items(), key=lambda kv: -kv[1][1])}

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample_cpu()
