"""The PyAV reader and the backend choice, on hostile inputs built at test time.

The hostile matrix runs both ``video_backend`` values; ``auto`` takes the faster one
of those that pass it (``bench/decode.py``).
"""

from __future__ import annotations

import io
import struct
import time
from pathlib import Path

import av
import numpy as np
import pytest

from relshard.workers.decode import DecodeError, decode_input
from relshard.workers.decode import video as video_module
from relshard.workers.decode.video import AUTO_ORDER, ReaderFailed, ffmpeg_path, probe_video
from relshard.workers.decode.video_pyav import PyAVReader, _rotate
from tests.unit.workers.decode.media import (
    cfg,
    faststart,
    frame_number,
    ref,
    write_av,
    write_video,
)

# name -> (writer keyword arguments, frames)
HOSTILE = {
    "h264_bframes.mp4": ({"options": {"bf": "2"}}, 100),
    "mpeg2.mpg": ({"codec": "mpeg2video", "options": {"bf": "2"}}, 100),
    "mpeg2.ts": ({"codec": "mpeg2video"}, 100),
    "h264_audio.mkv": ({"audio": True, "options": {"bf": "2"}}, 100),
    "h264.mov": ({"gop": 30}, 100),
    "sorenson.flv": ({"codec": "flv"}, 100),
    "mjpeg.avi": ({"codec": "mjpeg"}, 100),
    "vp9.webm": ({}, 40),  # written by OpenCV
}
KNOWN_BAD = {  # decord 0.6.0 returns the wrong frames (and a negative time) for MPEG-2 PS
    ("decord", "mpeg2.mpg"): "decord misnumbers MPEG-2 program-stream frames",
    ("decord", "mpeg2.ts"): "decord returns the frame after the wanted one in MPEG-2 TS",
}
KNOWN_BAD_CUT = {
    ("decord", "h264_bframes.mp4"): "decord cannot open a cut H.264 MP4; OpenCV then returns "
                                    "frames past the cut (repeats) and does not see it is cut",
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    for name, (kw, _) in HOSTILE.items():
        if name == "vp9.webm":  # OpenCV's libvpx: decord's, loaded first, breaks PyAV's encoder
            write_video(root / name, n=40, fourcc="VP90")
            continue
        write_av(root / name, **kw)
    write_av(root / "long_gop.mp4", n=120, gop=30)
    write_video(root / "v.mp4")
    return root


def decode(path: Path | str, **kw: object):
    return decode_input(ref(path), cfg(**kw))


def shown(clip) -> list[int]:
    return [frame_number(f) for f in clip.frames]


@pytest.mark.parametrize("backend", ["pyav", "decord"])
@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_containers_give_the_right_frames(hostile, name, backend, request):
    if (backend, name) in KNOWN_BAD:
        request.applymarker(pytest.mark.xfail(reason=KNOWN_BAD[backend, name], strict=True))
    n = HOSTILE[name][1]
    (clip,) = decode(hostile / name, frames_per_clip=5, video_backend=backend)
    src = clip.source
    assert src.decoder == backend, clip.warnings
    assert src.frame_indices == [n // 10 + n // 5 * i for i in range(5)]
    assert shown(clip) == src.frame_indices
    assert src.frame_count_readable == n and not src.truncated
    assert src.frame_times == pytest.approx([i / 10 for i in src.frame_indices], abs=0.011)


@pytest.mark.parametrize("backend", ["pyav", "decord"])
@pytest.mark.parametrize("name", ["h264_audio.mkv", "vp9.webm", "h264_bframes.mp4"])
def test_truncated_files_are_sampled_within_their_readable_frames(hostile, tmp_path, name,
                                                                  backend, request):
    if (backend, name) in KNOWN_BAD_CUT:
        request.applymarker(pytest.mark.xfail(reason=KNOWN_BAD_CUT[backend, name], strict=True))
    data = (hostile / name).read_bytes()
    if name.endswith(".mp4"):  # the index first (a web MP4), so the cut falls in the frames
        data = faststart(data)
    cut = tmp_path / f"cut.{name.rsplit('.', 1)[1]}"
    cut.write_bytes(data[: len(data) * 6 // 10])
    try:
        clips = decode(cut, frames_per_clip=4, video_backend=backend)
    except DecodeError as exc:  # nothing decodable left is also an honest answer
        assert exc.reason == "truncated"
        return
    src = clips[0].source
    assert src.truncated and src.frame_count_readable < src.frame_count
    assert max(src.frame_indices) < src.frame_count_readable
    assert shown(clips[0]) == src.frame_indices


def test_animated_gif(tmp_path):
    write_av(tmp_path / "a.gif", codec="gif", n=20)
    (clip,) = decode(tmp_path / "a.gif", frames_per_clip=4)
    assert clip.source.decoder == "pillow" and shown(clip) == clip.source.frame_indices
    reader = PyAVReader(str(tmp_path / "a.gif"), None, cfg())  # FFmpeg reads GIFs too
    try:
        got, frames = reader.read([2, 7, 12, 17])
        assert reader.count == 20 and [frame_number(f) for f in frames] == got == [2, 7, 12, 17]
    finally:
        reader.close()


def test_a_corrupted_middle_never_hangs(hostile, tmp_path):
    data = bytearray((hostile / "h264_bframes.mp4").read_bytes())
    rng = np.random.default_rng(0)
    mid = len(data) // 3
    data[mid:mid + 2000] = rng.bytes(2000)
    (tmp_path / "bad.mp4").write_bytes(bytes(data))
    start = time.perf_counter()
    try:
        clips = decode(tmp_path / "bad.mp4", frames_per_clip=16, video_backend="pyav")
    except DecodeError:
        clips = []
    assert time.perf_counter() - start < 10
    for clip in clips:
        assert len(clip.frames) == len(clip.source.frame_indices)


# -- what the PyAV reader does --

def test_pyav_seeks_to_keyframes_and_decodes_only_what_it_needs(hostile, monkeypatch):
    seeks, decoded = [], []
    original_seek, original_next = PyAVReader._seek, PyAVReader._next_frame

    def seek(self, pts):
        seeks.append(pts)
        return original_seek(self, pts)

    def next_frame(self):
        frame = original_next(self)
        decoded.append(None if frame is None else frame.pts)
        return frame

    monkeypatch.setattr(PyAVReader, "_seek", seek)
    monkeypatch.setattr(PyAVReader, "_next_frame", next_frame)
    (clip,) = decode(hostile / "long_gop.mp4", frames_per_clip=4, video_backend="pyav")
    assert shown(clip) == clip.source.frame_indices == [15, 45, 75, 105]
    assert len(seeks) >= 4  # one per GOP holding a wanted frame (plus the open)
    assert len(decoded) < 90  # from keyframes 0, 30, 60, 90 to 15, 45, 75, 105 (+ the open)


def test_pyav_decodes_at_the_reduced_size_with_the_threads_asked(tmp_path):
    path = write_av(tmp_path / "wide.mp4", n=20, size=(640, 360))
    reader = PyAVReader(str(path), probe_video(str(path)), cfg(max_side=160, video_threads=2))
    try:
        assert reader.target == (160, 90) and reader.size == (640, 360)
        assert reader.stream.codec_context.thread_count == 2
        got, frames = reader.read([3, 4, 15])
        assert got == [3, 4, 15] and [f.shape for f in frames] == [(90, 160, 3)] * 3
        assert [frame_number(f) for f in frames] == got
        assert all(f.flags.c_contiguous and f.flags.writeable for f in frames)
    finally:
        reader.close()
    one = PyAVReader(str(path), None, cfg(video_threads=0))  # 0: one per CPU of the stage
    assert one.stream.codec_context.thread_count == 1
    one.close()


def test_pyav_opens_without_decoding_and_sizes_from_the_first_frame_read(hostile, monkeypatch):
    decoded = []
    original_next = PyAVReader._next_frame

    def next_frame(self):
        frame = original_next(self)
        decoded.append(frame)
        return frame

    monkeypatch.setattr(PyAVReader, "_next_frame", next_frame)
    reader = PyAVReader(str(hostile / "long_gop.mp4"), None, cfg(max_side=160))
    try:
        assert decoded == []  # the open demuxes; the first frame decoded is a wanted one's GOP
        got, frames = reader.read([45])
        assert got == [45] and [frame_number(f) for f in frames] == [45]
        assert (reader.size, reader.target, frames[0].shape) == ((320, 240), (160, 120),
                                                                (120, 160, 3))
    finally:
        reader.close()


def test_pyav_fails_when_not_even_the_first_frame_decodes(hostile, tmp_path):
    data = bytearray((hostile / "h264.mov").read_bytes())
    at = data.index(b"mdat") - 4
    (size,) = struct.unpack(">I", data[at:at + 4])
    data[at + 8:at + size] = bytes(size - 8)  # the container intact, every frame's bytes zero
    path = tmp_path / "zeros.mov"
    path.write_bytes(bytes(data))
    with pytest.raises(ReaderFailed, match="pyav: no frame decodes"):
        reader = PyAVReader(str(path), None, cfg())
        try:
            reader.read([10, 50])
        finally:
            reader.close()
    with pytest.raises(DecodeError) as err:  # the next readers are tried, as before
        decode(path, video_backend="pyav")
    assert "pyav: no frame decodes" in err.value.detail


def test_pyav_frames_are_swscale_rgb_at_odd_output_sizes(tmp_path):
    def paint(i, frame):  # colour ramps (BGR), so a channel swap or a stride slip shows
        h, w = frame.shape[:2]
        frame[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
        frame[..., 1] = np.linspace(255, 0, h, dtype=np.uint8)[:, None]
        frame[..., 2] = 40 + 4 * i

    path = write_av(tmp_path / "ramps.mp4", n=30, size=(640, 360), draw=paint)
    reader = PyAVReader(str(path), None, cfg(max_side=331))
    try:
        got, frames = reader.read([5, 20])
        width, height = reader.target
    finally:
        reader.close()
    assert got == [5, 20] and (width, height) == (331, 186)
    with av.open(str(path)) as container:
        ref = [f.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
               for i, f in enumerate(container.decode(video=0)) if i in got]
    for frame, expected in zip(frames, ref, strict=True):
        assert frame.shape == (height, width, 3) and frame.flags.c_contiguous
        assert np.abs(frame.astype(np.int16) - expected).mean() < 1.5
        assert frame[..., 2].mean() > 100 and frame[:, -10:, 2].mean() > 230  # blue ramp right


@pytest.mark.parametrize("degrees", [0, 90, 180, 270, -90, 89.6, 450])
def test_rotation_turns_frames_as_rot90(degrees):
    frame = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    turned = _rotate(frame, degrees)
    assert np.array_equal(turned, np.rot90(frame, round(degrees / 90) % 4))


def test_pyav_decodes_every_frame_when_asked(hostile):
    (clip,) = decode(hostile / "h264_bframes.mp4", frames_per_clip=100, video_backend="pyav")
    assert shown(clip) == clip.source.frame_indices == list(range(100))


# -- keep_clip: cut at keyframes, no re-encode --

def _frames_of(data: bytes) -> list[int]:
    with av.open(io.BytesIO(data)) as container:
        return [frame_number(f.to_ndarray(format="bgr24")) for f in container.decode(video=0)]


def test_pyav_keep_clip_cuts_each_clip_at_keyframes(hostile):
    path = hostile / "h264_bframes.mp4"  # keyframes at most 12 frames apart
    clips = decode(path, keep_clip=True, clip_seconds=3, frames_per_clip=2, video_backend="pyav")
    assert [c.source.clip_index for c in clips] == [0, 1, 2]
    with av.open(str(path)) as src:
        demuxed = [p for p in src.demux(video=0) if p.size]
        packets = {bytes(p) for p in demuxed}
        keys = sorted(round(p.pts * p.time_base * 10) for p in demuxed if p.is_keyframe)
    for clip, start in zip(clips, [0, 30, 60], strict=True):
        data = clip.members["mp4"]
        assert data[4:8] == b"ftyp"
        shown_frames = _frames_of(data)
        key = max(k for k in keys if k <= start)
        assert shown_frames[0] == key and shown_frames[:start + 30 - key] == list(
            range(key, start + 30))
        assert len(shown_frames) <= start + 30 - key + 4  # reference frames past the end
        with av.open(io.BytesIO(data)) as cut:
            assert {bytes(p) for p in cut.demux(video=0) if p.size} <= packets  # no re-encode


def test_pyav_keep_clip_remuxes_other_containers_into_mp4(hostile):
    (clip,) = decode(hostile / "vp9.webm", keep_clip=True, frames_per_clip=2,
                     video_backend="pyav")
    assert _frames_of(clip.members["mp4"]) == list(range(40))
    (clip,) = decode(hostile / "h264_audio.mkv", keep_clip=True, video_backend="pyav")
    assert _frames_of(clip.members["mp4"]) == list(range(100))


def test_pyav_keep_clip_warns_when_the_codec_cannot_go_into_mp4(hostile):
    (clip,) = decode(hostile / "sorenson.flv", keep_clip=True, video_backend="pyav")
    if "mp4" not in clip.members:
        assert any("keep_clip" in w for w in clip.warnings)
    else:
        assert len(_frames_of(clip.members["mp4"])) == 100


# -- the backend choice --

def test_auto_takes_the_measured_order_then_the_other_then_opencv(hostile, monkeypatch):
    assert set(AUTO_ORDER) == {"pyav", "decord"}
    (clip,) = decode(hostile / "v.mp4", frames_per_clip=2)
    assert clip.source.decoder == AUTO_ORDER[0]

    def refuse(*args, **kwargs):
        raise ReaderFailed("refused for the test")

    first = {"pyav": "PyAVReader", "decord": "DecordReader"}[AUTO_ORDER[0]]
    monkeypatch.setattr(video_module, first, refuse)
    (clip,) = decode(hostile / "v.mp4", frames_per_clip=2)
    assert clip.source.decoder == AUTO_ORDER[1] and shown(clip) == [25, 75]
    (clip,) = decode(hostile / "v.mp4", frames_per_clip=2, video_backend=AUTO_ORDER[0])
    assert clip.source.decoder == "opencv"


def test_pyav_refuses_what_is_not_a_video(tmp_path):
    (tmp_path / "noise.bin").write_bytes(np.random.default_rng(1).bytes(5000))
    with pytest.raises(ReaderFailed):
        PyAVReader(ffmpeg_path(str(tmp_path / "noise.bin")), None, cfg())
