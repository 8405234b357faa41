"""Image decoding: formats, colour modes, bit depths, orientation, size limits, bad inputs."""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import zlib
from pathlib import Path

import cv2
import fsspec
import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps
from PIL.JpegImagePlugin import JpegImageFile

from relshard.workers.decode import (
    DecodedClip,
    DecodeError,
    decode_input,
    formats,
    register_decoder,
)
from relshard.workers.decode import files as decode_files
from relshard.workers.decode import image as image_module
from tests.unit.workers.decode.media import cfg, ref

ASSETS = Path(__file__).resolve().parents[4] / "examples" / "assets"
QUADRANTS = {  # (row, col) quadrant -> RGB
    (0, 0): (220, 30, 30), (0, 1): (30, 200, 60), (1, 0): (40, 50, 210), (1, 1): (230, 220, 40),
}


def pattern(width: int = 64, height: int = 48) -> np.ndarray:
    """Four coloured quadrants: any flip or rotation changes where each colour lands."""
    img = np.zeros((height, width, 3), np.uint8)
    for (r, c), rgb in QUADRANTS.items():
        img[r * height // 2:(r + 1) * height // 2, c * width // 2:(c + 1) * width // 2] = rgb
    return img


def assert_quadrants(frame: np.ndarray, tol: int) -> None:
    h, w = frame.shape[:2]
    for (r, c), rgb in QUADRANTS.items():
        got = frame[h // 4 + r * h // 2, w // 4 + c * w // 2].astype(int)
        assert np.abs(got - rgb).max() <= tol, f"quadrant {(r, c)}: {got} != {rgb}"


def decode_one(path: Path | str, **kw: object) -> DecodedClip:
    clips = decode_input(ref(path), cfg(**kw))
    assert len(clips) == 1
    return clips[0]


def reason_of(path: Path | str, **kw: object) -> str:
    with pytest.raises(DecodeError) as err:
        decode_input(ref(path), cfg(**kw))
    return err.value.reason


def save(img: Image.Image | np.ndarray, path: Path, fmt: str | None = None, **kw: object) -> Path:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    img.save(path, fmt, **kw)
    return path


# -- formats and colour modes --

@pytest.mark.parametrize("fmt,ext,tol,opts", [
    ("JPEG", "jpg", 12, {"quality": 95}),
    ("PNG", "png", 0, {}),
    ("WEBP", "webp", 12, {"quality": 95}),
    ("BMP", "bmp", 0, {}),
    ("TIFF", "tif", 0, {}),
])
def test_common_formats_decode_to_rgb_with_their_source_record(tmp_path, fmt, ext, tol, opts):
    path = save(pattern(), tmp_path / f"p.{ext}", fmt, **opts)
    clip = decode_one(path)
    frame = clip.frames[0]
    assert frame.dtype == np.uint8 and frame.shape == (48, 64, 3)
    assert frame.flags.c_contiguous and frame.flags.writeable
    assert_quadrants(frame, tol)
    src = clip.source
    decoder = image_module.FAST_JPEG_DECODER if fmt == "JPEG" else "pillow"  # the fast path
    assert (src.modality, src.format, src.decoder) == ("image", fmt.lower(), decoder)
    assert src.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert src.size == path.stat().st_size and src.uri == str(path) and src.input_key == "k"
    assert (src.width, src.height, src.frame_width, src.frame_height) == (64, 48, 64, 48)
    assert src.exif_orientation is None and not src.truncated and clip.warnings == []


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (10, 1))
    clip = decode_one(save(gray, tmp_path / "g.png"))
    frame = clip.frames[0]
    assert frame.shape == (10, 64, 3)
    for ch in range(3):
        assert np.array_equal(frame[..., ch], gray)


def _rgba_half_transparent() -> np.ndarray:
    rgba = np.zeros((20, 40, 4), np.uint8)
    rgba[:, :20] = (200, 10, 10, 255)  # opaque red
    rgba[:, 20:30] = (0, 0, 255, 0)  # fully transparent blue: must become white
    rgba[:, 30:] = (0, 0, 0, 128)  # half-transparent black: mid gray
    return rgba


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparency_is_composited_on_white(tmp_path, mode):
    rgba = Image.fromarray(_rgba_half_transparent())
    if mode == "LA":
        img = rgba.convert("LA")
    elif mode == "P":  # palette with one fully transparent index
        arr = np.zeros((20, 40), np.uint8)
        arr[:, 20:] = 1
        img = Image.fromarray(arr, "P")
        img.putpalette([200, 10, 10, 0, 0, 255] + [0] * 762)
        img.info["transparency"] = 1
    else:
        img = rgba
    path = save(img, tmp_path / f"t_{mode}.png", transparency=1) if mode == "P" else \
        save(img, tmp_path / f"t_{mode}.png")
    frame = decode_one(path).frames[0]
    assert np.array_equal(frame[5, 25], [255, 255, 255])
    if mode == "RGBA":
        assert np.array_equal(frame[5, 5], [200, 10, 10])
        assert np.abs(frame[5, 35].astype(int) - 127).max() <= 1
    if mode == "LA":
        assert abs(int(frame[5, 35, 0]) - 127) <= 1 and frame[5, 35, 0] == frame[5, 35, 2]
    if mode == "P":
        assert np.array_equal(frame[5, 5], [200, 10, 10])


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = save(Image.fromarray(pattern()).convert("CMYK"), tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    assert_quadrants(decode_one(path).frames[0], 16)


# -- bit depth --

LEVELS_16 = np.array([0, 257 * 100, 32768, 65535], np.uint16)
LEVELS_8 = [0, 100, 128, 255]


def _columns16(height: int = 4) -> np.ndarray:
    return np.repeat(np.repeat(LEVELS_16[None, :], height, axis=0), 4, axis=1)


def test_16bit_gray_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "g16.png"
    cv2.imwrite(str(path), _columns16())
    assert Image.open(path).mode == "I;16"
    frame = decode_one(path).frames[0]
    assert [int(frame[0, 4 * i, 0]) for i in range(4)] == LEVELS_8


def test_16bit_big_endian_tiff_is_scaled(tmp_path):
    data = _columns16().astype(">u2")
    img = Image.frombytes("I;16B", (data.shape[1], data.shape[0]), data.tobytes())
    path = save(img, tmp_path / "g16b.tif")
    assert Image.open(path).mode == "I;16B"
    frame = decode_one(path).frames[0]
    assert [int(frame[0, 4 * i, 1]) for i in range(4)] == LEVELS_8


def test_16bit_rgb_png_is_scaled(tmp_path):
    bgr = np.zeros((8, 8, 3), np.uint16)
    bgr[..., 2], bgr[..., 1], bgr[..., 0] = 65535, 32768, 257 * 100  # R, G, B
    path = tmp_path / "rgb16.png"
    cv2.imwrite(str(path), bgr)
    frame = decode_one(path).frames[0]
    assert np.abs(frame[4, 4].astype(int) - [255, 128, 100]).max() <= 1


def test_float_rgb_tiff_that_pillow_cannot_read_goes_through_opencv(tmp_path):
    bgr = np.zeros((12, 16, 3), np.float32)
    bgr[..., 2], bgr[..., 1], bgr[..., 0] = 1.0, 0.5, 0.0
    path = tmp_path / "f32.tif"
    assert cv2.imwrite(str(path), bgr)
    clip = decode_one(path)
    assert clip.source.decoder == "opencv" and clip.source.format == "tiff"
    assert (clip.source.width, clip.source.height) == (16, 12)
    assert np.abs(clip.frames[0][6, 8].astype(int) - [255, 128, 0]).max() <= 1
    assert any("OpenCV" in w for w in clip.warnings)


# -- orientation and size --

@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_exif_transpose(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(pattern(), tmp_path / f"o{orientation}.png", exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    clip = decode_one(path)
    assert np.array_equal(clip.frames[0], expected)
    assert clip.frames[0].flags.c_contiguous
    assert clip.source.exif_orientation == orientation
    assert (clip.source.width, clip.source.height) == (expected.shape[1], expected.shape[0])


def test_rotated_jpeg_reports_its_upright_size(tmp_path):
    photo = Image.open(ASSETS / "chelsea.jpg")  # 451 x 300
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(photo.transpose(Image.Transpose.ROTATE_90), tmp_path / "r.jpg", exif=exif)
    clip = decode_one(path, max_side=226)
    assert (clip.source.width, clip.source.height) == (451, 300)
    assert clip.frames[0].shape == (150, 226, 3)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    small = cv2.resize(upright, (226, 150), interpolation=cv2.INTER_AREA)
    assert np.abs(clip.frames[0].astype(int) - small).mean() < 4


def test_big_jpeg_uses_draft_mode_and_matches_a_full_decode(tmp_path, monkeypatch):
    monkeypatch.setattr(image_module, "_fast_jpeg_frame", lambda im, data, c: None)  # Pillow path
    rng = np.random.default_rng(0)
    smooth = cv2.resize(rng.integers(0, 255, (30, 40, 3), np.uint8), (4000, 3000),
                        interpolation=cv2.INTER_CUBIC)
    path = save(smooth, tmp_path / "big.jpg", quality=90)
    calls = []
    original = JpegImageFile.draft

    def spy(self, mode, size):
        calls.append(size)
        return original(self, mode, size)

    monkeypatch.setattr(JpegImageFile, "draft", spy)
    clip = decode_one(path, max_side=500)
    assert calls == [(500, 375)]
    assert clip.frames[0].shape == (375, 500, 3)
    assert (clip.source.width, clip.source.height) == (4000, 3000)
    full = np.asarray(Image.open(path).convert("RGB"))
    reference = cv2.resize(full, (500, 375), interpolation=cv2.INTER_AREA)
    assert np.abs(clip.frames[0].astype(int) - reference).mean() < 3


def test_small_images_are_never_upscaled(tmp_path):
    clip = decode_one(save(pattern(30, 20), tmp_path / "s.png"), max_side=512)
    assert clip.frames[0].shape == (20, 30, 3)


def test_longest_side_is_max_side(tmp_path):
    clip = decode_one(save(pattern(640, 100), tmp_path / "wide.png"), max_side=64)
    assert clip.frames[0].shape == (10, 64, 3)
    assert_quadrants(clip.frames[0], 0)


# -- decompression bombs --

def png_header_only(path: Path, width: int, height: int) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def test_a_huge_declared_png_is_a_decompression_bomb(tmp_path):
    assert reason_of(png_header_only(tmp_path / "bomb.png", 100_000, 100_000)) == \
        "decompression_bomb"


def test_the_pixel_cap_is_checked_before_any_pixel_is_decoded(tmp_path, monkeypatch):
    path = save(pattern(1200, 1000), tmp_path / "big.png")

    def no_decoding(self):
        raise AssertionError("pixels were decoded before the size check")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(DecodeError) as err:
        decode_input(ref(path), cfg(max_image_pixels=1_000_000))
    assert err.value.reason == "decompression_bomb" and "1200x1000" in err.value.detail


def test_pillows_own_bomb_warning_counts_too(tmp_path, monkeypatch):
    monkeypatch.setattr(image_module, "_raise_pil_limit", lambda cap: None)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64x48 > 1000: Pillow warns
    assert reason_of(save(pattern(), tmp_path / "p.png")) == "decompression_bomb"


def test_the_spec_cap_overrides_a_lower_pillow_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert decode_one(save(pattern(), tmp_path / "p.png")).frames[0].shape == (48, 64, 3)


# -- bad inputs --

def test_empty_file(tmp_path):
    (tmp_path / "z.jpg").write_bytes(b"")
    assert reason_of(tmp_path / "z.jpg") == "empty_file"


def test_file_too_large(tmp_path):
    path = save(pattern(), tmp_path / "p.png")
    assert reason_of(path, max_file_bytes=100) == "file_too_large"


@pytest.mark.parametrize("what", ["missing", "directory", "permission"])
def test_unreadable(tmp_path, monkeypatch, what):
    path = tmp_path / "x.jpg"
    if what == "directory":
        path.mkdir()
    if what == "permission":  # root reads anything: simulate the OS refusing
        save(pattern(), path, "JPEG")

        def refuse(p):
            raise PermissionError(13, "Permission denied", p)

        monkeypatch.setattr(decode_files, "_open_local", refuse)
    assert reason_of(path) == "unreadable"


def test_unsupported_extension_and_unknown_content(tmp_path):
    (tmp_path / "notes.txt").write_text("not media")
    (tmp_path / "README").write_text("no extension, not media")
    assert reason_of(tmp_path / "notes.txt") == "unsupported_format"
    assert reason_of(tmp_path / "README") == "unsupported_format"


@pytest.mark.parametrize("ext", ["jpg", "png", "webp", "gif", "tiff"])
def test_random_bytes_behind_an_image_extension_are_corrupt(tmp_path, ext):
    path = tmp_path / f"noise.{ext}"
    path.write_bytes(np.random.default_rng(1).bytes(5000))
    assert reason_of(path) == "corrupt"


@pytest.mark.parametrize("fmt,ext", [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"),
                                     ("GIF", "gif"), ("BMP", "bmp")])
def test_truncated_images(tmp_path, fmt, ext):
    noisy = np.random.default_rng(2).integers(0, 255, (120, 160, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, fmt)
    data = buf.getvalue()
    path = tmp_path / f"t.{ext}"
    path.write_bytes(data[: len(data) // 2])
    assert reason_of(path) == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_the_bundled_truncated_jpeg(tmp_path):
    whole = (ASSETS / "coffee.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(whole[: len(whole) // 3])
    assert reason_of(tmp_path / "t.jpg") == "truncated"


def test_a_png_with_garbled_pixel_data_is_corrupt(tmp_path):
    data = bytearray(save(pattern(), tmp_path / "ok.png").read_bytes())
    at = data.index(b"IDAT") + 8
    data[at:at + 16] = b"\xff" * 16
    (tmp_path / "bad.png").write_bytes(bytes(data))
    assert reason_of(tmp_path / "bad.png") == "corrupt"


def test_content_decides_over_extension(tmp_path):
    png = save(pattern(), tmp_path / "p.png").read_bytes()
    (tmp_path / "really_png.jpg").write_bytes(png)
    clip = decode_one(tmp_path / "really_png.jpg")
    assert clip.source.format == "png"
    assert any("content is png" in w for w in clip.warnings)
    (tmp_path / "no_extension").write_bytes(png)
    assert_quadrants(decode_one(tmp_path / "no_extension").frames[0], 0)


def test_decode_error_pickles():
    err = pickle.loads(pickle.dumps(DecodeError("truncated", "ends early")))
    assert (err.reason, err.detail) == ("truncated", "ends early")
    assert str(err) == "truncated: ends early"


# -- animations --

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255),
           (255, 0, 255), (128, 0, 0), (0, 128, 0), (0, 0, 128), (128, 128, 0)]
DURATIONS = [50 * (i + 1) for i in range(10)]


def animation(path: Path, fmt: str, durations: list[int] = DURATIONS) -> Path:
    frames = [Image.new("RGB", (64, 48), c) for c in COLOURS]
    extra = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:], duration=durations,
                   loop=0, **extra)
    return path


@pytest.mark.parametrize("fmt,ext", [("GIF", "gif"), ("WEBP", "webp"), ("PNG", "png")])
def test_animations_are_short_clips(tmp_path, fmt, ext):
    clip = decode_one(animation(tmp_path / f"a.{ext}", fmt), frames_per_clip=4)
    src = clip.source
    assert (src.modality, src.format, src.clip_index) == ("video", fmt.lower(), 0)
    assert src.frame_indices == [1, 3, 6, 8]
    starts = np.concatenate([[0], np.cumsum(DURATIONS)]) / 1000
    assert src.frame_times == pytest.approx([starts[i] for i in [1, 3, 6, 8]])
    assert src.duration == pytest.approx(2.75) and src.time_span == pytest.approx([0, 2.75])
    assert src.fps == pytest.approx(10 / 2.75)
    assert (src.frame_count, src.frame_count_readable, src.truncated) == (10, 10, False)
    assert [tuple(int(v) for v in f[24, 32]) for f in clip.frames] == [COLOURS[i] for i in
                                                                      [1, 3, 6, 8]]


def test_a_frame_without_duration_lasts_100ms(tmp_path):
    clip = decode_one(animation(tmp_path / "a.gif", "GIF", [0] * 10), frames_per_clip=2)
    assert clip.source.duration == pytest.approx(1.0)


def test_a_truncated_animation_is_resampled_within_its_readable_frames(tmp_path):
    data = animation(tmp_path / "a.png", "PNG").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) * 3 // 4])
    clip = decode_one(tmp_path / "t.png", frames_per_clip=4)
    src = clip.source
    assert src.truncated and src.frame_count == 10 and 0 < src.frame_count_readable < 10
    assert max(src.frame_indices) < src.frame_count_readable and len(clip.frames) == 4
    assert any("animation frames decode" in w for w in clip.warnings)


def test_a_multipage_tiff_is_its_first_page(tmp_path):
    path = tmp_path / "pages.tif"
    pages = [Image.new("RGB", (20, 10), c) for c in COLOURS[:3]]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    clip = decode_one(path)
    assert clip.source.modality == "image" and tuple(clip.frames[0][5, 5]) == COLOURS[0]


# -- where inputs come from, and plugins --

def test_remote_images_are_read_through_fsspec():
    data = io.BytesIO()
    Image.fromarray(pattern()).save(data, "PNG")
    fs = fsspec.filesystem("memory")
    fs.pipe("/decode-tests/p.png", data.getvalue())
    try:
        clip = decode_one("memory://decode-tests/p.png")
    finally:
        fs.rm("/decode-tests/p.png")
    assert clip.source.sha256 == hashlib.sha256(data.getvalue()).hexdigest()
    assert_quadrants(clip.frames[0], 0)


def test_a_missing_remote_input_is_unreadable():
    assert reason_of("memory://decode-tests/missing.png") == "unreadable"


@pytest.mark.parametrize("name", ["astronaut.jpg", "chelsea.jpg", "coffee.jpg",
                                  "grace_hopper.jpg"])
def test_real_photos(name):
    clip = decode_one(ASSETS / name, max_side=256)
    im = Image.open(ASSETS / name)
    assert (clip.source.width, clip.source.height) == im.size
    assert max(clip.frames[0].shape[:2]) == 256 and clip.frames[0].std() > 20


@pytest.fixture()
def registry(monkeypatch):
    monkeypatch.setattr(formats, "_BY_NAME", dict(formats._BY_NAME))
    monkeypatch.setattr(formats, "_BY_EXTENSION", dict(formats._BY_EXTENSION))


def test_plugins_register_decoders_by_extension(tmp_path, registry):
    seen = []

    def fake(r, c):
        seen.append((r.uri, c.max_side))
        return []

    register_decoder("fake", [".FAKE"], fake, modality="events")
    (tmp_path / "a.fake").write_bytes(b"x")
    assert decode_input(ref(tmp_path / "a.fake"), cfg(max_side=99)) == []
    assert seen == [(str(tmp_path / "a.fake"), 99)]
    (tmp_path / "empty.fake").write_bytes(b"")
    assert reason_of(tmp_path / "empty.fake") == "empty_file" and len(seen) == 1
    with pytest.raises(DecodeError, match="modality") as err:
        decode_input(ref(tmp_path / "a.fake", modality="image"), cfg())
    assert err.value.reason == "unsupported_format"


def test_a_source_that_declares_video_refuses_images(tmp_path):
    path = save(pattern(), tmp_path / "p.jpg")
    with pytest.raises(DecodeError) as err:
        decode_input(ref(path, modality="video"), cfg())
    assert err.value.reason == "unsupported_format"
    assert decode_input(ref(path, modality="image"), cfg())[0].source.modality == "image"
