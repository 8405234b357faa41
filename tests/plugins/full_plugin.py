"""Test plugin: a decoder, a detector and an annotator backend, each with its own settings.

- decoder ``swatch`` (``.swatch``): a JSON file ``{"width": W, "height": H, "rgb": [r, g, b]}``
  becomes one image of that colour; anything else is ``corrupt``;
- detector ``fixed-box``: one subject per frame at ``detect.options.box`` (fractions of the
  frame), of ``detect.options.kind``;
- annotator ``swatch-namer``: captions each sample ``"<label>: <colour> with N subject(s)"``
  from its first stored frame; ``annotate.label`` is its own setting.

The pipeline imports it by name (``plugins: [tests.plugins.full_plugin]``) in the driver,
the decode child and the Ray workers: Ray adds the driver's working directory (the repo
root, where pytest runs) to its local workers' ``sys.path``.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Literal

import cv2
import fsspec
import numpy as np
from pydantic import Field

from relshard import __version__
from relshard.plugins import (
    AnnotatorConfig,
    DetectorOptions,
    detector_options,
    register_backend,
    register_decoder,
    register_detector,
)
from relshard.record import Provenance, SourceInfo
from relshard.shards.item import InputRef, SampleDraft
from relshard.spec import DecodeSpec, DetectSpec
from relshard.workers.annotate.base import Annotation, AnnotationFailure
from relshard.workers.decode.base import DecodedClip, DecodeError, fit_frame
from relshard.workers.detect.cascades import Detection

# -- decoder ------------------------------------------------------------------------------

def decode_swatch(ref: InputRef, cfg: DecodeSpec) -> list[DecodedClip]:
    with fsspec.open(ref.uri, "rb") as fh:
        data = fh.read()
    try:
        spec = json.loads(data)
        width, height = int(spec["width"]), int(spec["height"])
        rgb = [int(c) for c in spec["rgb"]]
        if not (0 < width <= 4096 and 0 < height <= 4096 and len(rgb) == 3):
            raise ValueError("out of range")
    except (ValueError, KeyError, TypeError) as exc:
        raise DecodeError("corrupt", f"not a swatch: {exc}") from None
    frame = fit_frame(np.full((height, width, 3), rgb, np.uint8), cfg.max_side)
    source = SourceInfo(uri=ref.uri, input_key=ref.input_key, modality="image",
                        sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                        format="swatch", decoder="swatch", width=width, height=height,
                        frame_width=frame.shape[1], frame_height=frame.shape[0])
    return [DecodedClip(source=source, frames=[frame])]


# -- detector -----------------------------------------------------------------------------

class FixedBoxOptions(DetectorOptions):
    box: tuple[float, float, float, float] = (0.25, 0.25, 0.75, 0.75)
    kind: Literal["person", "face"] = "person"
    score: float = Field(default=0.9, gt=0, le=1)


class FixedBoxDetector:
    name = "fixed-box"

    def __init__(self, cfg: DetectSpec) -> None:
        self.options = detector_options(cfg)
        assert isinstance(self.options, FixedBoxOptions)

    def detect(self, rgb: np.ndarray, min_px: int) -> list[Detection]:
        h, w = rgb.shape[:2]
        x0, y0, x1, y1 = self.options.box
        box = (x0 * w, y0 * h, x1 * w, y1 * h)
        return [Detection(box, self.options.score, self.options.kind, self.name)]


# -- annotator ----------------------------------------------------------------------------

class SwatchNamerConfig(AnnotatorConfig):
    label: str = Field(default="swatch", min_length=1, max_length=40)
    batch_size: int = Field(default=2, ge=1)


COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
           "white": (255, 255, 255), "black": (0, 0, 0)}


class SwatchNamer:
    name = "swatch-namer"

    def __init__(self, cfg: SwatchNamerConfig) -> None:
        assert isinstance(cfg, SwatchNamerConfig)
        self.cfg = cfg

    def setup(self) -> None:
        pass

    def annotate(self, samples: list[SampleDraft]) -> list[Annotation | AnnotationFailure]:
        return [self._one(s) for s in samples]

    def _one(self, sample: SampleDraft) -> Annotation | AnnotationFailure:
        start = time.perf_counter()
        if not sample.frames:
            return AnnotationFailure("no_frames", "nothing to name")
        bgr = cv2.imdecode(np.frombuffer(sample.frames[0].jpeg, np.uint8), cv2.IMREAD_COLOR)
        mean = bgr[..., ::-1].reshape(-1, 3).mean(axis=0)
        colour = min(COLOURS, key=lambda c: float(np.sum((mean - COLOURS[c]) ** 2)))
        caption = f"{self.cfg.label}: {colour} with {len(sample.subjects)} subject(s)"
        prov = Provenance(backend=self.name, method="mean colour of frame 0 (test plugin)",
                          latency_s=round(time.perf_counter() - start, 6),
                          relshard_version=__version__)
        return Annotation(caption=caption, relational_caption=caption, provenance=prov)


register_decoder("swatch", [".swatch"], decode_swatch, modality="image")
register_detector("fixed-box", FixedBoxDetector, config_model=FixedBoxOptions)
register_backend("swatch-namer", SwatchNamer, config_model=SwatchNamerConfig)
