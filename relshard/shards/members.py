"""Turn a finished :class:`SampleDraft` into the tar members of one sample.

Members, in this order (``KEY`` is the sample key):

- ``KEY.json``: the validated :class:`SampleRecord` (sorted keys, compact, UTF-8);
- ``KEY.txt``: the caption; ``KEY.rel.txt``: the relational caption (both always
  present, possibly empty, so every sample has the same core members);
- frames: ``KEY.jpg`` for a single-frame image, else ``KEY.f000.jpg``, ``KEY.f001.jpg``...
  numbered by position in the stored frames;
- the draft's extra members ``KEY.<suffix>`` in insertion order (crops
  ``s1.jpg``, ``times.npy``, ``mp4``...).

Any problem here belongs to the input, not to the run: a missing provenance, a
record that fails validation (a relation to an unknown id), a subject crop that
names no member, two members with one name, or extras that cannot be JSON.
Those raise :class:`InvalidRecord`, which the writer turns into a reject row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from relshard.record import SampleRecord, validate_member_suffix
from relshard.shards.item import SampleDraft, WorkItem

CORE_SUFFIXES = ("json", "txt", "rel.txt")


class InvalidRecord(ValueError):
    """An input cannot be written as it is: ``detail`` says why, ``reason`` names the kind.

    The writer turns it into a reject row (stage ``write``).
    """

    def __init__(self, detail: str, reason: str = "invalid_record") -> None:
        super().__init__(detail, reason)
        self.detail = detail
        self.reason = reason

    def __str__(self) -> str:
        return self.detail


@dataclass(frozen=True)
class SampleMembers:
    """One sample, ready for the tar: its record and its members in order."""

    key: str
    record: SampleRecord
    suffixes: list[str]
    members: list[tuple[str, bytes]]  # (KEY.suffix, bytes), in tar order
    n_frames: int

    @property
    def nbytes(self) -> int:
        """Payload bytes (without tar headers)."""
        return sum(len(data) for _, data in self.members)


def describe_validation_error(exc: ValidationError) -> str:
    """A pydantic error as one line: ``loc: message; loc: message``."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def build_record(item: WorkItem, sample: SampleDraft) -> SampleRecord:
    """The validated record of ``sample``; raises :class:`InvalidRecord`."""
    if sample.provenance is None:
        raise InvalidRecord(f"sample {sample.key!r} has no provenance")
    try:
        return SampleRecord(
            key=sample.key,
            source=sample.source,
            subjects=sample.subjects,
            attributes=sample.attributes,
            relations=sample.relations,
            caption=sample.caption,
            relational_caption=sample.relational_caption,
            provenance=sample.provenance,
            extra=item.input.extra,
            warnings=sample.warnings,
        )
    except ValidationError as exc:
        raise InvalidRecord(
            f"sample {sample.key!r}: {describe_validation_error(exc)}"
        ) from None


def record_json(record: SampleRecord) -> bytes:
    """The ``KEY.json`` bytes: sorted keys, compact separators, UTF-8, no NaN."""
    try:
        data = record.model_dump(mode="json")
        text = json.dumps(
            data, sort_keys=True, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        )
    except (PydanticSerializationError, TypeError, ValueError) as exc:
        raise InvalidRecord(f"sample {record.key!r} cannot be written as JSON: {exc}") from None
    return text.encode("utf-8")


def frame_suffixes(sample: SampleDraft) -> list[str]:
    """``jpg`` for a single-frame image, else ``f000.jpg``, ``f001.jpg``..."""
    n = len(sample.frames)
    if n == 1 and sample.source.modality == "image":
        return ["jpg"]
    return [f"f{i:03d}.jpg" for i in range(n)]


def sample_members(item: WorkItem, sample: SampleDraft) -> SampleMembers:
    """The members of one sample, in tar order; raises :class:`InvalidRecord`."""
    record = build_record(item, sample)
    payload: list[tuple[str, bytes]] = [
        ("json", record_json(record)),
        ("txt", sample.caption.encode("utf-8")),
        ("rel.txt", sample.relational_caption.encode("utf-8")),
    ]
    payload.extend(zip(frame_suffixes(sample), (f.jpeg for f in sample.frames), strict=True))
    for suffix, data in sample.members.items():
        try:
            validate_member_suffix(suffix)
        except ValueError as exc:
            raise InvalidRecord(f"sample {sample.key!r}: {exc}") from None
        payload.append((suffix, bytes(data) if not isinstance(data, bytes) else data))
    suffixes = [s for s, _ in payload]
    if len(set(suffixes)) != len(suffixes):
        dupes = sorted({s for s in suffixes if suffixes.count(s) > 1})
        raise InvalidRecord(f"sample {sample.key!r} has more than one member named {dupes}")
    known = set(suffixes)
    for subject in record.subjects:
        if subject.crop is not None and subject.crop not in known:
            raise InvalidRecord(
                f"sample {sample.key!r}: subject {subject.id} names crop {subject.crop!r}, "
                "which is not among its members"
            )
    members = [(f"{sample.key}.{s}", data) for s, data in payload]
    return SampleMembers(
        key=sample.key, record=record, suffixes=suffixes, members=members,
        n_frames=len(sample.frames),
    )


def item_members(item: WorkItem) -> list[SampleMembers]:
    """All samples of an input, or :class:`InvalidRecord` for the first one that fails."""
    if not item.samples:
        raise InvalidRecord(f"input {item.input.input_key!r} produced no samples", "no_samples")
    out = [sample_members(item, s) for s in item.samples]
    keys = [s.key for s in out]
    if len(set(keys)) != len(keys):
        raise InvalidRecord(f"input {item.input.input_key!r} has duplicate sample keys")
    return out
