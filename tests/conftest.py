"""Shared fixtures: one local Ray per test session, and tiny real media made at test time."""

from __future__ import annotations

import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from relshard.pipelines import ray_cluster

# Ray reads its interface and auth settings when first imported, and test modules
# import it at collection: set them before anything does, as `relshard run` does.
ray_cluster.set_local_env()

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "examples" / "data"


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray (2 CPUs, loopback) shared by every Ray test of the session."""
    started = ray_cluster.connect(None, num_cpus=2)
    import ray

    yield ray
    if started:
        ray_cluster.shutdown()


def png_bomb(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A tiny PNG whose header declares a huge image (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body)
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture()
def memory_root() -> Iterator[str]:
    """A fresh folder of fsspec's memory:// filesystem (a filesystem that is not local)."""
    import uuid

    import fsspec

    memory = fsspec.filesystem("memory")
    root = f"/test-{uuid.uuid4().hex[:8]}"
    memory.mkdir(root)
    yield root
    memory.rm(root, recursive=True)


@pytest.fixture()
def messy_inputs(tmp_path: Path) -> Path:
    """The bundled samples plus the bad inputs real folders contain."""
    root = tmp_path / "inputs"
    shutil.copytree(SAMPLES, root)
    bad = root / "bad"
    bad.mkdir()
    (bad / "zero.jpg").write_bytes(b"")
    (bad / "noise.jpg").write_bytes(bytes(range(256)) * 40)
    (bad / "noise.mp4").write_bytes(b"\x00\x01garbage" * 500)
    (bad / "notes.xyz").write_text("not media")
    png_bomb(bad / "bomb.png")
    return root


EXPECTED_REJECTS = {
    "broken/empty.mp4": "empty_file",
    "broken/truncated.jpg": "truncated",
    "bad/zero.jpg": "empty_file",
    "bad/noise.jpg": "corrupt",
    "bad/noise.mp4": "corrupt",
    "bad/notes.xyz": "unsupported_format",
    "bad/bomb.png": "decompression_bomb",
}
