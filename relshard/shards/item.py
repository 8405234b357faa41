"""What flows between stages: one :class:`WorkItem` per input.

An input (an image, a video, an event log) becomes one WorkItem; decoding fills
``samples`` (one per image, per clip of a video, per window of events). Stages
enrich the samples in place. A stage that cannot handle an input sets
``reject`` and every later stage passes the item through untouched, so each input
reaches the writer exactly once: written, or rejected with a reason.

Between Ray stages a WorkItem travels as one binary cell (msgpack: plain data, no
code execution on load), so all samples of an input stay together and land in one
shard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack
from pydantic import BaseModel, ConfigDict

from relshard.record import (
    Attribute,
    Provenance,
    Reject,
    Relation,
    SourceInfo,
    Subject,
    validate_member_suffix,
)


@dataclass
class InputRef:
    """One input as listed from a source."""

    input_key: str
    uri: str
    modality: str  # "image" | "video" | "events" | "auto" before decoding
    size: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Frame:
    """A stored frame: JPEG bytes at the decode size, with where it came from."""

    jpeg: bytes
    width: int
    height: int
    index: int = 0  # frame index in the source video (0 for images)
    time: float | None = None  # seconds into the source


class _DraftParts(BaseModel):
    """The validated parts of a draft read back from the wire: one validation per sample."""

    model_config = ConfigDict(extra="forbid")

    source: SourceInfo
    subjects: list[Subject]
    attributes: list[Attribute]
    relations: list[Relation]
    provenance: Provenance | None = None


@dataclass
class SampleDraft:
    """A sample being built; the writer turns it into a validated SampleRecord."""

    key: str
    source: SourceInfo
    frames: list[Frame] = field(default_factory=list)
    subjects: list[Subject] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)
    caption: str = ""
    relational_caption: str = ""
    provenance: Provenance | None = None
    members: dict[str, bytes] = field(default_factory=dict)  # extra members: suffix -> bytes
    warnings: list[str] = field(default_factory=list)

    def add_member(self, suffix: str, data: bytes) -> None:
        self.members[validate_member_suffix(suffix)] = data

    def to_data(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "source": self.source.model_dump(exclude_defaults=True),
            "frames": [[f.jpeg, f.width, f.height, f.index, f.time] for f in self.frames],
            "subjects": [s.model_dump(exclude_defaults=True) for s in self.subjects],
            "attributes": [a.model_dump(exclude_defaults=True) for a in self.attributes],
            "relations": [r.model_dump() for r in self.relations],
            "caption": self.caption,
            "relational_caption": self.relational_caption,
            "provenance": self.provenance.model_dump() if self.provenance else None,
            "members": self.members,
            "warnings": self.warnings,
        }

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> SampleDraft:
        parts = _DraftParts.model_validate({
            "source": d["source"], "subjects": d["subjects"], "attributes": d["attributes"],
            "relations": d["relations"], "provenance": d.get("provenance"),
        })
        return cls(
            key=d["key"],
            source=parts.source,
            frames=[Frame(j, w, h, i, t) for j, w, h, i, t in d["frames"]],
            subjects=parts.subjects,
            attributes=parts.attributes,
            relations=parts.relations,
            caption=d["caption"],
            relational_caption=d["relational_caption"],
            provenance=parts.provenance,
            members=dict(d["members"]),
            warnings=list(d["warnings"]),
        )


@dataclass
class WorkItem:
    """One input on its way through the stages."""

    input: InputRef
    samples: list[SampleDraft] = field(default_factory=list)
    reject: Reject | None = None

    @property
    def rejected(self) -> bool:
        return self.reject is not None

    def fail(self, stage: str, reason: str, detail: str = "", raw_output: str | None = None,
             attempts: int = 1) -> WorkItem:
        """Mark this input rejected (dropping partial samples) and return it."""
        self.samples = []
        self.reject = Reject(
            input_key=self.input.input_key,
            uri=self.input.uri,
            stage=stage,
            reason=reason,
            detail=detail[:4000],
            raw_output=raw_output,
            attempts=attempts,
        )
        return self

    def to_bytes(self) -> bytes:
        data = {
            "input": [self.input.input_key, self.input.uri, self.input.modality,
                      self.input.size, self.input.extra],
            "samples": [s.to_data() for s in self.samples],
            "reject": self.reject.model_dump() if self.reject else None,
        }
        return msgpack.packb(data, use_bin_type=True)

    @classmethod
    def from_bytes(cls, blob: bytes) -> WorkItem:
        d = msgpack.unpackb(blob, raw=False, strict_map_key=True)
        k, uri, modality, size, extra = d["input"]
        rej = d["reject"]
        return cls(
            input=InputRef(k, uri, modality, size, extra or {}),
            samples=[SampleDraft.from_data(s) for s in d["samples"]],
            reject=Reject.model_validate(rej) if rej else None,
        )
