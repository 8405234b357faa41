"""Tiny real builds for the inspect tests: shards written by the real ShardWriter."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from relshard.record import Provenance
from relshard.shards import ShardWriter, build_manifest, write_manifest
from relshard.shards.layout import OutputLayout
from tests.unit.shards.factory import make_item, rejected_item


def write_build(root: Path, *, n_image: int = 5, n_video: int = 2, rejects: int = 2,
                prefix: str = "w0", max_samples: int = 4, name: str = "demo",
                backend: str = "heuristic") -> Path:
    """A build: images (one with a leaking relational caption), video clips, rejects,
    several shards (``max_samples`` per unit), a manifest. Returns ``root``."""
    items = [make_item(f"img{i}") for i in range(n_image)]
    items[0].samples[0].relational_caption = "{S1} wears red hat"  # the leak
    items[0].samples[0].caption = "a person"
    items += [make_item(f"vid{i}", n_samples=2, modality="video", n_frames=3)
              for i in range(n_video)]
    if backend != "heuristic":
        for item in items:
            for sample in item.samples:
                sample.provenance = Provenance(backend=backend, model="m1",
                                               prompt_version="p2", relshard_version="0.1.0")
    items += [rejected_item(f"bad{i}", reason="corrupt" if i % 2 == 0 else "empty_file")
              for i in range(rejects)]
    with ShardWriter(str(root), prefix, max_samples, 64_000_000) as writer:
        for item in items:
            writer.add(item)
    write_manifest(str(root), build_manifest(str(root), name, "hash-" + name))
    return root


def rewrite_member(shard: Path, member_name: str, data: bytes | None) -> None:
    """Replace (or with ``None`` drop) one member of a shard, keeping the others in order."""
    with tarfile.open(shard) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf.getmembers()]  # type: ignore[union-attr]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as out:
        for info, blob in members:
            if info.name == member_name:
                if data is None:
                    continue
                blob = data
            info.size = len(blob)
            out.addfile(info, io.BytesIO(blob))
    shard.write_bytes(buf.getvalue())


def first_record(shard: Path) -> tuple[str, dict]:
    """The name and parsed record of a shard's first ``.json`` member."""
    with tarfile.open(shard) as tf:
        for m in tf.getmembers():
            if m.name.endswith(".json"):
                return m.name, json.loads(tf.extractfile(m).read())  # type: ignore[union-attr]
    raise AssertionError(f"{shard} has no .json member")


def shards_of(root: Path) -> list[Path]:
    return sorted((root / "shards").glob("*.tar"))


def units_of(root: Path) -> list[str]:
    return OutputLayout.open(str(root)).units()
