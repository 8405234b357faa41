"""Benchmark relshard's decoders against the raw libraries, and their memory on a long video.

Run from the repository root::

    python bench/decode.py            # ~1-2 minutes on 2 cores
    python bench/decode.py --keep /tmp/relshard-bench   # reuse generated media next time
    python bench/decode.py --videos-only                # just the video backends

1. Video throughput: ``decode_input`` with ``video_backend`` pyav and decord on 8
   clips of 720p, 10 s, vs raw ``decord.VideoReader(...).get_batch(...).asnumpy()``
   of the same frame indices at the same output size (decord's width/height), for 8
   sampled frames per clip and for every frame. Target: relshard >= 0.9x the
   same-size baseline; ``video_backend: auto`` tries the faster backend first
   (``relshard.workers.decode.video.AUTO_ORDER``).
2. Image throughput: ``decode_input`` on the bundled photos (upscaled to 3000 px
   JPEGs) vs Pillow open + draft + convert + ``cv2.resize`` of the same bytes.
3. Peak RSS of a child process that decodes a 10-minute 1080p video (5 fps, 3000
   frames) with the default spec (one clip of 8 frames) and with 10-second clips
   (60 clips of 8 frames: what the output itself holds). Target: < 1 GB.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from relshard.shards.item import InputRef  # noqa: E402
from relshard.spec import DecodeSpec  # noqa: E402
from relshard.workers.decode import decode_input  # noqa: E402

ROUNDS = 5


def _textured(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (height // 16, width // 16, 3), np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def make_video(path: Path, seconds: float, fps: float, size: tuple[int, int], seed: int) -> Path:
    """A panning textured video (real motion, so P-frames are not free)."""
    if path.exists():
        return path
    width, height = size
    base = _textured(width + 4 * int(seconds * fps), height, seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(int(seconds * fps)):
        writer.write(np.ascontiguousarray(base[:, 4 * i: 4 * i + width]))
    writer.release()
    return path


def _compare(variants: dict[str, Callable[[], None]],
             rounds: int = ROUNDS) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds per variant; variants alternate within each round so
    that load from other processes hits them alike. CPU time (this process, all threads)
    is the steadier figure on a shared machine."""
    wall: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            w, c = time.perf_counter(), time.process_time()
            variants[name]()
            wall[name].append(time.perf_counter() - w)
            cpu[name].append(time.process_time() - c)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in variants}


def _report(t: dict[str, tuple[float, float]], n: int, unit: str, ours: str, base: str) -> None:
    for name, (w, c) in t.items():
        print(f"  {name:38s} {n / w:6.1f} {unit}/s wall  {n / c:6.1f} {unit}/s CPU")
    print(f"  ratio {ours} / {base}: wall {t[base][0] / t[ours][0]:.2f}x, "
          f"CPU {t[base][1] / t[ours][1]:.2f}x")


def _video_variants(clips: list[Path], refs: list[InputRef],
                    per_clip: int) -> dict[str, Callable[[], None]]:
    import decord

    cfgs = {b: DecodeSpec(frames_per_clip=per_clip, max_side=768, video_threads=1,
                          video_backend=b) for b in ("pyav", "decord")}
    indices = {r.uri: decode_input(r, cfgs["decord"])[0].source.frame_indices
               for r in refs}  # warm up, and the frames the baseline reads

    def ours(backend: str) -> Callable[[], None]:
        def run() -> None:
            for r in refs:
                clip = decode_input(r, cfgs[backend])[0]
                assert clip.source.decoder == backend
        return run

    def raw() -> None:
        for p in clips:
            vr = decord.VideoReader(str(p), num_threads=1, width=768, height=432)
            vr.get_batch(indices[str(p)]).asnumpy()

    return {"relshard pyav": ours("pyav"), "relshard decord": ours("decord"),
            "decord get_batch at 768x432": raw}


def bench_videos(root: Path) -> None:
    """relshard with each video backend vs raw decord, sampled frames and every frame."""
    clips = [make_video(root / f"clip{i}.mp4", 10, 25, (1280, 720), i) for i in range(8)]
    refs = [InputRef(f"c{i}", str(p), "auto") for i, p in enumerate(clips)]
    base = "decord get_batch at 768x432"
    for label, per_clip in (("8 sampled frames", 8), ("every frame (250)", 250)):
        t = _compare(_video_variants(clips, refs, per_clip))
        print(f"video, {label}: {len(clips)} clips 1280x720 10 s mp4v, max_side 768, "
              f"1 thread (median of {ROUNDS} rounds)")
        for name, (w, c) in t.items():
            print(f"  {name:38s} {len(clips) / w:6.2f} clips/s wall  "
                  f"{len(clips) / c:6.2f} clips/s CPU")
        for name in ("relshard pyav", "relshard decord"):
            print(f"  ratio {name} / raw decord: wall {t[base][0] / t[name][0]:.2f}x, "
                  f"CPU {t[base][1] / t[name][1]:.2f}x")
        pyav, dec = t["relshard pyav"], t["relshard decord"]
        print(f"  pyav / decord backend: wall {dec[0] / pyav[0]:.2f}x, CPU {dec[1] / pyav[1]:.2f}x"
              "  (> 1: pyav faster)")
    print("  (target >= 0.9x the same-size raw decord; auto takes the faster backend of those "
          "that pass tests/unit/workers/decode/test_video_pyav.py)")


def bench_images(root: Path) -> None:
    import io

    paths = []
    for i, src in enumerate(sorted((REPO / "examples" / "assets").glob("*.jpg"))):
        path = root / f"big{i}.jpg"
        if not path.exists():
            Image.open(src).convert("RGB").resize((3000, 2250)).save(path, quality=90)
        paths.append(path)
    cfg = DecodeSpec(max_side=768)
    refs = [InputRef(f"i{i}", str(p), "auto") for i, p in enumerate(paths)] * 5

    def ours() -> None:
        for r in refs:
            decode_input(r, cfg)

    def baseline() -> None:
        for r in refs:
            with open(r.uri, "rb") as fh:
                im = Image.open(io.BytesIO(fh.read()))
            im.draft("RGB", (768, 576))
            arr = np.asarray(im.convert("RGB"))
            cv2.resize(arr, (768, 576), interpolation=cv2.INTER_AREA)

    ours()
    t = _compare({"relshard decode_input": ours,
                  "Pillow open+draft+convert+cv2.resize": baseline})
    print(f"image: {len(refs)} JPEGs 3000x2250 -> 768 px (median of {ROUNDS} rounds)")
    _report(t, len(refs), "img", "relshard decode_input", "Pillow open+draft+convert+cv2.resize")
    print("  (relshard also hashes the bytes and checks EXIF, size and format)")


_CHILD = """
import json, resource, sys, time
sys.path.insert(0, {repo!r})
from relshard.spec import DecodeSpec
from relshard.workers.decode import decode_input
from relshard.shards.item import InputRef
import decord, cv2, PIL.Image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
clips = decode_input(InputRef("long", {path!r}, "auto"), DecodeSpec(**json.loads({cfg!r})))
took = time.perf_counter() - t
frames = sum(len(c.frames) for c in clips)
held = sum(f.nbytes for c in clips for f in c.frames)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(before_kb=before, peak_kb=peak, clips=len(clips), frames=frames,
                      frame_bytes=held, seconds=took)))
"""


def bench_memory(root: Path) -> None:
    t = time.perf_counter()
    path = make_video(root / "long1080.mp4", 600, 5, (1920, 1080), 99)
    made = time.perf_counter() - t
    size_mb = path.stat().st_size / 1e6
    print(f"memory: 10 min 1920x1080 at 5 fps (3000 frames, {size_mb:.0f} MB, "
          f"made in {made:.0f} s)")
    for label, spec in (("one clip of 8 frames", {}),
                        ("10 s clips (60 x 8 frames)", {"clip_seconds": 10})):
        code = _CHILD.format(repo=str(REPO), path=str(path), cfg=json.dumps(spec))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {label:28s} peak RSS {r['peak_kb'] / 1024:6.0f} MB (after imports "
              f"{r['before_kb'] / 1024:.0f} MB; frames held {r['frame_bytes'] / 2**20:.0f} MB; "
              f"{r['clips']} clips in {r['seconds']:.1f} s)  target < 1024 MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="folder for the generated media (kept)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--videos-only", action="store_true", help="only the video throughput")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="relshard-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        bench_videos(root)
        if not args.videos_only:
            bench_images(root)
        if not (args.skip_memory or args.videos_only):
            bench_memory(root)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
