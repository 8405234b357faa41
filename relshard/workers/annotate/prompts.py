"""Versioned prompt files and the chat requests built from them.

Prompts live in ``prompts/`` as ``VERSION.NAME.txt`` (``v1.single.txt``, ...) with
``$name`` fields (``string.Template``: braces stay free for placeholders like
``{S1}``). The ``single`` mode asks for everything in one request; the ``staged``
mode asks in turn for the caption, the subject-attribute groups, the relations,
and the anonymized relational caption, each request carrying what earlier steps
found. A request is backend-neutral: text parts and references to images, which
each backend turns into its own wire format.

From ``v2`` a version may also ship ``ground`` and ``subjects`` prompts: with
``annotate.subjects`` other than ``detector`` the ``subjects`` text (the request
to list the subjects the detector missed, ids from ``S(n+1)``) fills the
``$subjects_task`` field of the ``single`` prompt, or of the ``ground`` step that
precedes the staged steps. ``v1`` has neither and its files never change, so its
requests, digest and cached answers stay exactly as they were.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from string import Template
from typing import Any

from relshard.errors import SpecError
from relshard.record import Subject

PROMPT_NAMES = ("system", "single", "caption", "groups", "relations", "relcaption", "retry",
                "leak")
GROUND_PROMPTS = ("ground", "subjects")  # from v2: the model lists subjects itself
STAGED_STEPS = ("caption", "groups", "relations", "relcaption")
GROUND_STEPS = frozenset({"single", "ground"})  # the steps whose answer may list subjects
IMAGE_STEPS = frozenset({"single", "caption", "groups", "relations", "ground"})


@dataclass
class ChatRequest:
    """One chat call: messages whose content is text or ``{"type": "image", "index": i}``."""

    step: str
    messages: list[dict[str, Any]]
    images: list[bytes] = field(default_factory=list)

    def fingerprint(self) -> dict[str, Any]:
        """The request's content with images as digests (what the cache key hashes)."""
        return {"step": self.step, "messages": self.messages,
                "images": [hashlib.sha256(b).hexdigest() for b in self.images]}


class PromptSet:
    """The prompt files of one version; ``version`` names them in provenance and cache keys."""

    def __init__(self, version: str = "v1") -> None:
        folder = resources.files("relshard.workers.annotate") / "prompts"
        self.texts: dict[str, str] = {}
        for name in PROMPT_NAMES:
            path = folder / f"{version}.{name}.txt"
            if not path.is_file():
                raise SpecError(f"Prompt version {version!r} has no {name!r} prompt; "
                                f"use a version shipped in relshard/workers/annotate/prompts.")
            self.texts[name] = path.read_text(encoding="utf-8")
        for name in GROUND_PROMPTS:  # optional: a version without them cannot ground
            path = folder / f"{version}.{name}.txt"
            if path.is_file():
                self.texts[name] = path.read_text(encoding="utf-8")
        digest = hashlib.sha256(json.dumps(self.texts, sort_keys=True).encode()).hexdigest()
        self.version = f"{version}-{digest[:8]}"

    @property
    def can_ground(self) -> bool:
        """Whether this version can ask the model to list subjects (``ground``, ``subjects``)."""
        return all(name in self.texts for name in GROUND_PROMPTS)

    def render(self, name: str, **fields: str) -> str:
        return Template(self.texts[name]).safe_substitute(fields).strip()

    def request(self, step: str, images: list[bytes], positions: list[int], *,
                subjects: list[Subject], state: dict[str, Any], marks: str,
                ground: bool = False, predicates: str = "") -> ChatRequest:
        """The first request of ``step`` for one sample (images only where the step looks).

        ``ground``: the ``single``/``ground`` prompt asks the model to list the subjects
        the detector missed (``$subjects_task``, from the ``subjects`` prompt).
        ``predicates``: the relation vocabulary, for prompts that list it (``$predicates``,
        from v2 on).
        """
        task = ""
        if ground and step in GROUND_STEPS and self.can_ground:
            top = max((int(s.id[1:]) for s in subjects if s.id[1:].isdigit()), default=0)
            task = self.render("subjects", next_id=f"S{top + 1}")
        text = self.render(
            step,
            frames_note=_frames_note(positions, marks),
            subjects=_subject_lines(subjects, marks),
            attributes=_attribute_lines(state.get("attributes", [])),
            relations=_relation_lines(state.get("relations", [])),
            subjects_task=task,
            predicates=predicates,
        )
        parts: list[dict[str, Any]] = []
        sent = images if step in IMAGE_STEPS else []
        parts += [{"type": "image", "index": i} for i in range(len(sent))]
        parts.append({"type": "text", "text": text})
        messages: list[dict[str, Any]] = [{"role": "system", "content": self.render("system")},
                                          {"role": "user", "content": parts}]
        return ChatRequest(step=step, messages=messages, images=list(sent))

    def follow_up(self, req: ChatRequest, answer: str, name: str, **fields: str) -> ChatRequest:
        """``req`` continued with the model's answer and a correction (``retry``/``leak``)."""
        messages = [*req.messages, {"role": "assistant", "content": answer},
                    {"role": "user", "content": [{"type": "text",
                                                  "text": self.render(name, **fields)}]}]
        return ChatRequest(step=req.step, messages=messages, images=req.images)


def _frames_note(positions: list[int], marks: str) -> str:
    n_frames = sum(1 for p in positions if p >= 0)
    n_crops = len(positions) - n_frames
    head = "The image is" if n_frames == 1 else f"The {n_frames} images are frames of one clip,"
    head += " the scene to annotate." if n_frames == 1 else " in time order."
    if marks == "crops" and n_crops:
        head += f" The last {n_crops} images are the subject crops, in id order."
    return head


def _subject_lines(subjects: list[Subject], marks: str) -> str:
    if not subjects:
        return "(none detected)"
    lines = []
    for s in subjects:
        box = ", ".join(f"{v:.2f}" for v in s.bbox)
        where = f"frame {s.frame}, box [{box}]" if marks == "boxes" else f"box [{box}]"
        lines.append(f"{s.id}: {s.kind}, {where}")
    return "\n".join(lines)


def _attribute_lines(attrs: list[dict[str, Any]]) -> str:
    if not attrs:
        return "(none)"
    return "\n".join(f"{a['id']}: {a['text']} ({a['category']}, of {a['subject']})"
                     for a in attrs)


def _relation_lines(rels: list[dict[str, Any]]) -> str:
    if not rels:
        return "(none)"
    return "\n".join(f"{r['subject']} {r['predicate']} {r['object']}" for r in rels)
