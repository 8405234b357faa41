"""Annotator backends by name: a spec's ``annotate.backend`` selects one here.

Built in: ``heuristic``, ``openai``, ``transformers`` (their settings are the spec's
discriminated union). A plugin module adds one with :func:`register_backend`, giving the
pydantic model of its settings (an :class:`~relshard.spec.AnnotatorConfig` subclass,
exported as ``relshard.plugins.AnnotatorConfig``): the spec validates ``annotate`` against
it when ``backend`` names the plugin, and the factory gets the validated instance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relshard.errors import SpecError
from relshard.plugins import record_annotator_config
from relshard.spec import (
    AnnotatorConfig,
    HeuristicAnnotate,
    OpenAIAnnotate,
    TransformersAnnotate,
)
from relshard.workers.annotate.base import Annotator

_FACTORIES: dict[str, Callable[[Any], Annotator]] = {}


def register_backend(name: str, factory: Callable[[Any], Annotator], *,
                     config_model: type[AnnotatorConfig] | None = None) -> None:
    """Register ``factory(annotate_config) -> Annotator`` under ``name``.

    ``config_model`` validates the spec's ``annotate`` mapping for a plugin backend
    (default: :class:`AnnotatorConfig`, which takes ``backend``, ``batch_size`` and
    ``resources``); built-in names keep the spec's own models and take none.
    """
    record_annotator_config(name, config_model)
    _FACTORIES[name] = factory


def build_annotator(
    spec: HeuristicAnnotate | OpenAIAnnotate | TransformersAnnotate | AnnotatorConfig,
) -> Annotator:
    if spec.backend not in _FACTORIES:
        _register_builtin()
    try:
        factory = _FACTORIES[spec.backend]
    except KeyError:
        known = ", ".join(sorted(_FACTORIES))
        raise SpecError(
            f"Unknown annotate.backend {spec.backend!r}; use one of: {known} (or list the "
            f"plugin module that registers it in plugins)."
        ) from None
    return factory(spec)


def _register_builtin() -> None:
    from relshard.workers.annotate.heuristic import HeuristicAnnotator

    _FACTORIES.setdefault("heuristic", HeuristicAnnotator)
    _FACTORIES.setdefault("openai", _openai)
    _FACTORIES.setdefault("transformers", _transformers)


def _openai(spec: OpenAIAnnotate) -> Annotator:
    from relshard.workers.annotate.openai_backend import OpenAIAnnotator

    return OpenAIAnnotator(spec)


def _transformers(spec: TransformersAnnotate) -> Annotator:
    from relshard.workers.annotate.hf_backend import TransformersAnnotator

    return TransformersAnnotator(spec)
