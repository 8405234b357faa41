"""The Annotator protocol: what every annotation backend provides.

A backend takes a batch of decoded, detected samples and returns, per sample, an
:class:`Annotation` or an :class:`AnnotationFailure` (which rejects the input,
keeping the raw model output). Prompt rendering and output parsing live outside
the backends so they can be tested on recorded outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from relshard.record import Attribute, Provenance, Relation, Subject
from relshard.shards.item import SampleDraft


@dataclass
class Annotation:
    """A sample's annotation.

    ``subjects``: when not None, the sample's subjects from now on (the model listed
    subjects itself: merged with, or replacing, the detector's); ``members``: crops
    to add (suffix -> JPEG bytes) for subjects the detector did not crop.
    """

    attributes: list[Attribute] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)
    caption: str = ""
    relational_caption: str = ""
    provenance: Provenance | None = None
    warnings: list[str] = field(default_factory=list)
    subjects: list[Subject] | None = None
    members: dict[str, bytes] = field(default_factory=dict)


@dataclass
class AnnotationFailure:
    reason: str
    detail: str = ""
    raw_output: str | None = None
    attempts: int = 1


@runtime_checkable
class Annotator(Protocol):
    name: str

    def setup(self) -> None: ...

    def annotate(self, samples: list[SampleDraft]) -> list[Annotation | AnnotationFailure]: ...


def preflight(annotator: Annotator) -> None:
    """Run a backend's optional ``preflight()``: cheap checks in the driver, before any work.

    A backend that talks to a server or loads files defines ``preflight()`` to raise a
    :class:`relshard.errors.RelshardError` (one sentence) when the server is unreachable,
    the model is not served, or the model folder is missing. It must not load models.
    """
    check = getattr(annotator, "preflight", None)
    if callable(check):
        check()
