"""In-memory WorkItems for the shard tests: real small JPEGs, real records."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from relshard.record import Attribute, Provenance, Relation, SourceInfo, Subject, make_input_key
from relshard.shards.item import Frame, InputRef, SampleDraft, WorkItem

PROV = Provenance(backend="heuristic", model=None, relshard_version="0.1.0")


def jpeg(seed: int, width: int = 48, height: int = 32) -> bytes:
    """A real JPEG of deterministic noise."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def make_item(
    name: str,
    *,
    n_samples: int = 1,
    modality: str = "image",
    n_frames: int = 1,
    crop: bool = True,
    payload: int = 0,
    extra: dict[str, Any] | None = None,
) -> WorkItem:
    """One input with ``n_samples`` samples; ``payload`` adds a blob member of that many bytes."""
    uri = f"file:///data/{name}.jpg"
    input_key = make_input_key(f"{name}.jpg")
    item = WorkItem(InputRef(input_key, uri, modality, extra=dict(extra or {"split": "train"})))
    seed = sum(map(ord, name))
    for i in range(n_samples):
        key = input_key if n_samples == 1 else f"{input_key}_c{i:04d}"
        source = SourceInfo(uri=uri, input_key=input_key, modality=modality, sha256="ab" * 32)
        frames = [Frame(jpeg(seed + i * 31 + f), 48, 32, index=f) for f in range(n_frames)]
        sample = SampleDraft(
            key=key,
            source=source,
            frames=frames,
            subjects=[Subject(id="S1", kind="person", bbox=[0.1, 0.1, 0.5, 0.9],
                              crop="s1.jpg" if crop else None)],
            attributes=[Attribute(id="A1", text="red hat", category="clothing")],
            relations=[Relation(subject="S1", predicate="wears", object="A1")],
            caption=f"a person in a red hat ({name})",
            relational_caption="{S1} wears {A1}",
            provenance=PROV,
        )
        if crop:
            sample.add_member("s1.jpg", jpeg(seed + 1000 + i, 16, 16))
        if payload:
            sample.add_member("blob.bin", np.random.default_rng(seed).bytes(payload))
        item.samples.append(sample)
    return item


def rejected_item(name: str, reason: str = "corrupt") -> WorkItem:
    uri = f"file:///data/{name}.jpg"
    item = WorkItem(InputRef(make_input_key(f"{name}.jpg"), uri, "image"))
    return item.fail("decode", reason, detail=f"{name} is broken")


def tar_names(path: Path) -> list[str]:
    """Member names as GNU tar lists them."""
    out = subprocess.run(["tar", "-tf", str(path)], check=True, capture_output=True, text=True)
    return out.stdout.splitlines()


def tar_members(data: bytes) -> list[tuple[str, bytes]]:
    """(name, bytes) of every member, read with the standard library."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]  # type: ignore[union-attr]
