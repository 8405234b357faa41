"""Optional packages: which extra brings what, and one sentence when a command lacks one.

``pip install relshard`` (the core) reads, streams, inspects and verifies shards:
``ShardStream``, ``ShardLoader`` (without DataLoader workers), ``relshard stats``,
``verify``, ``show``, ``export``. Everything else comes with an extra:

=============  ==========================================================================
``pipeline``   ``relshard run`` / ``submit`` / ``jobs`` / ``build-benchmark``: Ray, decoders
               (av, decord), detectors (OpenCV, onnxruntime), numba, the annotator clients
``train``      ``relshard train``, ``ShardLoader(num_workers>0)``: torch (a range, not a pin)
``hf``         the transformers annotator backend (with torch)
``stats``      ``relshard stats --html`` plots (matplotlib)
``s3``         ``s3://`` outputs and manifests (s3fs)
=============  ==========================================================================

A command that needs a missing extra raises
:class:`~relshard.errors.MissingDependencyError` (exit 2), whose message names the
extra: "The package 'ray' is not installed; install it with: pip install
'relshard[pipeline]'".
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from relshard.errors import MissingDependencyError

# extra -> (import name, distribution) that its commands cannot do without, checked in order
EXTRAS: dict[str, tuple[tuple[str, str], ...]] = {
    "pipeline": (("ray", "ray"), ("cv2", "opencv-python-headless"), ("numba", "numba"),
                 ("av", "av")),
    "train": (("torch", "torch"),),
    "hf": (("torch", "torch"), ("transformers", "transformers")),
    "stats": (("matplotlib", "matplotlib"),),
    "s3": (("s3fs", "s3fs"),),
}


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (found on the path; nothing is imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require_extra(extra: str) -> None:
    """Raise :class:`MissingDependencyError` naming ``extra`` if a package it brings is absent."""
    for module, package in EXTRAS[extra]:
        if not installed(module):
            raise MissingDependencyError(package, extra)


def require(module: str, extra: str, package: str | None = None) -> ModuleType:
    """Import ``module``, or raise :class:`MissingDependencyError` naming ``extra``.

    Only a missing package is translated; an installed package that fails to
    import (a broken build, a missing system library) raises as it is.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        if exc.name is None or exc.name.split(".")[0] != top:
            raise
        raise MissingDependencyError(package or top, extra) from None


# the optional packages relshard imports (import name -> distribution, extra)
MODULES: dict[str, tuple[str, str]] = {
    "ray": ("ray", "pipeline"), "cv2": ("opencv-python-headless", "pipeline"),
    "numba": ("numba", "pipeline"), "av": ("av", "pipeline"), "decord": ("decord", "pipeline"),
    "onnxruntime": ("onnxruntime", "pipeline"), "onnx": ("onnx", "pipeline"),
    "imagehash": ("imagehash", "pipeline"), "aiohttp": ("aiohttp", "pipeline"),
    "openai": ("openai", "pipeline"), "httpx2": ("httpx2", "pipeline"),
    "torch": ("torch", "train"), "transformers": ("transformers", "hf"),
    "tokenizers": ("tokenizers", "hf"), "matplotlib": ("matplotlib", "stats"),
    "s3fs": ("s3fs", "s3"),
}


def missing_extra(exc: ImportError) -> MissingDependencyError | None:
    """The one-sentence error for an import of an optional package that failed, or None
    when ``exc`` is about something else (a core package, a bug)."""
    name = getattr(exc, "name", None)
    if not isinstance(exc, ModuleNotFoundError) or not name:
        return None
    known = MODULES.get(name.split(".")[0])
    return None if known is None else MissingDependencyError(*known)
