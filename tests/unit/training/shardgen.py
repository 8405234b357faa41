"""Tiny relshard-style outputs made at test time: tar shards, index parquet, manifest."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def sample_members(key: str, i: int) -> list[tuple[str, bytes]]:
    """The members of sample ``i``: json, txt, rel.txt, a small jpg, an npy."""
    img = np.full((8, 12, 3), (i * 7) % 256, dtype=np.uint8)
    ok, jpg = cv2.imencode(".jpg", img)
    assert ok
    buf = io.BytesIO()
    np.save(buf, np.arange(3, dtype=np.float64) + i, allow_pickle=False)
    record = {"key": key, "i": i, "subjects": [{"id": "S1"}]}
    return [
        (f"{key}.json", json.dumps(record).encode()),
        (f"{key}.txt", f"caption {i}".encode()),
        (f"{key}.rel.txt", f"{{S1}} number {i}".encode()),
        (f"{key}.jpg", jpg.tobytes()),
        (f"{key}.times.npy", buf.getvalue()),
    ]


def write_shard(path: Path, keys: list[tuple[str, int]]) -> list[tuple[str, int, int]]:
    """Write a POSIX tar of the given samples; return (key, offset, size) per sample."""
    rows = []
    with open(path, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for key, i in keys:
            start = f.tell()
            for name, data in sample_members(key, i):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            rows.append((key, start, f.tell() - start))
    return rows


def make_output(root: Path, counts: list[int], index: bool = True) -> Path:
    """An output folder with one shard per count; returns the manifest path."""
    (root / "shards").mkdir(parents=True)
    (root / "index").mkdir()
    shardlist = []
    n = 0
    for u, count in enumerate(counts):
        keys = [(f"s{n + j:05d}", n + j) for j in range(count)]
        n += count
        rel = f"shards/u{u:03d}.tar"
        rows = write_shard(root / rel, keys)
        if index:
            table = pa.table({"key": [r[0] for r in rows], "offset": [r[1] for r in rows],
                              "size": [r[2] for r in rows]})
            pq.write_table(table, root / "index" / f"u{u:03d}.parquet")
        shardlist.append({"url": rel, "nsamples": count})
    manifest = {"__kind__": "wids-shard-index-v1", "wids_version": 1, "shardlist": shardlist}
    if index:
        manifest["spec_hash"] = "test"
    path = root / "manifest.json"
    path.write_text(json.dumps(manifest))
    return path


def key_index(key: str) -> int:
    return int(key[1:])


COLOURS = ["red", "blue", "green", "black", "white", "yellow"]
GARMENTS = ["shirt", "hat", "scarf", "jacket"]


def relational_record(key: str, uri: str, sha: str, n_subjects: int, seed: int) -> dict:
    """A record in the shape of relshard's: subjects, attributes bound by relations, captions."""
    rng = np.random.default_rng(seed)
    subjects, attributes, relations, parts = [], [], [], []
    for s in range(n_subjects):
        x = float(rng.uniform(0, 0.7))
        subjects.append({"id": f"S{s + 1}", "kind": "person", "bbox": [x, 0.1, x + 0.2, 0.9],
                         "frame": 0})
        for _ in range(int(rng.integers(1, 3))):
            a = len(attributes) + 1
            text = f"{COLOURS[int(rng.integers(len(COLOURS)))]} " \
                   f"{GARMENTS[int(rng.integers(len(GARMENTS)))]}"
            attributes.append({"id": f"A{a}", "text": text, "category": "clothing",
                               "bbox": [x + 0.02, 0.3, x + 0.18, 0.6], "frame": 0})
            relations.append({"subject": f"S{s + 1}", "predicate": "wears",
                              "object": f"A{a}", "confidence": 1.0})
            parts.append(f"{{S{s + 1}}} wears {{A{a}}}")
    return {"key": key, "source": {"uri": uri, "sha256": sha, "modality": "image"},
            "subjects": subjects, "attributes": attributes, "relations": relations,
            "caption": "", "relational_caption": "; ".join(parts) + ".",
            "provenance": {"backend": "test"}}


def make_relational_output(root: Path, samples: list[tuple[str, str, int]],
                           per_shard: int = 7) -> Path:
    """A relshard-style output of ``(uri, sha256, n_subjects)`` samples, with a full index."""
    (root / "shards").mkdir(parents=True)
    (root / "index").mkdir()
    shardlist = []
    for u, lo in enumerate(range(0, len(samples), per_shard)):
        rel = f"shards/u{u:03d}.tar"
        rows = []
        with open(root / rel, "wb") as f, tarfile.open(fileobj=f, mode="w") as tar:
            for i in range(lo, min(lo + per_shard, len(samples))):
                uri, sha, n = samples[i]
                key = f"k{i:05d}"
                rec = relational_record(key, uri, sha, n, i)
                start = f.tell()
                for name, data in [(f"{key}.json", json.dumps(rec).encode()),
                                   (f"{key}.rel.txt", rec["relational_caption"].encode())]:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                rows.append({"key": key, "uri": uri, "sha256": sha, "n_subjects": n,
                             "shard": rel, "offset": start, "size": f.tell() - start,
                             "modality": "image"})
        pq.write_table(pa.Table.from_pylist(rows), root / "index" / f"u{u:03d}.parquet")
        shardlist.append({"url": rel, "nsamples": len(rows)})
    path = root / "manifest.json"
    path.write_text(json.dumps({"__kind__": "wids-shard-index-v1", "wids_version": 1,
                                "spec_hash": "test", "shardlist": shardlist}))
    return path


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def event_window(rng: np.random.Generator, n: int, start: float) -> tuple[np.ndarray, np.ndarray]:
    """A learnable event window: types cycle 0, 1, 2 with type-dependent gaps."""
    k = (np.arange(n) + int(rng.integers(3))) % 3
    gaps = np.where(k == 0, 2.0, 0.3) + rng.exponential(0.05, n)
    return start + np.cumsum(gaps), k.astype(np.int64)


def make_event_output(root: Path, sequences: int = 12, windows: int = 8,
                      per_shard: int = 30) -> Path:
    """Event shards: ``sequences`` logs cut in ``windows`` windows of 4-40 events each."""
    rng = np.random.default_rng(0)
    (root / "shards").mkdir(parents=True)
    (root / "index").mkdir()
    samples = []
    for s in range(sequences):
        for w in range(windows):
            t, k = event_window(rng, int(rng.integers(4, 41)), 1.7e9 + 1000 * w)
            samples.append((f"logs/seq{s}.csv", f"seq{s}", w, t, k))
    shardlist = []
    for u, lo in enumerate(range(0, len(samples), per_shard)):
        rel, rows = f"shards/e{u:03d}.tar", []
        with open(root / rel, "wb") as f, tarfile.open(fileobj=f, mode="w") as tar:
            for uri, seq, w, t, k in samples[lo:lo + per_shard]:
                key = f"{seq}-w{w:03d}"
                rec = {"key": key, "source": {"uri": uri, "modality": "events", "sequence": seq,
                                              "window_index": w, "event_count": len(t)},
                       "subjects": [], "attributes": [], "relations": []}
                start = f.tell()
                for name, data in [(f"{key}.json", json.dumps(rec).encode()),
                                   (f"{key}.times.npy", npy(t)), (f"{key}.types.npy", npy(k))]:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                rows.append({"key": key, "uri": uri, "sha256": f"sha-{seq}", "n_subjects": 0,
                             "shard": rel, "offset": start, "size": f.tell() - start,
                             "modality": "events"})
        pq.write_table(pa.Table.from_pylist(rows), root / "index" / f"e{u:03d}.parquet")
        shardlist.append({"url": rel, "nsamples": len(rows)})
    path = root / "manifest.json"
    path.write_text(json.dumps({"__kind__": "wids-shard-index-v1", "wids_version": 1,
                                "spec_hash": "test", "shardlist": shardlist}))
    return path
