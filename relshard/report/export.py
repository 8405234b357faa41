"""``relshard export``: a run as Parquet files with one uniform schema, for other readers.

Hugging Face ``datasets`` cannot load the shards themselves: its webdataset loader
wants every sample of a tar to have the same member types, and a run mixes images
(``KEY.jpg``), clips (``KEY.f000.jpg``..) and a varying number of crops (``KEY.s1.jpg``..).
The export writes one row per sample, the same columns for every modality:

=====================  ==========================================================
``key``                the sample key
``modality``           image, video or events
``uri``                the source input
``json``               the record (``KEY.json``) as a string
``caption``            ``KEY.txt``; ``relational_caption``: ``KEY.rel.txt``
``image``              the first frame (``KEY.jpg`` or ``KEY.f000.jpg``), null for events
``frames``             every stored frame, in order (an image: one)
``crops``              the subject crops, in the record's subject order
``crop_subject_ids``   the subject id of each crop
``subject_ids``        every subject id of the record
``times`` ``types``    an event window's float64 times and int64 type ids (else null)
``marks``              an event window's marks, one list per event (else null)
``shard``              where the sample lives in the run
=====================  ==========================================================

``--format parquet`` stores images as plain bytes; ``--format hf`` stores them as
``datasets`` ``Image`` features (struct of bytes and path, with the features in the
Parquet schema), so ``load_dataset("parquet", data_files=...)`` or
``Dataset.from_parquet`` give PIL images. Both write ``DIR/data/train-NNNNN.parquet``
(``load_dataset("parquet", data_dir=DIR)`` finds the split) and ``DIR/export.json``.

Memory is bounded: the run is read one index file at a time and one sample at a time
through the index's byte ranges (:mod:`relshard.report.gallery.sample_reader`, which
checks every tar header and never reads a clip's ``.mp4``); rows are written in row
groups of at most ``row_group_rows`` rows or ``row_group_bytes`` bytes, and a file
holds at most ``rows_per_file`` rows. A sample that cannot be read is skipped and
counted with its problem, never fatal.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from relshard.errors import MissingDependencyError
from relshard.report.gallery.sample_reader import read_sample
from relshard.report.tables import InspectError
from relshard.shards.layout import INDEX_DIR, TABLE_EXT, OutputLayout
from relshard.shards.parquet_read import read_columns, read_metadata

ExportFormat = Literal["parquet", "hf"]
FRAME_RE = re.compile(r"^f(\d+)\.(jpg|jpeg|png|webp)$")
CROP_RE = re.compile(r"^s(\d+)\.(jpg|jpeg|png|webp)$")
EVENT_MEMBERS = ("times.npy", "types.npy", "marks.npy")
INDEX_COLUMNS = ["key", "shard", "offset", "size", "modality"]
SKIP_SUFFIXES = ("mp4",)  # clips stay in the shards
Progress = Callable[[int], None]

_BYTES_LIST = pa.list_(pa.binary())
PLAIN_SCHEMA = pa.schema([
    ("key", pa.string()), ("modality", pa.string()), ("uri", pa.string()),
    ("json", pa.string()), ("caption", pa.string()), ("relational_caption", pa.string()),
    ("image", pa.binary()), ("frames", _BYTES_LIST), ("crops", _BYTES_LIST),
    ("crop_subject_ids", pa.list_(pa.string())), ("subject_ids", pa.list_(pa.string())),
    ("times", pa.list_(pa.float64())), ("types", pa.list_(pa.int64())),
    ("marks", pa.list_(pa.list_(pa.float64()))), ("shard", pa.string()),
])
IMAGE_COLUMNS = ("image", "frames", "crops")


@dataclass
class ExportOptions:
    format: ExportFormat = "parquet"
    rows_per_file: int = 10_000
    row_group_rows: int = 256
    row_group_bytes: int = 64 * 2**20
    overwrite: bool = False


@dataclass
class ExportResult:
    out: Path
    files: list[str] = field(default_factory=list)
    rows: int = 0
    bytes: int = 0
    skipped: int = 0
    problems: dict[str, str] = field(default_factory=dict)  # key -> problem (the first 100)

    def skip(self, key: str, problem: str) -> None:
        self.skipped += 1
        if len(self.problems) < 100:
            self.problems[key] = problem[:500]

    def to_json_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "files": self.files, "rows": self.rows,
                "bytes": self.bytes, "skipped": self.skipped,
                "skipped_examples": dict(list(self.problems.items())[:20])}


def hf_schema() -> pa.Schema:
    """The Parquet schema of ``--format hf``: images as ``datasets.Image`` features."""
    try:
        import datasets
    except ImportError:
        raise MissingDependencyError("datasets") from None
    image = datasets.Image()
    strings = datasets.List(datasets.Value("string"))
    features = datasets.Features({
        "key": datasets.Value("string"), "modality": datasets.Value("string"),
        "uri": datasets.Value("string"), "json": datasets.Value("string"),
        "caption": datasets.Value("string"), "relational_caption": datasets.Value("string"),
        "image": image, "frames": datasets.List(image), "crops": datasets.List(image),
        "crop_subject_ids": strings, "subject_ids": strings,
        "times": datasets.List(datasets.Value("float64")),
        "types": datasets.List(datasets.Value("int64")),
        "marks": datasets.List(datasets.List(datasets.Value("float64"))),
        "shard": datasets.Value("string"),
    })
    return features.arrow_schema


# -- one sample to one row --

def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", "replace")


def _npy(data: bytes | None) -> np.ndarray | None:
    if data is None:
        return None
    arr: np.ndarray = np.load(io.BytesIO(data), allow_pickle=False)
    return arr


def _frames(members: dict[str, bytes]) -> list[bytes]:
    if "jpg" in members:
        return [members["jpg"]]
    numbered = []
    for suffix, data in members.items():
        match = FRAME_RE.match(suffix)
        if match:
            numbered.append((int(match.group(1)), data))
    return [data for _, data in sorted(numbered)]


def _crops(record: dict[str, Any], members: dict[str, bytes]) -> tuple[list[bytes], list[str]]:
    crops, ids = [], []
    for subject in record.get("subjects") or []:
        crop = subject.get("crop") if isinstance(subject, dict) else None
        if crop and crop in members:
            crops.append(members[crop])
            ids.append(str(subject.get("id", "")))
    if crops:
        return crops, ids
    numbered = sorted((int(m.group(1)), s) for s in members if (m := CROP_RE.match(s)))
    return [members[s] for _, s in numbered], [f"S{n}" for n, _ in numbered]


def sample_row(row: dict[str, Any], members: dict[str, bytes]) -> dict[str, Any]:
    """The export row of one sample from its members (``suffix -> bytes``)."""
    text = _text(members.get("json"))
    if text is None:
        raise ValueError("the sample has no KEY.json record")
    record = json.loads(text)
    source = record.get("source") or {}
    frames = _frames(members)
    crops, crop_ids = _crops(record, members)
    times, types, marks = (_npy(members.get(name)) for name in EVENT_MEMBERS)
    if marks is not None and marks.ndim == 1:
        marks = marks[:, None]
    return {
        "key": str(row["key"]),
        "modality": source.get("modality") or row.get("modality"),
        "uri": source.get("uri"),
        "json": text,
        "caption": _text(members.get("txt")) if "txt" in members else record.get("caption"),
        "relational_caption": (_text(members.get("rel.txt")) if "rel.txt" in members
                               else record.get("relational_caption")),
        "image": frames[0] if frames else None,
        "frames": frames,
        "crops": crops,
        "crop_subject_ids": crop_ids,
        "subject_ids": [str(s.get("id", "")) for s in record.get("subjects") or []
                        if isinstance(s, dict)],
        "times": None if times is None else times.astype(np.float64).tolist(),
        "types": None if types is None else types.astype(np.int64).tolist(),
        "marks": None if marks is None else marks.astype(np.float64).tolist(),
        "shard": str(row["shard"]),
    }


def _as_hf(row: dict[str, Any]) -> dict[str, Any]:
    def image(data: bytes | None) -> dict[str, Any] | None:
        return None if data is None else {"bytes": data, "path": None}

    row["image"] = image(row["image"])
    row["frames"] = [image(b) for b in row["frames"]]
    row["crops"] = [image(b) for b in row["crops"]]
    return row


def _row_bytes(row: dict[str, Any]) -> int:
    size = len(row["json"]) + sum(len(f) for f in row["frames"]) + sum(len(c) for c in row["crops"])
    return size + 8 * (len(row["times"] or []) + len(row["types"] or []))


# -- reading the run --

def index_files(layout: OutputLayout) -> list[str]:
    """The committed index files of a run, sorted; an InspectError when there are none."""
    names = [f"{INDEX_DIR}/{unit}{TABLE_EXT}" for unit in layout.units()]
    if not names:
        hint = (f"`relshard verify {layout.url} --repair` rebuilds it from the shards"
                if layout.listdir("shards") else "is it a relshard output folder?")
        raise InspectError(f"{layout.url} has no index files: {hint}.")
    return names


def count_rows(layout: OutputLayout, names: list[str]) -> int:
    total = 0
    for name in names:
        total += read_metadata(layout.fs, layout.path(name)).num_rows
    return total


def iter_index(layout: OutputLayout, names: list[str]) -> Iterator[dict[str, Any]]:
    """Index rows, one index file in memory at a time, in shard and offset order."""
    for name in names:
        table = read_columns(layout.fs, layout.path(name), INDEX_COLUMNS)
        rows = table.to_pylist()
        rows.sort(key=lambda r: (r["shard"], r["offset"]))
        yield from rows


def _want(suffix: str, _size: int) -> bool:
    return suffix not in SKIP_SUFFIXES and not suffix.endswith(".mp4")


def iter_rows(layout: OutputLayout, names: list[str], result: ExportResult,
              advance: Progress) -> Iterator[dict[str, Any]]:
    for row in iter_index(layout, names):
        advance(1)
        sample = read_sample(layout, row, _want)
        if sample.problems:
            result.skip(sample.key, "; ".join(sample.problems))
            continue
        try:
            yield sample_row(row, sample.members)
        except (ValueError, KeyError, TypeError) as exc:  # a bad record or npy member
            result.skip(sample.key, f"{type(exc).__name__}: {exc}")


# -- writing --

class _PartWriter:
    """Parquet files of at most ``rows_per_file`` rows, row groups bounded in rows and bytes."""

    def __init__(self, data_dir: Path, schema: pa.Schema, opts: ExportOptions,
                 result: ExportResult) -> None:
        self.dir, self.schema, self.opts, self.result = data_dir, schema, opts, result
        self.writer: pq.ParquetWriter | None = None
        self.in_file = 0
        self.buffer: list[dict[str, Any]] = []
        self.buffered = 0

    def add(self, row: dict[str, Any]) -> None:
        self.buffer.append(row)
        self.buffered += _row_bytes(row)
        if len(self.buffer) >= self.opts.row_group_rows or \
                self.buffered >= self.opts.row_group_bytes or \
                self.in_file + len(self.buffer) >= self.opts.rows_per_file:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        if self.writer is None:
            name = f"train-{len(self.result.files):05d}.parquet"
            self.writer = pq.ParquetWriter(str(self.dir / name), self.schema)
            self.result.files.append(f"data/{name}")
        self.writer.write_table(pa.Table.from_pylist(self.buffer, schema=self.schema))
        self.in_file += len(self.buffer)
        self.result.rows += len(self.buffer)
        self.result.bytes += self.buffered
        self.buffer, self.buffered = [], 0
        if self.in_file >= self.opts.rows_per_file:
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer, self.in_file = None, 0


def _prepare(out: Path, overwrite: bool) -> Path:
    data_dir = out / "data"
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise InspectError(f"{out} is not empty; choose another folder or pass --overwrite.")
        shutil.rmtree(data_dir, ignore_errors=True)
        (out / "export.json").unlink(missing_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir


def export_run(root: str, out: str | Path, opts: ExportOptions | None = None,
               progress: Callable[[int], Progress] | None = None) -> ExportResult:
    """Export the run at ``root`` (a folder or URL) into ``out`` as Parquet (see the module).

    ``progress(total)`` returns a callable advanced by the rows read.
    """
    opts = opts or ExportOptions()
    layout = OutputLayout.open(root)
    if not layout.fs.exists(layout.root):
        raise InspectError(f"{root} does not exist.")
    names = index_files(layout)
    schema = hf_schema() if opts.format == "hf" else PLAIN_SCHEMA
    out = Path(out)
    result = ExportResult(out=out)
    advance = progress(count_rows(layout, names)) if progress else (lambda _n: None)
    writer = _PartWriter(_prepare(out, opts.overwrite), schema, opts, result)
    try:
        for row in iter_rows(layout, names, result, advance):
            writer.add(_as_hf(row) if opts.format == "hf" else row)
        writer.flush()
    finally:
        writer.close()
    info = {"source": layout.url, "format": opts.format, **result.to_json_dict(),
            "columns": schema.names}
    (out / "export.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return result
