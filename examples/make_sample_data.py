"""Build the bundled sample inputs in examples/data from the photos in examples/assets.

Run from the repository root: ``python examples/make_sample_data.py``. It is
deterministic; the quick start ships its output, and this script documents how
it was made (see examples/data/LICENSE.md for the photos' licences).

It writes real photos in the shapes real data comes in (EXIF-rotated,
grayscale, RGBA, a two-person scene), short videos panning over the scene in
MPEG-4 and VP9, and two broken files that the run must reject with a reason.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent
ASSETS = ROOT / "assets"
DATA = ROOT / "data"


def _scene() -> np.ndarray:
    """Two people side by side on one canvas (RGB)."""
    left = np.asarray(Image.open(ASSETS / "grace_hopper.jpg").convert("RGB").resize((384, 450)))
    right = np.asarray(Image.open(ASSETS / "astronaut.jpg").convert("RGB").resize((384, 384)))
    canvas = np.full((450, 800, 3), 235, np.uint8)
    canvas[:, 0:384] = left
    canvas[66:450, 416:800] = right
    return canvas


def _video(path: Path, fourcc: str, scene: np.ndarray, seconds: float = 3.0, fps: int = 10) -> None:
    height, width = 240, 360
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {fourcc} here")
    frames = int(seconds * fps)
    scale = height / scene.shape[0]
    big = cv2.resize(scene, (int(scene.shape[1] * scale), height), interpolation=cv2.INTER_AREA)
    span = big.shape[1] - width
    for i in range(frames):
        x = int(span * i / max(frames - 1, 1))
        writer.write(cv2.cvtColor(big[:, x:x + width], cv2.COLOR_RGB2BGR))
    writer.release()


def main() -> None:
    images, videos, broken = DATA / "images", DATA / "videos", DATA / "broken"
    for folder in (images, videos, broken):
        folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ASSETS / "grace_hopper.jpg", images / "grace_hopper.jpg")
    shutil.copy(ASSETS / "chelsea.jpg", images / "chelsea_cat.jpg")
    scene = _scene()
    Image.fromarray(scene).save(images / "two_people.jpg", quality=88)
    # Stored sideways with EXIF orientation 6: viewers (and relshard) rotate it upright.
    astro = Image.open(ASSETS / "astronaut.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    astro.transpose(Image.Transpose.ROTATE_90).save(images / "astronaut_exif_rotated.jpg",
                                                    quality=88, exif=exif)
    Image.open(ASSETS / "grace_hopper.jpg").convert("L").save(images / "grace_gray.png")
    rgba = Image.open(ASSETS / "astronaut.jpg").convert("RGBA").resize((256, 256))
    alpha = np.zeros((256, 256), np.uint8)
    cv2.circle(alpha, (128, 128), 120, 255, -1)
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(images / "astronaut_rgba.png")
    _video(videos / "two_people_pan.mp4", "mp4v", scene)
    _video(videos / "two_people_pan_vp9.webm", "VP90", scene, seconds=2.0)
    whole = (ASSETS / "coffee.jpg").read_bytes()
    (broken / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    (broken / "empty.mp4").write_bytes(b"")
    print(f"wrote sample data under {DATA}")


if __name__ == "__main__":
    main()
