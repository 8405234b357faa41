"""Video decoding: sampling, clips, reduced-size decoding, fallbacks, broken files.

Tests that take ``backend`` run with each of ``decode.video_backend`` pyav and decord.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import cv2
import decord
import fsspec
import numpy as np
import pytest

from relshard.workers.decode import DecodeError, decode_input
from relshard.workers.decode import video as video_module
from relshard.workers.decode.base import sample_indices
from relshard.workers.decode.video import ReaderFailed, plan_clips
from tests.unit.workers.decode.media import (
    cfg,
    faststart,
    frame_number,
    ref,
    set_rotation,
    write_video,
)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Small videos shared by the module (writing them is the slow part)."""
    root = tmp_path_factory.mktemp("videos")
    write_video(root / "v.mp4")  # 100 frames, 10 fps, 320x240
    write_video(root / "v.avi", fourcc="MJPG")
    write_video(root / "v.webm", n=40, fourcc="VP90")
    write_video(root / "wide.mp4", n=20, size=(640, 360))
    return root


@pytest.fixture(params=["pyav", "decord"])
def backend(request) -> str:
    return request.param


def frames_shown(clip) -> list[int]:
    return [frame_number(f) for f in clip.frames]


def decode(path: Path | str, **kw: object):
    return decode_input(ref(path), cfg(**kw))


def reason_of(path: Path | str, **kw: object) -> str:
    with pytest.raises(DecodeError) as err:
        decode(path, **kw)
    return err.value.reason


# -- sampling plans --

def test_sample_indices_are_segment_centres_without_repeats():
    assert sample_indices(0, 100, 4) == [12, 37, 62, 87]
    assert sample_indices(10, 20, 5) == [11, 13, 15, 17, 19]
    assert sample_indices(0, 3, 8) == [0, 1, 2]
    assert sample_indices(5, 5, 8) == []


def test_plan_clips_cuts_clips_and_drops_a_short_tail():
    plans = plan_clips(105, 10.0, cfg(clip_seconds=2, frames_per_clip=2))
    assert [(p.index, p.start, p.end) for p in plans] == [(i, 20 * i, 20 * i + 20) for i in
                                                          range(5)]
    plans = plan_clips(112, 10.0, cfg(clip_seconds=2, frames_per_clip=2))
    assert (plans[-1].index, plans[-1].start, plans[-1].end) == (5, 100, 112)  # >= half: kept
    assert plans[-1].indices == [103, 109]


def test_plan_clips_spreads_the_allowed_clips_over_the_video():
    plans = plan_clips(1000, 10.0, cfg(clip_seconds=1, max_clips_per_video=4))
    assert [p.index for p in plans] == [0, 33, 66, 99]


def test_plan_without_fps_is_one_clip():
    assert len(plan_clips(50, None, cfg(clip_seconds=1))) == 1


# -- decoding --

def test_one_clip_of_uniformly_sampled_frames(backend, videos):
    (clip,) = decode(videos / "v.mp4", frames_per_clip=4, video_backend=backend)
    src = clip.source
    assert src.frame_indices == [12, 37, 62, 87]
    assert frames_shown(clip) == [12, 37, 62, 87]
    assert src.frame_times == pytest.approx([1.2, 3.7, 6.2, 8.7])
    assert (src.modality, src.format, src.decoder, src.clip_index) == ("video", "mp4", backend, 0)
    assert (src.width, src.height, src.frame_width, src.frame_height) == (320, 240, 320, 240)
    assert (src.fps, src.duration, src.frame_count, src.frame_count_readable) == (10, 10, 100, 100)
    assert src.time_span == pytest.approx([0, 10]) and not src.truncated
    path = videos / "v.mp4"
    assert src.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert src.size == path.stat().st_size
    for f in clip.frames:
        assert f.dtype == np.uint8 and f.shape == (240, 320, 3)
        assert f.flags.c_contiguous and f.flags.writeable


def test_clips_of_clip_seconds_with_their_spans(backend, videos):
    clips = decode(videos / "v.mp4", clip_seconds=2.5, frames_per_clip=3, video_backend=backend)
    assert [c.source.clip_index for c in clips] == [0, 1, 2, 3]
    for i, clip in enumerate(clips):
        assert clip.source.time_span == pytest.approx([2.5 * i, 2.5 * i + 2.5])
        lo, hi = 25 * i, 25 * i + 25
        assert all(lo <= j < hi for j in clip.source.frame_indices)
        assert frames_shown(clip) == clip.source.frame_indices


def test_max_clips_per_video_keeps_clips_spread_out(backend, videos):
    clips = decode(videos / "v.mp4", clip_seconds=1, max_clips_per_video=3, frames_per_clip=2,
                   video_backend=backend)
    assert [c.source.clip_index for c in clips] == [0, 4, 9]
    assert frames_shown(clips[2]) == clips[2].source.frame_indices == [92, 97]


def test_only_the_sampled_frames_are_decoded(videos, monkeypatch):
    asked = []
    original = decord.VideoReader.get_batch

    def spy(self, indices):
        asked.append(list(indices))
        return original(self, indices)

    monkeypatch.setattr(decord.VideoReader, "get_batch", spy)
    decode(videos / "v.mp4", clip_seconds=5, frames_per_clip=4, video_backend="decord")
    assert asked == [[6, 18, 31, 43], [56, 68, 81, 93]]


def test_large_videos_decode_at_the_reduced_size(videos, monkeypatch):
    sizes = []
    original = decord.VideoReader.__init__

    def spy(self, uri, *args, **kw):
        sizes.append((kw.get("width", -1), kw.get("height", -1), kw.get("num_threads")))
        original(self, uri, *args, **kw)

    monkeypatch.setattr(decord.VideoReader, "__init__", spy)
    (clip,) = decode(videos / "wide.mp4", max_side=160, frames_per_clip=2, video_threads=2,
                     video_backend="decord")
    assert sizes == [(160, 90, 2)]
    assert clip.frames[0].shape == (90, 160, 3)
    assert (clip.source.width, clip.source.height) == (640, 360)
    assert (clip.source.frame_width, clip.source.frame_height) == (160, 90)


@pytest.mark.parametrize("threads", [0, 1])
def test_vp9_webm(backend, videos, threads):
    (clip,) = decode(videos / "v.webm", frames_per_clip=4, video_threads=threads,
                     video_backend=backend)
    assert clip.source.format == "webm" and clip.source.decoder == backend
    assert frames_shown(clip) == clip.source.frame_indices == [5, 15, 25, 35]


def test_rotated_video_is_upright(backend, tmp_path):
    def mark(i, frame):
        frame[:40, :80] = (0, 0, 255)  # a red block top-left (BGR)

    data = write_video(tmp_path / "r.mp4", n=10, draw=mark).read_bytes()
    (tmp_path / "r90.mp4").write_bytes(set_rotation(data, 90))
    (clip,) = decode(tmp_path / "r90.mp4", frames_per_clip=1, max_side=160,
                     video_backend=backend)
    assert clip.source.decoder == backend
    assert (clip.source.width, clip.source.height) == (240, 320)
    frame = clip.frames[0]
    assert frame.shape == (160, 120, 3)
    red = np.argwhere((frame[..., 0] > 200) & (frame[..., 2] < 80))
    # 80x40 at the top left of 320x240, turned 90 degrees clockwise, at half size:
    # 20 wide and 40 high at the top right of 120x160
    assert red[:, 0].min() == 0 and 38 <= red[:, 0].max() <= 41
    assert 98 <= red[:, 1].min() <= 101 and red[:, 1].max() == 119


# -- fallbacks and broken files --

def test_opencv_reads_what_decord_cannot_open(videos, monkeypatch):
    def refuse(*args, **kwargs):
        raise ReaderFailed("decord: refused for the test")

    monkeypatch.setattr(video_module, "DecordReader", refuse)
    monkeypatch.setattr(video_module, "PyAVReader", refuse)
    (clip,) = decode(videos / "v.mp4", frames_per_clip=4, max_side=160)
    src = clip.source
    assert src.decoder == "opencv" and src.frame_indices == [12, 37, 62, 87]
    assert frames_shown(clip) == [12, 37, 62, 87]
    assert src.frame_times == pytest.approx([1.2, 3.7, 6.2, 8.7])
    assert clip.frames[0].shape == (120, 160, 3) and src.frame_count_readable == 100
    assert any("refused for the test" in w for w in clip.warnings)


def test_a_truncated_avi_is_sampled_within_its_readable_frames(backend, videos, tmp_path):
    data = (videos / "v.avi").read_bytes()
    (tmp_path / "t.avi").write_bytes(data[: len(data) // 2])
    (clip,) = decode(tmp_path / "t.avi", frames_per_clip=4, video_backend=backend)
    src = clip.source
    assert src.truncated and src.frame_count == 100 and 30 < src.frame_count_readable < 70
    assert max(src.frame_indices) < src.frame_count_readable
    assert frames_shown(clip) == src.frame_indices
    assert any("readable" in w for w in clip.warnings)


@pytest.mark.parametrize(("backend", "reader"), [("pyav", "pyav"), ("decord", "opencv")])
def test_a_truncated_web_mp4_is_sampled_within_its_readable_frames(videos, tmp_path, backend,
                                                                    reader):
    web = faststart((videos / "v.mp4").read_bytes())
    (tmp_path / "web.mp4").write_bytes(web)
    (full,) = decode(tmp_path / "web.mp4", frames_per_clip=4, video_backend=backend)
    assert full.source.decoder == backend and frames_shown(full) == [12, 37, 62, 87]
    (tmp_path / "cut.mp4").write_bytes(web[: len(web) // 2])
    (clip,) = decode(tmp_path / "cut.mp4", frames_per_clip=4, video_backend=backend)
    src = clip.source
    assert src.decoder == reader and src.truncated and src.frame_count == 100
    assert 30 < src.frame_count_readable < 70
    assert max(src.frame_indices) < src.frame_count_readable
    assert frames_shown(clip) == src.frame_indices


def test_an_mp4_cut_before_its_index_is_truncated(backend, videos, tmp_path):
    data = (videos / "v.mp4").read_bytes()  # OpenCV writes the moov box last
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    assert reason_of(tmp_path / "cut.mp4", video_backend=backend) == "truncated"


def test_bad_video_files(backend, tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(3).bytes(20000))
    (tmp_path / "garbage.webm").write_bytes(b"\x00\x01garbage" * 500)
    for name, reason in [("empty.mp4", "empty_file"), ("noise.mp4", "corrupt"),
                         ("garbage.webm", "corrupt"), ("missing.mp4", "unreadable")]:
        assert reason_of(tmp_path / name, video_backend=backend) == reason


def test_file_too_large_is_checked_before_decoding(videos):
    assert reason_of(videos / "v.mp4", max_file_bytes=1000) == "file_too_large"


# -- keep_clip and remote inputs --

def test_keep_clip_stores_a_single_clip_mp4(videos, backend):
    (clip,) = decode(videos / "v.mp4", keep_clip=True, frames_per_clip=2, video_backend=backend)
    assert clip.members == {"mp4": (videos / "v.mp4").read_bytes()}


def test_decord_keep_clip_skips_other_containers_and_multi_clip_videos(videos):
    (clip,) = decode(videos / "v.webm", keep_clip=True, frames_per_clip=2, video_backend="decord")
    assert clip.members == {} and any("only MP4" in w for w in clip.warnings)
    clips = decode(videos / "v.mp4", keep_clip=True, clip_seconds=5, frames_per_clip=2,
                   video_backend="decord")
    assert len(clips) == 2 and all(c.members == {} for c in clips)
    assert any("2 clips" in w for w in clips[0].warnings)


def test_remote_videos_are_copied_to_a_temp_file_and_removed(videos, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    data = (videos / "v.mp4").read_bytes()
    fs = fsspec.filesystem("memory")
    fs.pipe("/decode-tests/v.mp4", data)
    try:
        (clip,) = decode("memory://decode-tests/v.mp4", frames_per_clip=4)
    finally:
        fs.rm("/decode-tests/v.mp4")
    assert clip.source.sha256 == hashlib.sha256(data).hexdigest()
    assert frames_shown(clip) == [12, 37, 62, 87]
    assert clip.source.uri == "memory://decode-tests/v.mp4"
    assert list(tmp_path.iterdir()) == []


def test_mpeg4_in_a_path_with_a_colon(backend, videos, tmp_path):
    path = tmp_path / "a:b.mp4"
    path.write_bytes((videos / "v.mp4").read_bytes())
    (clip,) = decode(path, frames_per_clip=2, video_backend=backend)
    assert clip.source.decoder == backend and clip.source.frame_count == 100
    assert frames_shown(clip) == [25, 75]


def test_decoded_frames_are_rgb(backend, tmp_path):
    def paint(i, frame):
        frame[:] = (255, 0, 0)  # pure blue in BGR

    write_video(tmp_path / "blue.mp4", n=5, draw=paint)
    (clip,) = decode(tmp_path / "blue.mp4", frames_per_clip=1, video_backend=backend)
    assert clip.source.decoder == backend
    r, g, b = clip.frames[0][120, 160].astype(int)
    assert b > 200 and r < 40 and g < 40
    cap = cv2.VideoCapture(str(tmp_path / "blue.mp4"))
    assert cap.read()[1][120, 160, 0] > 200  # OpenCV itself gives BGR
