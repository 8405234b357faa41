"""The annotation engine: prompts, calls, parsing, re-asks and the leak check, per sample.

It is backend-neutral: a :class:`ChatClient` answers one :class:`ChatRequest` with
text. Every sample runs as its own coroutine through its steps (``single``, or
``caption`` → ``groups`` → ``relations`` → ``relcaption``), so a server backend
keeps many requests in flight and a local model batches the requests that are
pending together.

Per step: ask; extract and validate the answer; if invalid, ask once more
(``invalid_retries``) showing the model the validation error; if still invalid,
reject the input with the raw answer kept for the rejects ledger. Predicates are
mapped onto the spec's relation vocabulary (``annotate.predicates``); an unknown
one makes the answer invalid. Then the relational caption is checked for leaks
(attribute words and subject names, by stem; attribute words in predicates) and,
per ``on_leak``, re-asked, rejected or kept with a warning. Answers go through
the content-addressed response cache when one is configured.

With ``annotate.subjects`` ``both`` or ``model`` the model also lists the subjects
it sees, with boxes: in the ``single`` answer itself, or in a ``ground`` step that
runs before the staged steps. Its boxes are checked, merged with the detector's
by IoU and renumbered, and the answer's references renamed, by
:mod:`relshard.workers.annotate.grounding` (which explains the choices); the
annotation then carries the sample's new subject list and the crops of the
subjects only the model found.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING, Any, Protocol, cast

from relshard import __version__
from relshard.errors import BackendError, RelshardError, SpecError
from relshard.rawtext import clip_raw_output
from relshard.record import Provenance, Subject
from relshard.shards.item import SampleDraft
from relshard.workers.annotate import grounding as G
from relshard.workers.annotate import parsing as P
from relshard.workers.annotate.anonymize import find_leaks, leak_message
from relshard.workers.annotate.base import Annotation, AnnotationFailure
from relshard.workers.annotate.cache import ResponseCache, cache_key
from relshard.workers.annotate.predicates import PredicateVocabulary
from relshard.workers.annotate.prompts import GROUND_STEPS, STAGED_STEPS, ChatRequest, PromptSet
from relshard.workers.annotate.visual import VisualError, sample_images

if TYPE_CHECKING:
    from relshard.spec import OpenAIAnnotate, TransformersAnnotate


class ChatClient(Protocol):
    """What a model backend gives the engine."""

    async def complete(self, request: ChatRequest, schema: dict[str, Any]) -> str: ...


class AnswerError(BackendError):
    """A server answer that cannot be used (too large, not a completion); not retried.

    ``reason`` becomes the reject's reason; ``raw`` (clipped) its ``raw_output``.
    """

    def __init__(self, message: str, reason: str = "backend_error",
                 raw: str | None = None) -> None:
        RelshardError.__init__(self, message, reason, raw)  # args pickle and rebuild it
        self.message, self.retryable, self.reason = message, False, reason
        self.raw = clip_raw_output(raw)


class _Failed(Exception):
    def __init__(self, reason: str, detail: str, raw: str | None = None, attempts: int = 1):
        raw = clip_raw_output(raw)  # every raw_output of a reject is bounded here
        super().__init__(reason, detail, raw, attempts)
        self.reason, self.detail, self.raw, self.attempts = reason, detail, raw, attempts


class AnnotationEngine:
    """Runs the prompt steps of a model backend's spec (``_ModelAnnotate``) over samples."""

    def __init__(self, cfg: OpenAIAnnotate | TransformersAnnotate, client: ChatClient, *,
                 backend: str, model: str,
                 params: dict[str, Any], max_active: int | None = None) -> None:
        self.cfg = cfg
        self.client = client
        self.backend = backend
        self.model = model
        self.prompts = PromptSet(cast(str, cfg.prompt_version))  # the spec resolves None
        self.prompt_version = f"{self.prompts.version}/{cfg.prompt_mode}"
        self.subjects_mode: str = getattr(cfg, "subjects", "detector")
        if self.subjects_mode != "detector":  # the model lists subjects (see grounding.py)
            if not self.prompts.can_ground:
                raise SpecError(f"prompt_version {cfg.prompt_version} cannot ask the model for "
                                f"subjects: use v2 or later, or annotate.subjects: detector.")
            self.prompt_version += f"/subjects={self.subjects_mode}"
        self.identity = {"backend": backend, "model": model, "params": params,
                         "prompt_version": self.prompts.version}
        self.cache = ResponseCache(cfg.cache) if cfg.cache else None
        self.calls = 0
        self.max_active = max_active
        self.vocabulary = PredicateVocabulary.from_spec(getattr(cfg, "predicates", None))
        self.limits = {name: int(getattr(cfg, f"max_{name}")) for name in
                       ("attributes", "relations") if getattr(cfg, f"max_{name}", None)}
        self._predicate_list = ", ".join(sorted(self.vocabulary.words))

    async def annotate_all(self, samples: list[SampleDraft]
                           ) -> list[Annotation | AnnotationFailure]:
        """All samples concurrently; at most ``max_active`` at a time when set.

        The bound keeps image preparation interleaved with the requests in flight,
        instead of preparing every sample of a large batch before the first answer.
        """
        if self.max_active is None:
            return list(await asyncio.gather(*(self.annotate_one(s) for s in samples)))
        gate = asyncio.Semaphore(self.max_active)

        async def gated(sample: SampleDraft) -> Annotation | AnnotationFailure:
            async with gate:
                return await self.annotate_one(sample)

        return list(await asyncio.gather(*(gated(s) for s in samples)))

    async def annotate_one(self, sample: SampleDraft) -> Annotation | AnnotationFailure:
        start = time.perf_counter()
        if not sample.frames:
            ann = Annotation(warnings=["no frames: not annotated by the model"])
        else:
            try:
                ann = await self._annotate(sample)
            except VisualError as err:
                return AnnotationFailure(reason="frame_unreadable", detail=str(err))
            except _Failed as f:
                return AnnotationFailure(reason=f.reason, detail=f.detail, raw_output=f.raw,
                                         attempts=f.attempts)
        ann.provenance = Provenance(
            backend=self.backend, model=self.model, prompt_version=self.prompt_version,
            latency_s=round(time.perf_counter() - start, 6), relshard_version=__version__)
        return ann

    async def _images(self, sample: SampleDraft) -> tuple[list[bytes], list[int]]:
        # OpenCV releases the GIL: preparing images in a thread keeps the loop answering.
        cfg = self.cfg
        return await asyncio.to_thread(
            sample_images, sample, marks=cfg.subject_marks,
            frames_per_request=cfg.frames_per_request, max_side=cfg.image_max_side)

    async def _annotate(self, sample: SampleDraft) -> Annotation:
        cfg = self.cfg
        grounding = self.subjects_mode != "detector"
        if self.subjects_mode == "model":  # detector subjects are ignored entirely
            sample = dataclasses.replace(sample, subjects=[])
        images, positions = await self._images(sample)
        subjects = sample.subjects
        state: dict[str, Any] = {"attributes": [], "relations": [], "names": {}}
        steps: tuple[str, ...] = ("single",) if cfg.prompt_mode == "single" else STAGED_STEPS
        crops: dict[str, bytes] | None = None
        if grounding:
            state[G.STATE_KEY] = G.GroundContext(
                mode=self.subjects_mode, base=list(subjects),
                images=G.sent_images(images, positions))
            if cfg.prompt_mode == "staged":
                steps = ("ground", *steps)
        last: tuple[ChatRequest, str] | None = None
        for step in steps:
            if step in ("groups", "relations") and not subjects:
                continue
            if step == "relcaption" and not subjects:
                state["relational_caption"] = ""
                continue
            view = _grouped_view(state) if step == "relcaption" else state
            req = self.prompts.request(step, images, positions, subjects=subjects, state=view,
                                       marks=cfg.subject_marks, ground=grounding,
                                       predicates=self._predicate_list)
            part, req, text = await self._ask_valid(step, req, subjects, state)
            state.update(part)
            subjects = state.get("subjects", subjects)
            if step == "ground":  # later steps see the merged subjects marked, as detected ones
                crops = await asyncio.to_thread(G.model_crops, sample.frames, subjects)
                if crops:
                    images, positions = await self._images(dataclasses.replace(
                        sample, subjects=subjects, members={**sample.members, **crops}))
            last = (req, text)
        warnings = await self._check_leaks(state, subjects, last)
        subjects = state.get("subjects", subjects)  # a leak re-ask may list them anew
        if grounding and (crops is None or cfg.prompt_mode == "single"):
            crops = await asyncio.to_thread(G.model_crops, sample.frames, subjects)
        attributes, relations = P.to_record_parts(subjects, state)
        return Annotation(attributes=attributes, relations=relations,
                          caption=state.get("caption", "").strip(),
                          relational_caption=state.get("relational_caption", "").strip(),
                          warnings=list(state.get("ground_warnings", [])) + warnings,
                          subjects=list(subjects) if grounding else None,
                          members=crops or {})

    async def _check_leaks(self, state: dict[str, Any], subjects: list[Subject],
                           last: tuple[ChatRequest, str] | None) -> list[str]:
        leaks = self._leaks(state)
        if not leaks:
            return []
        if self.cfg.on_leak == "keep":
            return [f"anonymization_leak: {leak_message(leaks)}"]
        if self.cfg.on_leak == "retry" and last is not None:
            req = self.prompts.follow_up(last[0], clip_raw_output(last[1]) or "", "leak",
                                         leaked=leak_message(leaks))
            part, _, text = await self._ask_valid(req.step, req, subjects, state)
            trial = {**state, **part}
            again = self._leaks(trial)
            if not again:
                state.update(part)
                return [f"anonymization_leak_fixed: {leak_message(leaks)}"]
            raise _Failed("anonymization_leak", f"relational caption contains "
                          f"{leak_message(again)} after a re-ask", raw=text, attempts=2)
        raise _Failed("anonymization_leak", f"relational caption contains {leak_message(leaks)}",
                      raw=state.get("relational_caption"))

    @staticmethod
    def _leaks(state: dict[str, Any]) -> list[str]:
        predicates = [r["predicate"] for r in state.get("relations", [])]
        predicates += [a["predicate"] for a in state.get("attributes", [])]
        return find_leaks(state.get("relational_caption", ""), state.get("attributes", []),
                          names=state.get("names", {}).values(), predicates=predicates)

    async def _ask_valid(self, step: str, req: ChatRequest, subjects: list[Subject],
                         state: dict[str, Any]) -> tuple[dict[str, Any], ChatRequest, str]:
        """Ask until the answer is valid or the re-asks are spent."""
        for attempt in range(self.cfg.invalid_retries + 1):
            text = await self._call(req)
            try:
                part = P.parse_step(step, text, self._lists_subjects(step), self.limits)
                self.vocabulary.normalize_answer(part)  # unknown predicates are invalid
                ground = state.get(G.STATE_KEY)
                if ground is not None and step in GROUND_STEPS:  # merge, rename references
                    part = G.ground_answer(part, ground)
                _check(step, part, part.get("subjects", subjects), state)
                return part, req, text
            except P.InvalidAnswer as err:
                if attempt == self.cfg.invalid_retries:
                    raise _Failed("invalid_output", f"{step}: {err}", raw=text,
                                  attempts=attempt + 1) from None
                req = self.prompts.follow_up(req, clip_raw_output(text) or "", "retry",
                                             error=str(err))
        raise AssertionError("unreachable")

    async def _call(self, req: ChatRequest) -> str:
        key = cache_key(self.identity, req) if self.cache else ""
        if self.cache:
            hit = self.cache.get(key)
            if hit is not None:
                return hit
        try:
            self.calls += 1
            text = await self.client.complete(
                req, P.json_schema(req.step, self._lists_subjects(req.step)))
        except AnswerError as err:
            raise _Failed(err.reason, str(err), raw=err.raw) from None
        except BackendError as err:
            reason = "backend_unavailable" if err.retryable else "backend_error"
            raise _Failed(reason, str(err)) from None
        if self.cache:
            self.cache.put(key, text, {"step": req.step, "model": self.model})
        return text


    def _lists_subjects(self, step: str) -> bool:
        """Whether ``step``'s answer lists subjects (``annotate.subjects`` not detector)."""
        return self.subjects_mode != "detector" and step in GROUND_STEPS


def _grouped_view(state: dict[str, Any]) -> dict[str, Any]:
    """State for the relcaption prompt: the grouping relations listed with the others."""
    grouping = [{"subject": a["subject"], "predicate": a["predicate"], "object": a["id"]}
                for a in state.get("attributes", [])]
    return {**state, "relations": grouping + list(state.get("relations", []))}


def _check(step: str, part: dict[str, Any], subjects: list[Subject],
           state: dict[str, Any]) -> None:
    attrs = part.get("attributes", state.get("attributes", []))
    rels = part.get("relations", state.get("relations", []))
    if step in ("single", "groups"):
        P.check_groups(attrs, subjects)
    if step in ("single", "relations"):
        P.check_relations(rels, subjects, attrs)
    if step in ("single", "relcaption"):
        P.check_relational_caption(part.get("relational_caption", ""), subjects, attrs, rels)
