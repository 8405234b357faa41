"""Detector backends by name: a spec's ``detect.backend`` selects one here.

A backend finds raw :class:`~relshard.workers.detect.cascades.Detection` s (faces
and people, in pixels) on one RGB frame already scaled to ``detect.detect_side``;
:class:`~relshard.workers.detect.subjects.SubjectDetector` does the rest (NMS,
faces into persons, bodies from faces, tracks, crops), whatever the backend.

Built in:

- ``centerface`` (default): the CenterFace CNN through onnxruntime
  (:mod:`.centerface`); HOG people only when ``detect.persons`` is true.
- ``opencv``: Haar frontal (+ profile) cascades and HOG people (:mod:`.cascades`).
- ``none``: no subjects; annotators that ground subjects themselves still can.

``register_detector(name, factory, config_model=None)`` adds one (from a plugin
module); the factory takes the :class:`~relshard.spec.DetectSpec` and returns an object
with ``detect(rgb, min_px) -> list[Detection]`` and, optionally, ``preflight()`` that
raises a one-sentence :class:`~relshard.errors.RelshardError` before any work. A
backend with settings gives ``config_model``, a :class:`relshard.plugins.DetectorOptions`
subclass: the spec validates ``detect.options`` with it, and the backend reads them typed
with :func:`relshard.plugins.detector_options`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from relshard.errors import SpecError
from relshard.plugins import DetectorOptions, record_detector_options
from relshard.spec import BUILTIN_DETECTORS, DetectSpec
from relshard.workers.detect import cascades
from relshard.workers.detect.cascades import Detection


class DetectorBackend(Protocol):
    name: str

    def detect(self, rgb: np.ndarray, min_px: int) -> list[Detection]: ...


_FACTORIES: dict[str, Callable[[DetectSpec], DetectorBackend]] = {}


def register_detector(name: str, factory: Callable[[DetectSpec], DetectorBackend], *,
                      config_model: type[DetectorOptions] | None = None) -> None:
    """Register ``factory(detect_spec) -> DetectorBackend`` under ``name``.

    ``config_model`` validates ``detect.options`` (none: the backend takes no options).
    """
    if name not in BUILTIN_DETECTORS or config_model is not None:
        record_detector_options(name, config_model)
    _FACTORIES[name] = factory


def build_detector(cfg: DetectSpec) -> DetectorBackend:
    """The backend ``cfg.backend`` names; an unknown name is one sentence."""
    _register_builtin()
    try:
        factory = _FACTORIES[cfg.backend]
    except KeyError:
        known = ", ".join(sorted(_FACTORIES))
        raise SpecError(f"Unknown detect.backend {cfg.backend!r}; use one of: {known} "
                        f"(or register one from a plugin module).") from None
    return factory(cfg)


def preflight_detector(cfg: DetectSpec) -> None:
    """Load what the backend needs (model file, runtime) in the driver, before any work."""
    backend = build_detector(cfg)
    check = getattr(backend, "preflight", None)
    if callable(check):
        check()


def people_wanted(cfg: DetectSpec) -> bool:
    """Whether HOG people run: ``detect.persons``, or by default only with ``opencv``."""
    return cfg.persons if cfg.persons is not None else cfg.backend == "opencv"


class CascadeBackend:
    """OpenCV's Haar faces (frontal, optionally profile) and HOG people."""

    name = "opencv"

    def __init__(self, cfg: DetectSpec) -> None:
        self.cfg = cfg

    def preflight(self) -> None:
        cascades.frontal_face_cascade()
        if people_wanted(self.cfg):
            cascades.people_hog()

    def detect(self, rgb: np.ndarray, min_px: int) -> list[Detection]:
        dets: list[Detection] = []
        if self.cfg.faces:
            gray = cascades.prepare_gray(rgb)
            dets += cascades.detect_frontal_faces(gray, min_px)
            if self.cfg.profile_faces:
                dets += cascades.detect_profile_faces(gray, min_px)
        if people_wanted(self.cfg):
            dets += cascades.detect_people(rgb)
        return dets


class CenterFaceBackend:
    """CenterFace faces (onnxruntime), plus HOG people when asked for."""

    name = "centerface"

    def __init__(self, cfg: DetectSpec) -> None:
        from relshard.workers.detect.centerface import CenterFace

        self.cfg = cfg
        self.model = CenterFace(score_threshold=cfg.score_threshold, threads=cfg.threads,
                                model_path=cfg.model_path)

    def preflight(self) -> None:
        from relshard.workers.detect.centerface import load_session

        load_session(self.cfg.model_path, 1)
        if people_wanted(self.cfg):
            cascades.people_hog()

    def detect(self, rgb: np.ndarray, min_px: int) -> list[Detection]:
        dets = self.model.detect(rgb, min_px) if self.cfg.faces else []
        if people_wanted(self.cfg):
            dets += cascades.detect_people(rgb)
        return dets


class NoDetector:
    name = "none"

    def __init__(self, cfg: DetectSpec) -> None:
        self.cfg = cfg

    def detect(self, rgb: np.ndarray, min_px: int) -> list[Detection]:
        return []


def _register_builtin() -> None:
    _FACTORIES.setdefault("centerface", CenterFaceBackend)
    _FACTORIES.setdefault("opencv", CascadeBackend)
    _FACTORIES.setdefault("none", NoDetector)
