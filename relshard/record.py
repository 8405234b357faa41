"""The sample contract (schema version 1): what one sample's ``KEY.json`` holds.

A shard is a POSIX tar; a sample is the group of members that share a key:
``KEY.json`` (a :class:`SampleRecord`), ``KEY.txt`` (caption), ``KEY.rel.txt``
(anonymized relational caption), ``KEY.jpg`` or ``KEY.f000.jpg``... (image or
keyframes), ``KEY.s1.jpg`` (subject crops; lowercase, because webdataset
lowercases member suffixes), and for event windows ``KEY.times.npy`` /
``KEY.types.npy``.

Keys are lowercase ``[a-z0-9_-]`` (no dots: webdataset splits at the first dot),
derived deterministically from where an input lives relative to its source root,
so that re-runs on any machine give the same keys. Member suffixes (the part
after the key) are validated too: no path separators, no ``..``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

SCHEMA_VERSION: Literal[1] = 1
KNOWN_SCHEMA_VERSIONS = (1,)

KEY_RE = re.compile(r"^[a-z0-9_-]{1,200}$")
SUFFIX_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
SUBJECT_ID_RE = re.compile(r"^S[1-9][0-9]*$")
ATTRIBUTE_ID_RE = re.compile(r"^A[1-9][0-9]*$")
PLACEHOLDER_RE = re.compile(r"\{([A-Za-z][A-Za-z0-9]*)\}")

Modality = Literal["image", "video", "events"]
AttributeCategory = Literal["face", "hair", "clothing", "accessory", "object", "other"]
SubjectKind = Literal["person", "face", "animal", "object", "other"]
SubjectSource = Literal["detector", "model", "both"]
BBox = Annotated[list[float], Field(min_length=4, max_length=4)]


def validate_key(key: str) -> str:
    """Return ``key`` if it obeys the key rules, else raise ``ValueError``."""
    if not KEY_RE.match(key):
        raise ValueError(
            f"sample key {key!r} must be 1-200 characters of lowercase a-z, 0-9, '_' or '-'"
        )
    return key


def validate_member_suffix(suffix: str) -> str:
    """Member names are ``KEY.SUFFIX``; a suffix has no path parts and no ``..``."""
    if not SUFFIX_RE.match(suffix) or ".." in suffix:
        raise ValueError(f"member suffix {suffix!r} is not a plain dotted name")
    return suffix


_SLUG_BAD = re.compile(r"[^a-z0-9_-]+")


def make_input_key(relpath: str, prefix: str = "") -> str:
    """A stable key for an input: a readable slug of its file stem plus a hash of its path.

    ``relpath`` is the input's location relative to its source root (or the URI as
    given in a manifest), so the key is the same on every machine. ``prefix``
    separates sources whose relative paths could collide.
    """
    ident = f"{prefix}/{relpath}" if prefix else relpath
    digest = hashlib.sha1(ident.encode("utf-8")).hexdigest()[:12]
    stem = relpath.rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0].lower()
    slug = _SLUG_BAD.sub("_", stem).strip("_-")[:40] or "input"
    head = _SLUG_BAD.sub("_", prefix.lower()).strip("_-")[:20]
    return validate_key(f"{head}-{slug}-{digest}" if head else f"{slug}-{digest}")


def clip_key(input_key: str, index: int) -> str:
    """Key of the ``index``-th clip of a video input."""
    return validate_key(f"{input_key}_c{index:04d}")


def window_key(input_key: str, index: int) -> str:
    """Key of the ``index``-th window of an event sequence."""
    return validate_key(f"{input_key}_w{index:06d}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceInfo(_Model):
    """Where a sample came from and how it was decoded."""

    uri: str
    input_key: str
    modality: Modality
    sha256: str | None = None
    size: int | None = Field(default=None, ge=0, description="bytes of the input file")
    format: str | None = Field(default=None, description="container or image format")
    decoder: str | None = None
    width: int | None = Field(default=None, ge=1, description="original width, after rotation")
    height: int | None = Field(default=None, ge=1)
    frame_width: int | None = Field(default=None, ge=1, description="width of stored frames")
    frame_height: int | None = Field(default=None, ge=1)
    exif_orientation: int | None = None
    fps: float | None = None
    duration: float | None = Field(default=None, description="seconds")
    frame_count: int | None = Field(default=None, description="frames the container declares")
    frame_count_readable: int | None = Field(default=None, description="frames actually decodable")
    frame_indices: list[int] | None = None
    frame_times: list[float] | None = None
    clip_index: int | None = None
    time_span: list[float] | None = Field(default=None, description="[start, end] seconds")
    truncated: bool = False
    sequence: str | None = Field(default=None, description="event sequence id")
    window_index: int | None = Field(default=None, ge=0, description="window in its sequence")
    event_count: int | None = Field(default=None, ge=0, description="events in the window")


class TrackPoint(_Model):
    frame: int = Field(ge=0, description="position in the sample's stored frames")
    bbox: BBox


class Subject(_Model):
    """A detected subject. Boxes are normalized ``[x0, y0, x1, y1]`` in the stored frame."""

    id: str
    kind: SubjectKind
    bbox: BBox
    frame: int = Field(default=0, ge=0, description="stored frame the bbox and crop come from")
    face_bbox: BBox | None = None
    score: float | None = None
    detector: str | None = None
    source: SubjectSource = Field(
        default="detector", description="who found it: the detector, the model, or both")
    crop: str | None = Field(default=None, description="crop member suffix, e.g. 's1.jpg'")
    track: list[TrackPoint] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not SUBJECT_ID_RE.match(v):
            raise ValueError(f"subject id {v!r} must look like S1, S2, ...")
        return v

    def box_on(self, frame: int) -> list[float] | None:
        """The subject's box on stored frame ``frame``: its own, a track point's, or None."""
        if self.frame == frame:
            return self.bbox
        return next((p.bbox for p in self.track if p.frame == frame), None)

    @field_validator("crop")
    @classmethod
    def _crop(cls, v: str | None) -> str | None:
        if v is not None and v != v.lower():
            raise ValueError(f"crop member suffix {v!r} must be lowercase (webdataset lowercases)")
        return None if v is None else validate_member_suffix(v)


class Attribute(_Model):
    id: str
    text: str = Field(min_length=1)
    category: AttributeCategory
    bbox: BBox | None = None
    frame: int | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not ATTRIBUTE_ID_RE.match(v):
            raise ValueError(f"attribute id {v!r} must look like A1, A2, ...")
        return v


class Relation(_Model):
    subject: str
    predicate: str = Field(min_length=1)
    object: str
    confidence: float = Field(default=1.0, ge=0.0, le=1.0)
    weight: float | None = Field(default=None, ge=0.0, description="strength, e.g. excitation")

    @model_serializer(mode="wrap")
    def _drop_unset_weight(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict) and data.get("weight") is None:
            data.pop("weight", None)
        return data


class Provenance(_Model):
    """Who produced the annotations. A heuristic says so: ``model`` stays None."""

    backend: str
    model: str | None = None
    prompt_version: str | None = None
    method: str | None = Field(default=None, description="what a non-model backend computed")
    latency_s: float | None = None
    relshard_version: str


class SampleRecord(_Model):
    """The ``KEY.json`` member of a sample."""

    schema_version: Literal[1] = SCHEMA_VERSION
    key: str
    source: SourceInfo
    subjects: list[Subject] = Field(default_factory=list)
    attributes: list[Attribute] = Field(default_factory=list)
    relations: list[Relation] = Field(default_factory=list)
    caption: str = ""
    relational_caption: str = ""
    provenance: Provenance
    extra: dict[str, Any] = Field(default_factory=dict, description="manifest columns")
    warnings: list[str] = Field(default_factory=list)

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        return validate_key(v)

    @model_validator(mode="after")
    def _references(self) -> SampleRecord:
        subject_ids = [s.id for s in self.subjects]
        attribute_ids = [a.id for a in self.attributes]
        for ids, what in ((subject_ids, "subject"), (attribute_ids, "attribute")):
            if len(set(ids)) != len(ids):
                raise ValueError(f"duplicate {what} ids in {ids}")
        known = set(subject_ids) | set(attribute_ids)
        for rel in self.relations:
            if rel.subject not in subject_ids:
                raise ValueError(f"relation subject {rel.subject!r} is not a known subject")
            if rel.object not in known:
                raise ValueError(f"relation object {rel.object!r} is not a known subject/attribute")
        for name in PLACEHOLDER_RE.findall(self.relational_caption):
            if name not in known:
                raise ValueError(f"relational caption placeholder {{{name}}} has no entity")
        return self


# The one table of reasons a later run may cure by itself: an outage, a timeout, a
# crash of the worker (not of the input's own decoder logic). ``relshard run SPEC
# --retry-rejects`` re-queues these by default; any other reason can be named
# explicitly. Rejects files written before the ``retryable`` column existed are read
# through this table too. Not retryable: what is wrong with the input itself
# (corrupt, truncated, empty, unsupported, a bomb), an answer still invalid after the
# re-asks, and ``out_of_memory`` (the cap is ``decode.max_memory_mb``, part of the
# spec: the same spec hits it again; name it to retry after memory was the problem).
RETRYABLE_REASONS: frozenset[str] = frozenset({
    "backend_unavailable",  # 429/5xx/timeouts/connection errors after the backend's retries
    "timeout",  # an isolated decode overran decode.timeout_s (a loaded node, a slow mount)
    "worker_crash",  # the decode child died (killed, a native crash) after crash_retries
    "annotator_error",  # an annotator raised (a backend bug or a dropped connection)
    "vanished",  # listed, then gone before it was read (a folder being rewritten)
})


def is_retryable_reason(reason: str) -> bool:
    """Whether a reject of ``reason`` may succeed when simply run again."""
    return reason in RETRYABLE_REASONS


class Reject(_Model):
    """One rejected input: a row of the rejects ledger.

    ``retryable`` says whether running the input again may succeed; when not given it
    follows :data:`RETRYABLE_REASONS`.
    """

    input_key: str
    uri: str
    stage: str
    reason: str
    detail: str = ""
    raw_output: str | None = None
    attempts: int = 1
    retryable: bool | None = None

    @model_validator(mode="after")
    def _default_retryable(self) -> Reject:
        if self.retryable is None:
            self.retryable = is_retryable_reason(self.reason)
        return self
