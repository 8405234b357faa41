"""Annotator backends by name: a spec's ``annotate.backend`` selects one here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relshard.errors import SpecError
from relshard.workers.annotate.base import Annotator

_FACTORIES: dict[str, Callable[[Any], Annotator]] = {}


def register_backend(name: str, factory: Callable[[Any], Annotator]) -> None:
    """Register ``factory(annotate_spec) -> Annotator`` under ``name``."""
    _FACTORIES[name] = factory


def build_annotator(spec: Any) -> Annotator:
    if spec.backend not in _FACTORIES:
        _register_builtin()
    try:
        factory = _FACTORIES[spec.backend]
    except KeyError:
        known = ", ".join(sorted(_FACTORIES))
        raise SpecError(
            f"Unknown annotate.backend {spec.backend!r}; use one of: {known}."
        ) from None
    return factory(spec)


def _register_builtin() -> None:
    from relshard.workers.annotate.heuristic import HeuristicAnnotator

    _FACTORIES.setdefault("heuristic", HeuristicAnnotator)
    _FACTORIES.setdefault("openai", _openai)
    _FACTORIES.setdefault("transformers", _transformers)


def _openai(spec: Any) -> Annotator:
    from relshard.workers.annotate.openai_backend import OpenAIAnnotator

    return OpenAIAnnotator(spec)


def _transformers(spec: Any) -> Annotator:
    from relshard.workers.annotate.hf_backend import TransformersAnnotator

    return TransformersAnnotator(spec)
