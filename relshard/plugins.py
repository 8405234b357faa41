"""Plugins: modules a spec's ``plugins:`` lists, imported in every process that runs a stage.

A plugin is an ordinary Python module. Importing it registers what it adds, by name:

- a decoder, by file extension: :func:`register_decoder` (``fn(ref, cfg)`` returns
  :class:`~relshard.workers.decode.base.DecodedClip` s);
- a detector backend, selected by ``detect.backend``: :func:`register_detector`, with an
  optional options model (a :class:`DetectorOptions` subclass) that validates
  ``detect.options``;
- an annotator backend, selected by ``annotate.backend``: :func:`register_backend`, with
  its settings model (an :class:`AnnotatorConfig` subclass) that validates the whole
  ``annotate`` mapping.

A spec names its plugin modules in ``plugins:``. :func:`import_plugins` imports them,
once per process: validating a spec does it first (so ``annotate`` and ``detect`` are
checked against the models the plugins registered), then the driver, the isolated decode
child, and every stage's Ray worker do it before their first batch. A module that cannot
be imported is a :class:`~relshard.errors.SpecError` naming it and the fix (exit 2).
A plugin module must therefore be importable everywhere the run runs: installed in the
environment, or on ``PYTHONPATH`` (Ray adds the driver's working directory to its local
workers' path; on a cluster ship it with the job's ``runtime_env``).
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from relshard.errors import SpecError
from relshard.spec import (
    BUILTIN_ANNOTATORS,
    BUILTIN_DETECTORS,
    MODULE_NAME,
    AnnotatorConfig,
    DetectSpec,
)

if TYPE_CHECKING:
    from relshard.shards.item import InputRef
    from relshard.spec import DecodeSpec
    from relshard.workers.annotate.base import Annotator
    from relshard.workers.decode.base import DecodedClip
    from relshard.workers.decode.formats import DecoderEntry
    from relshard.workers.detect.backends import DetectorBackend

__all__ = [
    "AnnotatorConfig",
    "DetectorOptions",
    "detector_options",
    "import_plugins",
    "register_backend",
    "register_decoder",
    "register_detector",
]

BACKEND_NAME = re.compile(r"^[a-z0-9_-]+$")


class DetectorOptions(BaseModel):
    """Base of a plugin detector's options: ``detect.options``, validated by the subclass
    given to ``register_detector(..., config_model=...)``. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


# -- which plugin names exist, and the models that validate their settings --------------

_ANNOTATOR_CONFIGS: dict[str, type[AnnotatorConfig]] = {}
_DETECTOR_OPTIONS: dict[str, type[DetectorOptions] | None] = {}


def _check_name(kind: str, name: str) -> None:
    if not BACKEND_NAME.match(name):
        raise ValueError(f"{kind} name {name!r} must match {BACKEND_NAME.pattern}")


def record_annotator_config(name: str, config_model: type[AnnotatorConfig] | None) -> None:
    """Internal: remember the settings model of annotator backend ``name``.

    Built-in names keep their own models (the spec's discriminated union); a plugin
    backend without a model gets :class:`AnnotatorConfig` itself.
    """
    _check_name("annotator backend", name)
    if config_model is not None and not (isinstance(config_model, type)
                                         and issubclass(config_model, AnnotatorConfig)):
        raise TypeError(f"config_model of annotator backend {name!r} must subclass "
                        f"relshard.plugins.AnnotatorConfig")
    if name in BUILTIN_ANNOTATORS:
        if config_model is not None:
            raise ValueError(f"annotator backend {name!r} is built in: its settings model is "
                             f"the spec's own; register without config_model")
        return
    _ANNOTATOR_CONFIGS[name] = config_model or AnnotatorConfig


def record_detector_options(name: str, config_model: type[DetectorOptions] | None) -> None:
    """Internal: remember detector backend ``name`` and the model of its ``detect.options``."""
    _check_name("detector backend", name)
    if config_model is not None and not (isinstance(config_model, type)
                                         and issubclass(config_model, DetectorOptions)):
        raise TypeError(f"config_model of detector backend {name!r} must subclass "
                        f"relshard.plugins.DetectorOptions")
    _DETECTOR_OPTIONS[name] = config_model


def annotator_config(name: str) -> type[AnnotatorConfig] | None:
    """The settings model of plugin annotator backend ``name``; None if none registered it."""
    return _ANNOTATOR_CONFIGS.get(name)


def detector_known(name: str) -> bool:
    """Whether ``detect.backend`` may name ``name``: built in, or registered by a plugin."""
    return name in BUILTIN_DETECTORS or name in _DETECTOR_OPTIONS


def known_detectors() -> list[str]:
    return sorted({*BUILTIN_DETECTORS, *_DETECTOR_OPTIONS})


def detector_options_model(name: str) -> type[DetectorOptions] | None:
    return _DETECTOR_OPTIONS.get(name)


def detector_options(cfg: DetectSpec) -> DetectorOptions:
    """``cfg.options`` as the model the backend ``cfg.backend`` registered (for its factory).

    A backend registered without an options model gets an empty :class:`DetectorOptions`.
    """
    model = _DETECTOR_OPTIONS.get(cfg.backend) or DetectorOptions
    return model.model_validate(cfg.options)


# -- importing the modules ---------------------------------------------------------------

_IMPORTED: set[str] = set()
_LOCK = threading.Lock()


def import_plugins(names: Iterable[str]) -> None:
    """Import the plugin modules ``names`` in this process, once each (cached, thread-safe).

    Call it wherever a stage starts work; it costs a set lookup after the first call.
    A module that cannot be imported raises a one-sentence :class:`SpecError`.
    """
    for name in names:
        if name in _IMPORTED:
            continue
        with _LOCK:
            if name in _IMPORTED:
                continue
            _import_one(name)
            _IMPORTED.add(name)


def _import_one(name: str) -> None:
    if not MODULE_NAME.match(name):
        raise SpecError(f"Plugin {name!r} is not a module name: list dotted module names "
                        f"in plugins, e.g. mypackage.relshard_plugin.")
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise SpecError(
                f"Plugin module {name!r} (in plugins) was not found: install it, or put the "
                f"folder that holds it on PYTHONPATH, wherever the run runs.") from None
        raise SpecError(
            f"Plugin module {name!r} (in plugins) could not be imported because the module "
            f"{exc.name!r} it needs is missing: install that in the same environment.") from None
    except SpecError:
        raise
    except Exception as exc:
        lines = str(exc).splitlines()
        what = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
        raise SpecError(f"Plugin module {name!r} (in plugins) failed while being imported "
                        f"({what}): fix the module, or remove it from plugins.") from None


def imported_plugins() -> list[str]:
    """The plugin modules this process has imported through :func:`import_plugins`."""
    return sorted(_IMPORTED)


# -- one import for plugin authors -------------------------------------------------------

def register_backend(name: str, factory: Callable[[Any], Annotator], *,
                     config_model: type[AnnotatorConfig] | None = None) -> None:
    """Register annotator backend ``name``: ``factory(config) -> Annotator``.

    ``config_model`` (an :class:`AnnotatorConfig` subclass) validates the spec's
    ``annotate`` mapping when its ``backend`` is ``name``; the factory gets the instance.
    """
    from relshard.workers.annotate.registry import register_backend as register

    register(name, factory, config_model=config_model)


def register_detector(name: str, factory: Callable[[DetectSpec], DetectorBackend], *,
                      config_model: type[DetectorOptions] | None = None) -> None:
    """Register detector backend ``name``: ``factory(detect_spec) -> DetectorBackend``.

    ``config_model`` (a :class:`DetectorOptions` subclass) validates ``detect.options``;
    the factory reads them typed with :func:`detector_options`.
    """
    from relshard.workers.detect.backends import register_detector as register

    register(name, factory, config_model=config_model)


def register_decoder(name: str, extensions: Iterable[str],
                     fn: Callable[[InputRef, DecodeSpec], list[DecodedClip]], *,
                     modality: str | None = None) -> DecoderEntry:
    """Register decoder ``name`` for ``extensions``: ``fn(ref, cfg) -> list[DecodedClip]``.

    ``modality`` ('image', 'video') lets a source that declares another refuse the input.
    """
    from relshard.workers.decode import register_decoder as register

    return register(name, extensions, fn, modality=modality)
