"""The OpenCV fast path for plain JPEGs: the same frames and records as the Pillow path."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from relshard.shards.item import InputRef
from relshard.workers.decode import DecodedClip, DecodeError
from relshard.workers.decode import image as image_module
from relshard.workers.decode.files import MediaFile
from tests.unit.workers.decode.media import cfg

ASSETS = Path(__file__).resolve().parents[4] / "examples" / "assets"
# Measured: 0.0 (bit-identical; Pillow's and OpenCV's wheels both bundle libjpeg-turbo).
# The margin allows for different libjpeg-turbo builds in the two wheels.
MAX_MEAN_ABS_DIFF = 1.0
IGNORE = cv2.IMREAD_IGNORE_ORIENTATION


def photo(width: int, height: int, seed: int = 0, gray: bool = False) -> np.ndarray:
    """A photo-like RGB (or L) image: smooth gradients, blotches, noise and sharp shapes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.dstack([127 + 100 * np.sin(xx / width * 3 + c) * np.cos(yy / height * 2 - c)
                     for c in range(3)])
    blotches = rng.normal(0, 30, (height // 16 + 1, width // 16 + 1, 3)).astype(np.float32)
    img += cv2.resize(blotches, (width, height), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 6, img.shape)
    out = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(8):
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        x, y, x2, y2 = (int(v) for v in rng.integers(0, [width, height] * 2))
        cv2.circle(out, (x, y), max(2, width // 8), colour, -1)
        cv2.rectangle(out, (x, y), (x2, y2), colour, 3)
    return cv2.cvtColor(out, cv2.COLOR_RGB2GRAY) if gray else out


def jpeg(arr: np.ndarray, progressive: bool = False, orientation: int | None = None,
         quality: int = 90) -> bytes:
    """JPEG bytes: written by OpenCV, or by Pillow when an EXIF orientation is wanted."""
    if orientation is None:
        params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)]
        bgr = arr if arr.ndim == 2 else cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode(".jpg", bgr, params)
        assert ok
        return buf.tobytes()
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    Image.fromarray(arr).save(out, "JPEG", quality=quality, exif=exif, progressive=progressive)
    return out.getvalue()


def decode(data: bytes, fast: bool = True, **kw: object) -> DecodedClip:
    ref = InputRef(input_key="k", uri="mem.jpg", modality="image")
    media = MediaFile(ref, io.BytesIO(data), len(data), None)
    if fast:
        return image_module.decode_image_bytes(media, data, cfg(**kw))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(image_module, "_fast_jpeg_frame", lambda im, data, c: None)
        return image_module.decode_image_bytes(media, data, cfg(**kw))


def outcome(data: bytes, fast: bool, **kw: object) -> DecodedClip | str:
    try:
        return decode(data, fast, **kw)
    except DecodeError as exc:
        return exc.reason


def assert_same_as_pillow(data: bytes, **kw: object) -> DecodedClip:
    ours, theirs = decode(data, **kw), decode(data, fast=False, **kw)
    assert ours.source.decoder == "opencv" and theirs.source.decoder == "pillow"
    a, b = ours.frames[0], theirs.frames[0]
    assert a.dtype == np.uint8 and a.shape == b.shape and a.ndim == 3 and a.shape[2] == 3
    assert a.flags.c_contiguous and a.flags.writeable
    assert np.abs(a.astype(int) - b).mean() < MAX_MEAN_ABS_DIFF
    assert ours.source.model_dump(exclude={"decoder"}) == \
        theirs.source.model_dump(exclude={"decoder"})
    assert ours.warnings == theirs.warnings
    return ours


@pytest.mark.parametrize("size,max_side", [((640, 480), 512), ((3000, 2000), 768),
                                           ((50, 40), 512)])
@pytest.mark.parametrize("gray", [False, True], ids=["rgb", "gray"])
@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
def test_fast_path_matches_the_pillow_path(size, max_side, gray, progressive):
    data = jpeg(photo(*size, gray=gray), progressive)
    assert Image.open(io.BytesIO(data)).mode == ("L" if gray else "RGB")
    clip = assert_same_as_pillow(data, max_side=max_side)
    scale = max_side / max(size) if max(size) > max_side else 1
    assert clip.frames[0].shape == (round(size[1] * scale), round(size[0] * scale), 3)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
def test_exif_orientation_is_applied_once_as_on_the_pillow_path(orientation, progressive):
    data = jpeg(photo(640, 480, seed=orientation), progressive, orientation)
    clip = assert_same_as_pillow(data, max_side=256)  # DCT scale 1/2 then a resize
    assert clip.source.exif_orientation == orientation
    upright = (480, 640) if orientation >= 5 else (640, 480)
    assert (clip.source.width, clip.source.height) == upright
    assert clip.frames[0].shape[:2] == ((256, 192) if orientation >= 5 else (192, 256))


@pytest.mark.parametrize("size,max_side,scale,flag", [
    ((640, 480), 512, 1, cv2.IMREAD_COLOR),
    ((3000, 2000), 768, 2, cv2.IMREAD_REDUCED_COLOR_2),
    ((4000, 3000), 1000, 4, cv2.IMREAD_REDUCED_COLOR_4),
    ((4000, 3000), 500, 8, cv2.IMREAD_REDUCED_COLOR_8),
    ((1023, 700), 512, 1, cv2.IMREAD_COLOR),  # 1023 // 512 == 1: no scaling, as in the draft
    ((1025, 333), 128, 4, cv2.IMREAD_REDUCED_COLOR_4),  # 333 // 42 == 7; sizes round up
])
def test_the_dct_scaling_is_the_drafts(monkeypatch, size, max_side, scale, flag):
    data = jpeg(np.full((size[1], size[0], 3), 128, np.uint8))
    flags: list[int] = []
    original = cv2.imdecode

    def spy(buf: np.ndarray, f: int) -> np.ndarray | None:
        flags.append(f)
        return original(buf, f)

    monkeypatch.setattr(image_module.cv2, "imdecode", spy)
    assert decode(data, max_side=max_side).source.decoder == "opencv"
    assert flags == [flag | IGNORE]
    im = Image.open(io.BytesIO(data))
    target = image_module.fit_size(*size, max_side)
    im.draft("RGB", target)
    assert im.size == (-(-size[0] // scale), -(-size[1] // scale))


def test_a_grayscale_jpeg_decodes_reduced_as_gray(monkeypatch):
    data = jpeg(photo(3000, 2000, gray=True))
    flags: list[int] = []
    original = cv2.imdecode
    monkeypatch.setattr(image_module.cv2, "imdecode",
                        lambda buf, f: flags.append(f) or original(buf, f))
    frame = decode(data, max_side=768).frames[0]
    assert flags == [cv2.IMREAD_REDUCED_GRAYSCALE_2 | IGNORE]
    assert np.array_equal(frame[..., 0], frame[..., 1]) and np.array_equal(frame[..., 0],
                                                                           frame[..., 2])


@pytest.mark.parametrize("keep", [0.5, 0.9, -2, -1])
def test_truncated_jpegs_are_rejected_as_before(keep):
    data = jpeg(photo(640, 480))
    cut = data[: int(len(data) * keep) if keep > 0 else len(data) + keep]
    ours, theirs = outcome(cut, fast=True), outcome(cut, fast=False)
    if keep > 0:
        assert ours == theirs == "truncated"
    elif isinstance(theirs, str):
        assert ours == theirs
    else:  # Pillow decodes a JPEG that lost only its EOI: so does the fast path's fallback
        assert isinstance(ours, DecodedClip) and ours.source.decoder == "pillow"
        assert np.array_equal(ours.frames[0], theirs.frames[0])


def damaged(seed: int) -> bytes:
    """A JPEG with random bytes (with or without 0xFF) pasted in, or a few bits flipped."""
    rng = np.random.default_rng(seed)
    data = bytearray(jpeg(photo(320, 240, seed=seed % 5), progressive=seed % 2 == 1))
    kind = seed % 3
    if kind == 2:
        for at in rng.integers(len(data) // 8, len(data) - 2, 3):
            data[at] ^= 1 << int(rng.integers(0, 8))
    else:
        garbage = rng.bytes(int(rng.integers(1, 300)))
        at = int(rng.integers(len(data) // 8, len(data) - 310))
        data[at:at + len(garbage)] = garbage.replace(b"\xff", b"\x12") if kind else garbage
    return bytes(data)


@pytest.mark.parametrize("seed", range(30))
def test_damaged_jpegs_give_what_the_pillow_path_gives(seed):
    data = damaged(seed)
    ours, theirs = outcome(data, fast=True), outcome(data, fast=False)
    if isinstance(theirs, str):  # stray markers: libjpeg errors in Pillow, kept on its path
        assert ours == theirs == "corrupt"
    else:  # damage within the entropy-coded data: a damaged frame, the same either way
        assert isinstance(ours, DecodedClip)
        assert np.abs(ours.frames[0].astype(int) - theirs.frames[0]).mean() < MAX_MEAN_ABS_DIFF


def test_a_cmyk_jpeg_keeps_the_pillow_path():
    buf = io.BytesIO()
    Image.fromarray(photo(200, 150)).convert("CMYK").save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    clip = decode(data)
    assert clip.source.decoder == "pillow"
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.array_equal(clip.frames[0], expected)


def test_an_mpo_keeps_the_pillow_path():
    buf = io.BytesIO()
    frames = [Image.fromarray(photo(120, 90, seed=s)) for s in range(2)]
    frames[0].save(buf, "MPO", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(buf.getvalue())).format == "MPO"
    assert decode(buf.getvalue()).source.decoder == "pillow"


def test_nul_padding_after_the_eoi_keeps_the_fast_path_other_trailers_do_not():
    data = jpeg(photo(320, 240))
    padded = assert_same_as_pillow(data + b"\x00" * 100)
    assert np.array_equal(padded.frames[0], decode(data).frames[0])
    trailer = decode(data + b"motion photo trailer")
    assert trailer.source.decoder == "pillow"
    assert np.array_equal(trailer.frames[0], padded.frames[0])


@pytest.mark.parametrize("failure", ["none", "raises", "wrong_size"])
def test_when_opencv_fails_pillow_decodes(monkeypatch, failure):
    data = jpeg(photo(320, 240))

    def broken(buf: np.ndarray, flags: int) -> np.ndarray | None:
        if failure == "raises":
            raise cv2.error("no")
        return None if failure == "none" else np.zeros((10, 10, 3), np.uint8)

    expected = decode(data, fast=False).frames[0]
    monkeypatch.setattr(image_module.cv2, "imdecode", broken)
    clip = decode(data)
    assert clip.source.decoder == "pillow" and np.array_equal(clip.frames[0], expected)


@pytest.mark.parametrize("name", ["astronaut.jpg", "chelsea.jpg", "coffee.jpg",
                                  "grace_hopper.jpg"])
def test_real_photos_take_the_fast_path(name):
    data = (ASSETS / name).read_bytes()
    assert_same_as_pillow(data, max_side=256)
    assert_same_as_pillow(data, max_side=4096)


def test_the_layout_check():
    clean, progressive = jpeg(photo(160, 120)), jpeg(photo(160, 120), progressive=True)
    layout = image_module._plain_jpeg_layout
    assert layout(clean) and layout(progressive) and layout(clean + b"\0" * 9)
    assert not layout(clean + b"\n") and not layout(clean + b"appended data")
    assert not layout(clean[:-2]) and not layout(clean[:-1]) and not layout(clean[:200])
    assert not layout(clean[:-2] + b"\xff\xd9" + clean[-2:])  # an EOI before the end
    sos = clean.index(b"\xff\xda")
    assert not layout(clean[:sos + 40] + b"\xff\xd8" + clean[sos + 40:])  # SOI in a scan
    assert not layout(clean[:sos + 40] + b"\xff\xc0\x00\x02" + clean[sos + 40:])  # SOF
    assert layout(clean[:sos] + b"\xff\xfe\x00\x05abc" + clean[sos:])  # a comment: fine
    ok, restarts = cv2.imencode(".jpg", photo(160, 120), [cv2.IMWRITE_JPEG_RST_INTERVAL, 2])
    assert ok and b"\xff\xd0" in restarts.tobytes() and layout(restarts.tobytes())
