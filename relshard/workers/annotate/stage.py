"""The annotate stage: runs an Annotator backend over the samples of each input."""

from __future__ import annotations

import traceback
from typing import Any

from relshard.plugins import import_plugins
from relshard.shards.item import SampleDraft, WorkItem
from relshard.workers.annotate.base import Annotation, AnnotationFailure, Annotator
from relshard.workers.annotate.registry import build_annotator
from relshard.workers.stage import Stage

STAGE = "annotate"


class AnnotateStage(Stage):
    name = STAGE

    def __init__(self, spec: Any, plugins: list[str] | None = None) -> None:
        self.spec = spec
        self.plugins = list(plugins or [])
        self.batch_size = spec.batch_size
        self.resources = spec.resources
        if getattr(spec, "backend", None) == "transformers":
            gpus = spec.num_gpus if spec.num_gpus is not None else (
                1.0 if spec.device == "cuda" else spec.resources.num_gpus)
            self.resources = spec.resources.model_copy(update={"num_gpus": gpus})
        self.stateful = spec.backend != "heuristic"
        self._annotator: Annotator | None = None

    def config_key(self) -> str:
        return f"{type(self).__qualname__}:{self.spec.model_dump_json()}:{','.join(self.plugins)}"

    def setup(self) -> None:
        if self._annotator is None:
            import_plugins(self.plugins)  # once per process: a plugin backend registers
            self._annotator = build_annotator(self.spec)
            self._annotator.setup()

    def teardown(self) -> None:
        close = getattr(self._annotator, "teardown", None)
        if callable(close):
            close()
        self._annotator = None

    def process_batch(self, items: list[WorkItem]) -> list[WorkItem]:
        self.setup()
        assert self._annotator is not None
        live = [it for it in items if not it.rejected]
        samples: list[SampleDraft] = [s for it in live for s in it.samples]
        if not samples:
            return items
        try:
            results = self._annotator.annotate(samples)
        except Exception as exc:  # a backend bug: reject the batch's inputs, keep going
            detail = "".join(traceback.format_exception_only(type(exc), exc))[-2000:]
            for it in live:
                it.fail(STAGE, "annotator_error", detail)
            return items
        if len(results) != len(samples):
            raise RuntimeError(
                f"annotator {self._annotator.name!r} returned {len(results)} results "
                f"for {len(samples)} samples"
            )
        by_sample = dict(zip((id(s) for s in samples), results, strict=True))
        for it in live:
            for sample in it.samples:
                res = by_sample[id(sample)]
                if isinstance(res, AnnotationFailure):
                    it.fail(STAGE, res.reason, res.detail, raw_output=res.raw_output,
                            attempts=res.attempts)
                    break
                _apply(sample, res)
        return items


def _apply(sample: SampleDraft, ann: Annotation) -> None:
    if ann.subjects is not None:  # the model's subjects: drop crops no subject names now
        named = {s.crop for s in ann.subjects if s.crop}
        for old in sample.subjects:
            if old.crop and old.crop not in named:
                sample.members.pop(old.crop, None)
        sample.subjects = ann.subjects
    for suffix, data in ann.members.items():
        sample.add_member(suffix, data)
    sample.attributes = ann.attributes
    sample.relations = ann.relations
    sample.caption = ann.caption
    sample.relational_caption = ann.relational_caption
    sample.provenance = ann.provenance
    sample.warnings.extend(ann.warnings)
