"""`pip install relshard` alone reads, streams, inspects and verifies shards (issue #16).

A wheel of this checkout goes into a clean venv with its core dependencies only (from
the configured package index, no extras): no Ray, OpenCV, numba or torch. There, a
script streams a tiny build made here (by the full install) with ``ShardStream`` and
``ShardLoader`` and decodes its JPEGs with Pillow to the same arrays OpenCV gives;
``relshard stats`` and ``relshard verify`` work; ``relshard run``, ``train`` and
DataLoader workers say, in one sentence, which extra to install.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from relshard import ShardStream
from relshard.deps import missing_extra, require
from relshard.errors import MissingDependencyError
from relshard.shards import decoding
from tests.unit.report.builds import write_build

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("ray", "cv2", "torch", "numba", "decord", "av", "onnxruntime", "transformers",
         "webdataset", "matplotlib")


def summarize(batches: Iterable[dict[str, Any]]) -> dict[str, dict[str, list[Any]]]:
    """Every decoded image of every sample: its shape, dtype and pixel sum."""
    arrays = {}
    for batch in batches:
        for i, key in enumerate(batch["__key__"]):
            arrays[key] = {name: [list(v[i].shape), str(v[i].dtype), int(v[i].sum())]
                           for name, v in batch.items()
                           if name.endswith("jpg") and v[i] is not None}
    return arrays


# the same summary in the venv (Pillow decodes) as here (OpenCV decodes)
STREAM_SCRIPT = "from typing import Any, Iterable\n" + inspect.getsource(summarize)
STREAM_SCRIPT += textwrap.dedent('''
    import importlib.util, json, sys
    import relshard
    from relshard import ShardLoader, ShardStream
    from relshard.errors import MissingDependencyError

    root = sys.argv[1]
    out = {"relshard": relshard.__file__,
           "present": [m for m in sys.argv[2].split(",") if importlib.util.find_spec(m)]}
    stream = ShardStream(root + "/manifest.json", batch_size=2, remainder="pad")
    out["arrays"] = summarize(ShardLoader(stream))
    out["skipped"] = dict(stream.skipped)
    try:
        ShardLoader(stream, num_workers=2)
    except MissingDependencyError as exc:
        out["workers"] = str(exc)
    import relshard.api
    try:
        relshard.api.train(sys.argv[3])
    except MissingDependencyError as exc:
        out["train"] = str(exc)
    print(json.dumps(out))
''')


def _clean_env() -> dict[str, str]:
    """This environment minus whatever would let the venv see the parent's packages."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(sys.prefix))
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean venv holding a wheel of this checkout and its core dependencies only."""
    tmp = tmp_path_factory.mktemp("light")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "relshard", src / "relshard",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc"))
    env = _clean_env()
    isolation = [] if importlib.util.find_spec("setuptools") else ["--build-isolation"]
    built = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                  *(isolation or ["--no-build-isolation"]), "-w", str(tmp / "dist"), "."],
                 src, env)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("relshard-*.whl")
    venv = tmp / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    made = _run([base, "-m", "venv", str(venv)], tmp, env)
    assert made.returncode == 0, made.stderr[-3000:]
    installed = _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                     tmp, env, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real build (images with subject crops, video frames, rejects), by ShardWriter."""
    return write_build(tmp_path_factory.mktemp("build") / "out")


@pytest.mark.slow
def test_core_install_streams_inspects_and_verifies(core_venv: Path, build: Path,
                                                    tmp_path: Path) -> None:
    env = _clean_env()
    python, cli = str(core_venv / "bin" / "python"), str(core_venv / "bin" / "relshard")
    script = tmp_path / "stream.py"
    script.write_text(STREAM_SCRIPT)
    streamed = _run([python, str(script), str(build), ",".join(HEAVY),
                     str(REPO / "examples" / "train_binding.yaml")], tmp_path, env)
    assert streamed.returncode == 0, streamed.stderr[-3000:]
    got = json.loads(streamed.stdout.strip().splitlines()[-1])
    assert got["relshard"].startswith(str(core_venv)), got["relshard"]  # the wheel, not the repo
    assert got["present"] == []  # nothing heavy came with the core install
    assert got["skipped"] == {}
    expected = summarize(ShardStream(build / "manifest.json", batch_size=2, remainder="pad"))
    assert len(expected) == 9 and all(expected.values())
    assert sum(len(v) for v in expected.values()) > 9  # frames and subject crops
    assert got["arrays"] == expected  # Pillow decodes what OpenCV decodes
    assert "pip install 'relshard[train]'" in got["workers"]
    assert "pip install 'relshard[train]'" in got["train"]  # the library API, not only the CLI

    stats = _run([cli, "stats", str(build), "--json"], tmp_path, env)
    assert stats.returncode == 0, stats.stderr[-3000:]
    figures = json.loads(stats.stdout)
    assert figures["samples"] == 9 and figures["rejects"]["total"] == 2

    verified = _run([cli, "verify", str(build)], tmp_path, env)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    for cmd, extra in ((["run", str(REPO / "examples" / "demo.yaml")], "pipeline"),
                       (["build-benchmark", str(build), "--to", str(tmp_path / "b")],
                        "pipeline"),
                       (["train", str(REPO / "examples" / "train_binding.yaml")], "train")):
        refused = _run([cli, *cmd], tmp_path, env)
        message = refused.stdout + refused.stderr
        assert refused.returncode == 2, message
        assert f"install it with: pip install 'relshard[{extra}]'" in message, message
        assert "Traceback" not in message, message
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "examples" / "data" / "images")
                                        .iterdir()))
def test_pillow_decodes_what_opencv_decodes(name: str) -> None:
    """Photos, EXIF-rotated, grayscale and RGBA inputs: the same RGB array either way."""
    import cv2

    data = (REPO / "examples" / "data" / "images" / name).read_bytes()
    ours, theirs = decoding._decode_pillow(data), decoding._decode_opencv(cv2, data)
    assert ours is not None and theirs is not None
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert (ours == theirs).all()
    assert decoding._decode_pillow(b"\xff\xd8 not a jpeg") is None


def test_without_opencv_the_reader_decodes_with_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    data = (REPO / "examples" / "data" / "images" / "grace_hopper.jpg").read_bytes()
    with_cv2 = decoding.decode_image(data)
    monkeypatch.setattr(decoding, "_opencv", lambda: None)
    assert (decoding.decode_image(data) == with_cv2).all()
    with pytest.raises(decoding.CorruptSample):
        decoding.decode_image(data[: len(data) // 2])  # Pillow refuses a truncated JPEG


def test_a_missing_optional_package_names_its_extra() -> None:
    with pytest.raises(MissingDependencyError) as info:
        require("relshard_no_such_module", "pipeline")
    assert str(info.value).endswith("install it with: pip install 'relshard[pipeline]'")
    assert str(missing_extra(ModuleNotFoundError("x", name="ray.data"))) == (
        "The package 'ray' is not installed; install it with: pip install 'relshard[pipeline]'")
    assert "relshard[train]" in str(missing_extra(ModuleNotFoundError("x", name="torch")))
    assert missing_extra(ModuleNotFoundError("x", name="numpy")) is None  # core: a bug
