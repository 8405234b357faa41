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

from relshard.record import Attribute, Provenance, Relation, SourceInfo, Subject
from relshard.shards import ShardWriter, build_manifest, write_manifest
from relshard.shards.item import Frame, InputRef, SampleDraft, WorkItem


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
    return {"key": key, "source": {"uri": uri, "input_key": key, "sha256": sha,
                                   "modality": "image"},
            "subjects": subjects, "attributes": attributes, "relations": relations,
            "caption": "", "relational_caption": "; ".join(parts) + "." if parts else "",
            "provenance": PROVENANCE}


PROVENANCE = {"backend": "test", "relshard_version": "0.1.0"}


def draft_of(record: dict, frames: list[bytes] | None = None,
             members: dict[str, bytes] | None = None) -> SampleDraft:
    """A record (plain data) as the SampleDraft the ShardWriter takes."""
    return SampleDraft(
        key=record["key"], source=SourceInfo.model_validate(record["source"]),
        frames=[Frame(f, 1, 1) for f in frames or []],
        subjects=[Subject.model_validate(x) for x in record.get("subjects", [])],
        attributes=[Attribute.model_validate(x) for x in record.get("attributes", [])],
        relations=[Relation.model_validate(x) for x in record.get("relations", [])],
        caption=record.get("caption", ""), relational_caption=record.get("relational_caption", ""),
        provenance=Provenance.model_validate(record.get("provenance", PROVENANCE)),
        members=dict(members or {}))


def write_run(root: Path, items: list[WorkItem], per_shard: int = 1000) -> Path:
    """A real relshard output (ShardWriter units + manifest) of ``items``; the manifest path."""
    with ShardWriter(str(root), "w", max_samples=per_shard, max_bytes=1 << 30) as writer:
        for item in items:
            writer.add(item)
    assert not writer.summary.rejects_by_reason, writer.summary.rejects_by_reason
    write_manifest(str(root), build_manifest(str(root), root.name, "test"))
    return root / "manifest.json"


def make_relational_output(root: Path, samples: list[tuple[str, str, int]],
                           per_shard: int = 7) -> Path:
    """A relshard output of ``(uri, sha256, n_subjects)`` samples (one input each)."""
    items = []
    for i, (uri, sha, n) in enumerate(samples):
        key = f"k{i:05d}"
        rec = relational_record(key, uri, sha, n, i)
        items.append(WorkItem(InputRef(key, uri, "image"), [draft_of(rec)]))
    return write_run(root, items, per_shard)


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
                      per_shard: int = 30, one_file: bool = False) -> Path:
    """Event shards: ``sequences`` logs cut in ``windows`` windows of 4-40 events each
    (``one_file``: one log holding all the sequences)."""
    rng = np.random.default_rng(0)
    items = []
    for s in range(sequences):
        uri, seq, drafts = f"logs/seq{s}.csv", f"seq{s}", []
        if one_file:
            uri = "logs/all.csv"
        for w in range(windows):
            t, k = event_window(rng, int(rng.integers(4, 41)), 1.7e9 + 1000 * w)
            key = f"{seq}-w{w:03d}"
            source = "all" if one_file else seq
            rec = {"key": key, "source": {"uri": uri, "input_key": source,
                                          "sha256": f"sha-{source}",
                                          "modality": "events", "sequence": seq,
                                          "window_index": w, "event_count": len(t),
                                          "time_span": [float(t[0]), float(t[-1])]}}
            drafts.append(draft_of(rec, members={"times.npy": npy(t), "types.npy": npy(k)}))
        items.append(WorkItem(InputRef(seq, uri, "events"), drafts))
    if one_file:
        items = [WorkItem(InputRef("all", "logs/all.csv", "events"),
                          [d for item in items for d in item.samples])]
    return write_run(root, items, per_shard)


HELD = [("bag", "accessory", "carries"), ("dog", "object", "walks")]


def hard_binding_record(key: str, seed: int) -> dict:
    """A scene where "an attribute belongs to the box that contains it" is often wrong.

    2-4 people stand side by side, nearly touching. Each wears a hat inside their own
    box (the rule gets it right), carries a bag that sticks out to their right (into
    the right neighbour's box), walks a dog at their lower left (inside the left
    neighbour's box); unbound distractors (a tree, a sign) lie anywhere.
    """
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 5))
    width = 0.16
    x = float(rng.uniform(0.1, 0.2))
    subjects, attributes, relations = [], [], []

    def attr(text: str, category: str, box: list[float]) -> str:
        aid = f"A{len(attributes) + 1}"
        attributes.append({"id": aid, "text": text, "category": category,
                           "bbox": [round(v, 4) for v in box], "frame": 0})
        return aid

    for s in range(n):
        sid = f"S{s + 1}"
        y0 = float(rng.uniform(0.05, 0.15))
        subjects.append({"id": sid, "kind": "person", "bbox": [x, y0, x + width, 0.9],
                         "frame": 0})
        colour = COLOURS[int(rng.integers(len(COLOURS)))]
        owned = [("wears", attr(f"{colour} hat", "clothing",
                                [x + 0.03, y0, x + width - 0.03, y0 + 0.08]))]
        if rng.random() < 0.8:
            owned.append(("carries", attr(f"{colour} bag", "accessory",
                                          [x + width - 0.02, 0.5, x + width + 0.09, 0.65])))
        if rng.random() < 0.6:
            owned.append(("walks", attr("dog", "object", [x - 0.08, 0.78, x + 0.01, 0.88])))
        relations += [{"subject": sid, "predicate": p, "object": a, "confidence": 1.0}
                      for p, a in owned]
        x += width + float(rng.uniform(0.0, 0.03))
    for _ in range(int(rng.integers(0, 3))):
        cx, cy = float(rng.uniform(0, 0.9)), float(rng.uniform(0, 0.9))
        attr(str(rng.choice(["tree", "sign", "car"])), "other", [cx, cy, cx + 0.1, cy + 0.1])
    caption = "; ".join(f"{{{r['subject']}}} {r['predicate']} {{{r['object']}}}"
                        for r in relations) + "."
    return {"key": key, "source": {"uri": f"scenes/{key}.jpg", "input_key": key,
                                   "sha256": f"sha-{key}", "modality": "image"},
            "subjects": subjects, "attributes": attributes, "relations": relations,
            "caption": "", "relational_caption": caption, "provenance": PROVENANCE}


def make_hard_binding_output(root: Path, n: int, per_shard: int = 200) -> Path:
    """A run of ``n`` :func:`hard_binding_record` scenes."""
    items = []
    for i in range(n):
        rec = hard_binding_record(f"h{i:05d}", i)
        items.append(WorkItem(InputRef(rec["key"], rec["source"]["uri"], "image"),
                              [draft_of(rec)]))
    return write_run(root, items, per_shard)


def make_planted_event_output(root: Path, sequences: int = 6, horizon: float = 400.0,
                              window: int = 40, seed: int = 0) -> Path:
    """Event windows of a known 3-type exponential Hawkes process (strongly self-exciting
    bursts), ``window`` events each, one input per sequence."""
    from relshard.events.simulate import simulate_hawkes

    rng = np.random.default_rng(seed)
    mu = np.array([0.2, 0.1, 0.1])
    alpha = np.array([[0.5, 0.3, 0.0], [0.0, 0.4, 0.3], [0.2, 0.0, 0.5]])
    items = []
    for s in range(sequences):
        t, k = simulate_hawkes(mu, alpha, 2.0, horizon, rng)
        seq, uri, drafts = f"p{s}", f"planted/p{s}.csv", []
        for w, lo in enumerate(range(0, len(t) - window + 1, window)):
            tw, kw = t[lo:lo + window], k[lo:lo + window]
            key = f"{seq}-w{w:03d}"
            rec = {"key": key, "source": {"uri": uri, "input_key": seq, "sha256": f"sha-{seq}",
                                          "modality": "events", "sequence": seq,
                                          "window_index": w, "event_count": len(tw),
                                          "time_span": [float(tw[0]), float(tw[-1])]}}
            drafts.append(draft_of(rec, members={"times.npy": npy(tw), "types.npy": npy(kw)}))
        items.append(WorkItem(InputRef(seq, uri, "events"), drafts))
    return write_run(root, items)
