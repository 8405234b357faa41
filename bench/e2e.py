"""End to end against plain baselines: relshard vs a multiprocessing.Pool doing the same work.

    python bench/e2e.py [--images 2000] [--side 640] [--videos 120] [--runs 3] [--cpus 2]
                        [--only images,detect,scaling,videos]

One command makes the data, then for each of ``--runs`` repetitions runs every
comparison below, each side in a fresh child process, and prints the ratios and, at
the end, a summary table (ratio per run, min-max, target, peak memory).

1. ``images``, detection off, P = ``--cpus``: the baseline is ``Pool(P)`` over the
   files; each worker (``cv2.setNumThreads(1)``) reads the bytes, ``cv2.imdecode``,
   resizes so the long side is 512 (``INTER_AREA``, never upscaling) and
   ``cv2.imencode``s a JPEG at quality 90; the pool's parent writes ``KEY.jpg`` into
   plain ``tarfile`` shards of 1000 files. relshard: ``run_pipeline`` with ``detect:
   {backend: none}``, ``decode: {max_side: 512, jpeg_quality: 90}``, the default
   heuristic annotator, ``num_cpus=P``. Target relshard / pool >= 0.6x.
2. ``detect``, default detector: the same pool, but each worker also builds
   relshard's ``SubjectDetector(DetectSpec())`` once (CenterFace, one onnxruntime
   thread) and runs ``.detect([frame])`` on the resized RGB frame, JPEG-encodes the
   returned crops (``KEY.s1.jpg``...) and writes the subjects as ``KEY.json``: the work
   relshard does. relshard: the same spec with the default ``detect``. Target >= 0.8x.
3. ``scaling``, 1 -> 2 CPUs, detection off: relshard at ``num_cpus=1`` with its whole
   process tree pinned to one core vs ``num_cpus=2`` on two cores, and ``Pool(1)``
   pinned vs ``Pool(2)``. Target relshard >= 1.8x (the pool's speed-up is the
   reference for what the machine gives).
4. ``videos``: ``--videos`` clips (24 distinct, the rest hard links to them; 10 s,
   1280x720, 25 fps, mp4v, from ``bench/decode.py``'s ``make_video``), 8 frames each.
   Baseline: ``Pool(P)`` of PyAV workers (one codec thread, like relshard's default
   ``video_threads``). Each reads
   ``stream.frames``, takes the same segment-centre indices relshard's
   ``sample_indices`` gives, and for each wanted frame seeks to the keyframe at or
   before it (``container.seek(pts, backward=True)``, the pts computed from the
   constant frame rate) and decodes forward to it: what relshard's PyAV reader does,
   without its demux pass over the whole file. Frames are converted straight at the
   output size (long side 768, relshard's default ``max_side``; swscale area
   averaging), JPEG q90, ``KEY.f000.jpg``... into tar shards. Before timing, the
   baseline's frame indices and pixels are checked against relshard's
   ``decode_input`` on one clip. relshard: ``detect: {backend: none}``, default
   decode settings. Target >= 0.8x.
5. The floor (``images`` and ``videos``; ``--no-floor`` skips it): plain Ray Data doing the
   pool's work on the same local Ray, set up as relshard's: ``from_items`` of the paths in
   4P blocks, ``map_batches`` of the pool's own function (one CPU a task, a task a block),
   ``write_webdataset`` (no encoder, no CPU reserved, one writer per 4 CPUs, a quarter of
   the inputs a file). None of relshard's records, isolation, index or commit protocol: what
   Ray itself costs for this work. Printed as ``Ray Data / pool`` and ``relshard / Ray
   Data`` (references, no target).

Sizes: the defaults are the issue's (2,000 images, 120 clips), where a run's fixed cost
(Ray's worker processes, Ray Data's start) is a large part of a ~5-second job; ``--images
10000`` / ``--videos 720`` show the cost per input once it is amortized.

Fairness rules:

- Every side reads the same input files, made once per command in a temp dir; the
  page cache is warmed by reading every input once before the first timed run.
- Each side runs in a fresh child process pinned (``os.sched_setaffinity``, inherited
  by all its descendants: Ray's processes and the pool's workers) to the first P cores
  this process may use; the child reports the cores its whole tree may use at the end
  and the parent fails if they differ.
- Ray's start-up is excluded from relshard's timed window (a user's cluster is already
  up and has run Ray Data jobs before: a trivial ``ray.data.range`` job, no relshard
  code, creates Ray Data's per-cluster detached actors and warms worker processes;
  ``--cold`` skips it and times the first job of a fresh cluster): after ``connect`` and
  that job the child waits until its process tree uses less than 10% of
  a core over 0.5 s (at most 20 s) so the start-up tail does not land in the run; the
  seconds including Ray's start are printed too. The pool's start-up (forking the
  workers, building the detector) IS timed: it is part of that approach. Module imports
  are done before the timed window on both sides.
- Each child prints one JSON line; the parent checks that every input was written or
  rejected (relshard: ``summary.inputs_written + summary.rejected_total == n``) and
  fails loudly otherwise.
- The order alternates: the pool runs first in odd runs, relshard first in even runs,
  so drift on a shared machine does not weigh systematically on one side.

Figures per side: rate (inputs per second of the timed window), wall seconds of the
timed window, CPU seconds of the whole process tree over the child's life and within
the timed window, and the peak PSS of the whole process tree over the child's life.
``bench/proctree.py`` samples them from /proc (CPU every ~0.1 s, PSS every 0.1-1 s); the
CPU figure is the larger of that and the kernel's count of reaped descendants (exact
for the pool; Ray's workers are reaped by no one, so there the samples count). This
process adopts the orphans of each child's tree and waits for them before the next
child starts, so nothing left over from one side runs during the other's.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # bench.* and relshard from this checkout

from bench.proctree import (  # noqa: E402
    TreeSampler,
    become_subreaper,
    children_cpu_s,
    reap_adopted,
    tree_affinity,
    wait_until_idle,
)

PHOTOS = sorted((REPO / "examples" / "assets").glob("*.jpg"))
SHARD_FILES = 1000
IMAGE_SIDE = 512
VIDEO_SIDE = 768  # relshard's default decode.max_side
QUALITY = 90
FRAMES_PER_CLIP = 8
MARK = "@@timed"  # the child's timed window starts
RESULT = "@@result "
PARTS = ("images", "detect", "scaling", "videos")

Member = tuple[str, bytes]


# -- data ---------------------------------------------------------------------------------

def make_images(folder: Path, n: int, side: int, seed: int = 0) -> None:
    """Crops, flips and colour shifts of the bundled photos (real faces), ``side`` px long."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    bases = [np.asarray(Image.open(p).convert("RGB")) for p in PHOTOS]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = bases[i % len(bases)]
        h, w = img.shape[:2]
        y0, x0 = int(rng.integers(0, h // 8 + 1)), int(rng.integers(0, w // 8 + 1))
        crop = img[y0:, x0:]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        shift = rng.integers(-20, 21, size=3)
        crop = np.clip(crop.astype(np.int16) + shift, 0, 255).astype(np.uint8)
        scale = side / max(crop.shape[:2])
        size = (int(crop.shape[1] * scale), int(crop.shape[0] * scale))
        small = Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR)
        small.save(folder / f"img{i:05d}.jpg", quality=90)


UNIQUE_VIDEOS = 24


def make_videos(folder: Path, n: int) -> None:
    """``n`` clips: ``UNIQUE_VIDEOS`` made with ``make_video``, the rest hard links to
    them under new names (the same decode work, without minutes of encoding)."""
    from bench.decode import make_video

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(min(n, UNIQUE_VIDEOS)):
        make_video(folder / f"clip{i:03d}.mp4", 10, 25, (1280, 720), i)
    for i in range(UNIQUE_VIDEOS, n):
        os.link(folder / f"clip{i % UNIQUE_VIDEOS:03d}.mp4", folder / f"clip{i:03d}.mp4")


def warm(folder: Path) -> int:
    """Read every file once (page cache); the bytes read."""
    return sum(len(p.read_bytes()) for p in sorted(folder.iterdir()))


# -- the baseline: what each pool worker does ------------------------------------------------

_DETECTOR: Any = None


def fit(width: int, height: int, side: int) -> tuple[int, int]:
    """``(width, height)`` scaled so the long side is at most ``side``; never larger."""
    scale = side / max(width, height)
    if scale >= 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def segment_centres(n: int, count: int) -> list[int]:
    """``count`` indices at the centres of equal segments of ``range(n)``."""
    if n <= count:
        return list(range(n))
    return [int((i + 0.5) * n / count) for i in range(count)]


def encode(bgr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def init_worker(work: str) -> None:
    global _DETECTOR
    cv2.setNumThreads(1)
    if work == "detect":
        from relshard.spec import DetectSpec
        from relshard.workers.detect.subjects import SubjectDetector

        _DETECTOR = SubjectDetector(DetectSpec())
        _DETECTOR.backend  # noqa: B018 - loads the model now, once per worker


def resized(path: Path) -> np.ndarray | None:
    bgr = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    size = fit(bgr.shape[1], bgr.shape[0], IMAGE_SIDE)
    if size == (bgr.shape[1], bgr.shape[0]):
        return bgr
    return cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)


def image_members(path: Path) -> list[Member]:
    bgr = resized(path)
    return [] if bgr is None else [(f"{path.stem}.jpg", encode(bgr))]


def detect_members(path: Path) -> list[Member]:
    bgr = resized(path)
    if bgr is None:
        return []
    subjects, crops = _DETECTOR.detect([cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)])
    record = json.dumps([s.model_dump(mode="json") for s in subjects]).encode()
    members = [(f"{path.stem}.jpg", encode(bgr)), (f"{path.stem}.json", record)]
    members += [(f"{path.stem}.{suffix}", encode(cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)))
                for suffix, crop in crops.items()]
    return members


def video_frames(path: Path) -> list[tuple[int, np.ndarray]]:
    """The sampled frames of a clip as (index, BGR at the output size): seek + decode."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        rate, time_base = stream.average_rate, stream.time_base
        assert rate and time_base, f"{path}: no frame rate"  # the generated clips have one
        ticks = 1 / (rate * time_base)  # pts per frame
        start = stream.start_time or 0
        width, height = fit(stream.codec_context.width, stream.codec_context.height, VIDEO_SIDE)
        out = []
        for index in segment_centres(stream.frames, FRAMES_PER_CLIP):
            target = start + round(index * ticks)
            container.seek(target, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.pts is not None and frame.pts >= target:
                    out.append((index, frame.to_ndarray(format="bgr24", width=width,
                                                        height=height, interpolation="AREA")))
                    break
    return out


def video_members(path: Path) -> list[Member]:
    return [(f"{path.stem}.f{k:03d}.jpg", encode(bgr))
            for k, (_, bgr) in enumerate(video_frames(path))]


WORK: dict[str, Callable[[Path], list[Member]]] = {
    "images": image_members, "detect": detect_members, "videos": video_members}


def write_shards(results: Iterable[list[Member]], out: Path) -> tuple[int, int]:
    """Members into plain tar shards of ``SHARD_FILES`` inputs, as they come; (written,
    rejected)."""
    out.mkdir(parents=True, exist_ok=True)
    written = rejected = 0
    with contextlib.ExitStack() as open_shard:
        for members in results:
            if not members:
                rejected += 1
                continue
            if written % SHARD_FILES == 0:
                open_shard.close()
                name = out / f"shard-{written // SHARD_FILES:06d}.tar"
                tar = open_shard.enter_context(tarfile.open(name, "w"))
            for member, data in members:
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            written += 1
    return written, rejected


# -- the child processes --------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    side: str  # "pool" or "relshard"
    work: str  # "images", "detect" or "videos"
    cpus: int
    src: str = ""
    out: str = ""
    cores: tuple[int, ...] = ()
    cold: bool = False  # relshard: time the first Ray Data job of a fresh cluster


def prepare_pool(job: Job) -> dict[str, Any]:
    if job.work == "detect":  # a script would import these at the top
        import relshard.spec
        import relshard.workers.detect.subjects  # noqa: F401
    if job.work == "videos":
        import av  # noqa: F401
    return {}


def run_pool(job: Job) -> dict[str, Any]:
    files = sorted(Path(job.src).iterdir())
    chunk = max(1, min(16, len(files) // (job.cpus * 8)))
    with Pool(job.cpus, initializer=init_worker, initargs=(job.work,)) as pool:
        written, rejected = write_shards(
            pool.imap_unordered(WORK[job.work], files, chunksize=chunk), Path(job.out))
    return {"written": written, "rejected": rejected}


def prepare_relshard(job: Job) -> dict[str, Any]:
    from relshard.pipelines import ray_cluster
    from relshard.pipelines.runner import run_pipeline  # noqa: F401
    from relshard.spec import parse_spec  # noqa: F401

    ray_cluster.connect(None, job.cpus)
    if not job.cold:
        warm_ray_data(job.cpus)
    return {"settle_s": wait_until_idle(os.getpid())}


def warm_ray_data(cpus: int) -> None:
    """A cluster in use has run Ray Data before: its detached per-cluster actors (the
    autoscaling coordinator, the stats actor) exist and worker processes have imported
    Ray Data. A trivial job (no relshard code) sets that state up; ``--cold`` skips it."""
    import ray

    ray.data.range(cpus * 2, override_num_blocks=cpus * 2).map_batches(
        lambda batch: batch).materialize()


def relshard_spec(job: Job) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": "e2e", "sources": [{"path": job.src}],
                            "output": {"path": job.out}, "runtime": {"progress": False}}
    if job.work in ("images", "detect"):
        spec["decode"] = {"max_side": IMAGE_SIDE, "jpeg_quality": QUALITY}
    if job.work != "detect":
        spec["detect"] = {"backend": "none"}
    return spec


def run_relshard(job: Job) -> dict[str, Any]:
    from relshard.pipelines.runner import run_pipeline
    from relshard.spec import parse_spec

    summary = run_pipeline(parse_spec(relshard_spec(job)), num_cpus=job.cpus)
    return {"written": summary.inputs_written, "rejected": summary.rejected_total}


def floor_rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The pool's work on a batch of paths, as WebDataset rows: ``__key__`` and one column
    per member suffix (``jpg``; ``f000.jpg``... for clips)."""
    cv2.setNumThreads(1)
    work = WORK["videos" if batch["work"][0] == "videos" else "images"]
    rows: list[dict[str, Any]] = []
    for path in batch["path"]:
        members = work(Path(path))
        if members:
            key = Path(path).stem
            rows.append({"__key__": key,
                         **{name[len(key) + 1:]: data for name, data in members}})
    columns = sorted({c for row in rows for c in row})
    return {c: np.array([row.get(c) for row in rows], dtype=object) for c in columns}


def run_raydata(job: Job) -> dict[str, Any]:
    """Plain Ray Data doing the pool's work, planned as relshard plans it (a block and a
    task per 1/(4P) of the inputs, writes with no CPU reserved and one writer per 4 CPUs,
    a quarter of the inputs a file) and written by Ray Data's own ``write_webdataset``:
    the floor Ray itself sets for this work on this machine, with none of relshard's
    records, isolation, index or commit protocol."""
    import ray

    files = sorted(str(p) for p in Path(job.src).iterdir())
    blocks = job.cpus * 4
    ds = ray.data.from_items([{"path": f, "work": job.work} for f in files],
                             override_num_blocks=blocks)
    rows = ds.map_batches(floor_rows, batch_size=-(-len(files) // blocks), num_cpus=1)
    rows.write_webdataset(job.out, encoder=None, min_rows_per_file=-(-len(files) // 4),
                        ray_remote_args={"num_cpus": 0}, concurrency=max(1, job.cpus // 4))
    written = 0
    for shard in Path(job.out).glob("*.tar"):
        with tarfile.open(shard) as tar:
            written += len({m.name.split(".", 1)[0] for m in tar.getmembers()})
    return {"written": written, "rejected": len(files) - written}


SIDES: dict[str, tuple[Callable[[Job], dict[str, Any]], Callable[[Job], dict[str, Any]]]] = {
    "pool": (prepare_pool, run_pool), "relshard": (prepare_relshard, run_relshard),
    "raydata": (prepare_relshard, run_raydata)}


def child_main(job: Job) -> None:
    os.sched_setaffinity(0, job.cores)  # before anything starts: every descendant inherits it
    started = time.perf_counter()
    prepare, run = SIDES[job.side]
    result = prepare(job)
    print(MARK, flush=True)
    t0 = time.perf_counter()
    result.update(run(job))
    end = time.perf_counter()
    result.update(seconds=end - t0, with_start=end - started,
                  cores=sorted(tree_affinity(os.getpid())))
    print(RESULT + json.dumps(result), flush=True)


# -- the parent: run a child under the sampler ------------------------------------------------

@dataclass
class Figure:
    label: str
    n: int
    unit: str
    seconds: float
    with_start: float
    settle_s: float | None
    cpu_s: float
    cpu_timed_s: float
    peak_pss_mb: float
    kinds: dict[str, tuple[int, float]]  # process kind -> (count, CPU s), sampled
    sampler_s: float  # CPU the sampling took in this process

    @property
    def rate(self) -> float:
        return self.n / self.seconds

    def line(self) -> str:
        text = (f"  {self.label:14s} {self.rate:8.2f} {self.unit}/s  wall {self.seconds:6.2f} s  "
                f"CPU {self.cpu_s:6.1f} s (timed {self.cpu_timed_s:5.1f})  "
                f"peak PSS {self.peak_pss_mb:6.0f} MB")
        if self.settle_s is not None:
            text += (f"  [incl. Ray start {self.with_start:.1f} s, "
                     f"settled {self.settle_s:.1f} s after connect]")
        return text

    def breakdown(self) -> str:
        kinds = ", ".join(f"{kind} x{count} {cpu:.1f} s"
                          for kind, (count, cpu) in self.kinds.items())
        return f"      {kinds} (sampling cost {self.sampler_s:.2f} s CPU here)"


def _follow(proc: subprocess.Popen[str], tree: TreeSampler) -> tuple[float, str]:
    """Read the child's stdout: the tree's CPU when the timed window began, the result."""
    at_mark, result = 0.0, ""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == MARK:
            at_mark = tree.mark()
        elif line.startswith(RESULT):
            result = line[len(RESULT):]
    return at_mark, result


def run_child(label: str, job: Job, n: int, unit: str) -> Figure:
    """Run ``job`` in a fresh child under the tree sampler; check its books; its figures."""
    cmd = [sys.executable, __file__, "--child", json.dumps(asdict(job))]
    before = children_cpu_s()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO)
        with TreeSampler(proc.pid) as tree:
            at_mark, line = _follow(proc, tree)
            proc.wait()
        killed = reap_adopted()
        if proc.returncode or not line:
            err.seek(0)
            raise SystemExit(f"{label} ({job.side} {job.work}) failed, exit {proc.returncode}:"
                             f"\n{err.read()[-6000:]}")
    cpu = max(tree.cpu_s, children_cpu_s() - before)
    res = json.loads(line)
    shutil.rmtree(job.out, ignore_errors=True)
    if res["written"] + res["rejected"] != n:
        raise SystemExit(f"{label}: {res['written']} written + {res['rejected']} rejected "
                         f"!= {n} inputs")
    if res["cores"] != list(job.cores):
        raise SystemExit(f"{label}: its process tree may run on cores {res['cores']}, "
                         f"pinned to {list(job.cores)}")
    if res["rejected"]:
        print(f"  ({label}: rejected {res['rejected']} of {n} valid inputs)")
    if killed:
        print(f"  ({label}: killed {len(killed)} leftover process(es) after it exited)")
    return Figure(label, n, unit, res["seconds"], res["with_start"], res.get("settle_s"), cpu,
                  cpu - at_mark, tree.peak_pss_mb, tree.by_process(), tree.overhead_s)


# -- comparisons ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ratio:
    name: str
    num: str  # side labels
    den: str
    target: float | None


@dataclass(frozen=True)
class Comparison:
    key: str
    title: str
    sides: tuple[tuple[str, Job], ...]  # label, job (pool sides first)
    ratios: tuple[Ratio, ...]
    unit: str


def comparisons(p: int, floor: bool = True) -> list[Comparison]:
    def both(work: str) -> tuple[tuple[str, Job], ...]:
        return (("pool", Job("pool", work, p)), ("relshard", Job("relshard", work, p)))

    def versus(target: float) -> tuple[Ratio, ...]:
        return (Ratio("relshard / pool", "relshard", "pool", target),)

    def three(work: str) -> tuple[tuple[str, Job], ...]:
        sides = both(work)
        return (*sides, ("Ray Data", Job("raydata", work, p))) if floor else sides

    def floored(target: float) -> tuple[Ratio, ...]:
        if not floor:
            return versus(target)
        return (*versus(target), Ratio("Ray Data / pool", "Ray Data", "pool", None),
                Ratio("relshard / Ray Data", "relshard", "Ray Data", None))

    scaling = tuple((f"{side} P={c}", Job(side, "images", c))
                    for side in ("pool", "relshard") for c in (1, 2))
    return [
        Comparison("images", f"images, detection off, P={p}", three("images"), floored(0.6),
                   "img"),
        Comparison("detect", f"images, default detector (centerface), P={p}", both("detect"),
                   versus(0.8), "img"),
        Comparison("scaling", "1 -> 2 CPUs, detection off", scaling,
                   (Ratio("relshard P=2 / P=1", "relshard P=2", "relshard P=1", 1.8),
                    Ratio("pool P=2 / P=1", "pool P=2", "pool P=1", None)), "img"),
        Comparison("videos", f"videos, 8 frames per clip, detection off, P={p}",
                   three("videos"), floored(0.8), "clip"),
    ]


@dataclass
class Bench:
    folders: dict[str, Path]  # work -> input folder
    counts: dict[str, int]  # work -> inputs
    cores: list[int]
    tmp: Path
    by_process: bool = False
    cold: bool = False
    figures: dict[str, list[dict[str, Figure]]] = field(default_factory=dict)

    def job(self, job: Job, run: int, label: str) -> Job:
        if job.cpus > len(self.cores):
            raise SystemExit(f"{job.cpus} CPUs wanted, this process may use {self.cores}")
        out = self.tmp / f"out-{run}-{label.replace(' ', '').replace('=', '')}"
        return Job(job.side, job.work, job.cpus, str(self.folders[job.work]), str(out),
                   tuple(self.cores[:job.cpus]), self.cold)

    def run(self, comp: Comparison, run: int) -> None:
        sides = comp.sides if run % 2 else comp.sides[::-1]
        print(f"{comp.title} (run {run}, {sides[0][0]} first)", flush=True)
        got: dict[str, Figure] = {}
        for label, job in sides:
            full = self.job(job, run, label)
            got[label] = run_child(label, full, self.counts[job.work], comp.unit)
            print(got[label].line(), flush=True)
            if self.by_process:
                print(got[label].breakdown(), flush=True)
        for r in comp.ratios:
            target = f"target >= {r.target}x" if r.target else "reference"
            print(f"  -> {r.name}: {got[r.num].rate / got[r.den].rate:.2f}x ({target})",
                  flush=True)
        self.figures.setdefault(comp.key, []).append(got)


def spread(values: list[float], fmt: str) -> str:
    return f"{min(values):{fmt}}–{max(values):{fmt}}"


def print_summary(bench: Bench, comps: list[Comparison], header: str) -> None:
    print(f"\n== summary: {header} ==")
    runs = max(len(v) for v in bench.figures.values())
    cols = "  ".join(f"run {i + 1:<3d}" for i in range(runs))
    print(f"{'comparison':46s} {'ratio':22s} {cols}  {'min–max':12s} {'target':9s} "
          f"peak PSS MB (min–max)")
    for comp in comps:
        per_run = bench.figures.get(comp.key)
        if not per_run:
            continue
        memory = "; ".join(f"{label} {spread([f[label].peak_pss_mb for f in per_run], '.0f')}"
                           for label, _ in comp.sides)
        for i, r in enumerate(comp.ratios):
            values = [f[r.num].rate / f[r.den].rate for f in per_run]
            shown = "  ".join(f"{v:5.2f}x " for v in values)
            target = f">= {r.target}x" if r.target else "-"
            print(f"{comp.title if i == 0 else '':46s} {r.name:22s} {shown}  "
                  f"{spread(values, '.2f') + 'x':12s} {target:9s} {memory if i == 0 else ''}")


# -- main -------------------------------------------------------------------------------------

def check_video_frames(clip: Path) -> None:
    """The baseline reads the frames relshard reads (indices, and pixels within rounding)."""
    from relshard.shards.item import InputRef
    from relshard.spec import DecodeSpec
    from relshard.workers.decode import decode_input

    ours = decode_input(InputRef("c0", str(clip), "auto"), DecodeSpec())[0]
    base = video_frames(clip)
    indices = [i for i, _ in base]
    if indices != list(ours.source.frame_indices or []):
        raise SystemExit(f"baseline frames {indices} != relshard's {ours.source.frame_indices}")
    diff = max(float(np.abs(cv2.cvtColor(b, cv2.COLOR_BGR2RGB).astype(np.int16) - o).mean())
               for (_, b), o in zip(base, ours.frames, strict=True))
    if diff > 3:
        raise SystemExit(f"baseline frames differ from relshard's: mean |diff| {diff:.1f}")
    print(f"video baseline check: frames {indices} as relshard ({ours.source.decoder}), "
          f"mean |pixel diff| <= {diff:.2f}")


def make_data(tmp: Path, parts: set[str], args: argparse.Namespace) -> Bench:
    folders: dict[str, Path] = {}
    counts: dict[str, int] = {}
    if parts & {"images", "detect", "scaling"}:
        make_images(tmp / "images", args.images, args.side)
        folders.update(images=tmp / "images", detect=tmp / "images")
        counts.update(images=args.images, detect=args.images)
    if "videos" in parts:
        make_videos(tmp / "videos", args.videos)
        check_video_frames(tmp / "videos" / "clip000.mp4")
        folders["videos"], counts["videos"] = tmp / "videos", args.videos
    for folder in sorted(set(folders.values())):
        print(f"warmed {folder.name}: {warm(folder) / 1e6:.1f} MB in "
              f"{len(list(folder.iterdir()))} files")
    return Bench(folders, counts, sorted(os.sched_getaffinity(0)), tmp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--side", type=int, default=640, help="long side of the generated photos")
    ap.add_argument("--videos", type=int, default=120,
                    help=f"clips ({UNIQUE_VIDEOS} distinct, the rest links to them)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=2, help="P: pool workers and relshard num_cpus")
    ap.add_argument("--only", default=",".join(PARTS), help="comma list of " + ",".join(PARTS))
    ap.add_argument("--by-process", action="store_true",
                    help="also print each tree's CPU seconds by process kind (sampled)")
    ap.add_argument("--cold", action="store_true",
                    help="time relshard's run as the first Ray Data job of a fresh cluster")
    ap.add_argument("--no-floor", action="store_true",
                    help="skip the plain Ray Data side of the images and videos comparisons")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        data = json.loads(args.child)
        child_main(Job(**{**data, "cores": tuple(data["cores"])}))
        return
    parts = set(args.only.split(","))
    if parts - set(PARTS):
        ap.error(f"--only takes {','.join(PARTS)}")
    become_subreaper()  # exact CPU of each child's whole tree (bench/proctree.py)
    # Bytecode for relshard, as an installed wheel has (pip compiles it): an editable
    # checkout has none, and with PYTHONDONTWRITEBYTECODE set (as on the dev machine)
    # every Ray worker and decode child would compile the sources again at start.
    compileall.compile_dir(REPO / "relshard", quiet=1)
    comps = [c for c in comparisons(args.cpus, floor=not args.no_floor) if c.key in parts]
    with tempfile.TemporaryDirectory(prefix="relshard-e2e-") as tmp:
        bench = make_data(Path(tmp), parts, args)
        bench.by_process = args.by_process
        bench.cold = args.cold
        for run in range(1, args.runs + 1):
            print(f"\n== run {run}/{args.runs} ==", flush=True)
            for comp in comps:
                bench.run(comp, run)
    print_summary(bench, comps, f"{args.runs} run(s), P={args.cpus}, {args.images} images "
                  f"({args.side} px), {args.videos} clips (1280x720, 10 s), cores {bench.cores}, "
                  f"{'cold' if args.cold else 'warm'} Ray")


if __name__ == "__main__":
    main()
