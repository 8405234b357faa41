"""The ``transformers`` backend: a local image-text-to-text model, batched, one per actor.

``AutoProcessor`` and ``AutoModelForImageTextToText`` load from ``model_path``
(local files only: nothing is downloaded). The model sits on the actor's GPU in
bfloat16, or on the CPU in float32 (``dtype`` overrides). The annotation engine
runs every sample of a call as its own coroutine; the requests they have pending
at a moment are gathered into batches of up to ``generate_batch_size`` and generated
together (left padding, greedy unless ``temperature`` > 0), so a batch of inputs
costs one ``generate`` per prompt step, not one per sample.
"""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path
from typing import Any

from relshard.errors import MissingDependencyError, SpecError
from relshard.shards.item import SampleDraft
from relshard.spec import TransformersAnnotate
from relshard.workers.annotate.base import Annotation, AnnotationFailure
from relshard.workers.annotate.engine import AnnotationEngine
from relshard.workers.annotate.prompts import ChatRequest

log = logging.getLogger(__name__)


def _imports() -> tuple[Any, Any]:
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("torch", "hf") from None
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError("transformers", "hf") from None
    return torch, transformers


def hf_messages(req: ChatRequest) -> list[dict[str, Any]]:
    """Chat-template messages: every content a list of ``text`` / ``image`` parts."""
    out = []
    for msg in req.messages:
        content = msg["content"]
        if isinstance(content, str):
            parts = [{"type": "text", "text": content}]
        else:
            parts = [{"type": "image"} if p["type"] == "image" else
                     {"type": "text", "text": p["text"]} for p in content]
        out.append({"role": msg["role"], "content": parts})
    return out


class LocalVLM:
    """A processor and model loaded from a folder; ``generate`` answers a batch of requests."""

    def __init__(self, cfg: TransformersAnnotate) -> None:
        torch, transformers = _imports()
        self.cfg = cfg
        self.torch = torch
        device = cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise SpecError("annotate.device is 'cuda' but this worker sees no GPU; set "
                            "annotate.num_gpus or use device: cpu.")
        dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if device == "cuda"
                                                         else "float32")
        self.device = device
        self.dtype = getattr(torch, dtype)
        self.processor = transformers.AutoProcessor.from_pretrained(
            cfg.model_path, local_files_only=True)
        tok = getattr(self.processor, "tokenizer", None)
        if tok is not None:
            tok.padding_side = "left"
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
        self.model = transformers.AutoModelForImageTextToText.from_pretrained(
            cfg.model_path, local_files_only=True, dtype=self.dtype).to(device).eval()
        self.model_name = Path(cfg.model_path).name or cfg.model_path

    def generate(self, requests: list[ChatRequest]) -> list[str]:
        """Answers for ``requests``: those with images in one batch, text-only in another."""
        out: list[str] = [""] * len(requests)
        with_images = [i for i, r in enumerate(requests) if r.images]
        text_only = [i for i, r in enumerate(requests) if not r.images]
        for group in (with_images, text_only):
            if group:
                for i, text in zip(group, self._generate([requests[i] for i in group]),
                                   strict=True):
                    out[i] = text
        return out

    def _generate(self, requests: list[ChatRequest]) -> list[str]:
        from PIL import Image

        texts = [self.processor.apply_chat_template(hf_messages(r), add_generation_prompt=True,
                                                    tokenize=False) for r in requests]
        kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
        if requests[0].images:
            kwargs["images"] = [[Image.open(io.BytesIO(b)).convert("RGB") for b in r.images]
                                for r in requests]
        inputs = self.processor(**kwargs).to(self.device)
        for key, value in inputs.items():
            if self.torch.is_floating_point(value):
                inputs[key] = value.to(self.dtype)
        sampling = self.cfg.temperature > 0
        gen: dict[str, Any] = {"max_new_tokens": self.cfg.max_new_tokens, "do_sample": sampling}
        if sampling:
            gen["temperature"] = self.cfg.temperature
        with self.torch.inference_mode():
            ids = self.model.generate(**inputs, **gen)
        new = ids[:, inputs["input_ids"].shape[1]:]
        return list(self.processor.batch_decode(new, skip_special_tokens=True))


class _Batcher:
    """Gathers the requests pending in the event loop into ``generate`` batches."""

    def __init__(self, vlm: LocalVLM, batch_size: int) -> None:
        self.vlm = vlm
        self.batch_size = batch_size
        self._pending: list[tuple[ChatRequest, asyncio.Future[str]]] = []
        self._task: asyncio.Task[None] | None = None
        self.batches: list[int] = []  # sizes, for tests and logs

    async def complete(self, request: ChatRequest, schema: dict[str, Any]) -> str:
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending.append((request, fut))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # let every runnable sample enqueue its request first
        while self._pending:
            batch = self._pending[:self.batch_size]
            del self._pending[:self.batch_size]
            self.batches.append(len(batch))
            try:
                answers = await asyncio.to_thread(self.vlm.generate, [r for r, _ in batch])
            except Exception as exc:
                for _, fut in batch:
                    fut.set_exception(exc)
            else:
                for (_, fut), text in zip(batch, answers, strict=True):
                    fut.set_result(text)
            await asyncio.sleep(0)


class TransformersAnnotator:
    """The ``transformers`` backend (Annotator protocol, with ``preflight``)."""

    name = "transformers"

    def __init__(self, cfg: TransformersAnnotate) -> None:
        self.cfg = cfg
        self.vlm: LocalVLM | None = None
        self.batcher: _Batcher | None = None
        self.engine: AnnotationEngine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def preflight(self) -> None:
        """Check the packages and the model folder (without loading the model)."""
        _imports()
        path = Path(self.cfg.model_path)
        if not (path / "config.json").is_file():
            raise SpecError(f"annotate.model_path {self.cfg.model_path!r} is not a model folder "
                            f"(no config.json): point it at a save_pretrained folder.")

    def setup(self) -> None:
        if self.vlm is not None:
            return
        self.preflight()
        self.vlm = LocalVLM(self.cfg)
        self.batcher = _Batcher(self.vlm, self.cfg.generate_batch_size or self.cfg.batch_size)
        params = {"max_new_tokens": self.cfg.max_new_tokens,
                  "temperature": self.cfg.temperature, "dtype": str(self.vlm.dtype)}
        self.engine = AnnotationEngine(self.cfg, self.batcher, backend=self.name,
                                       model=self.vlm.model_name, params=params)
        self._loop = asyncio.new_event_loop()

    def annotate(self, samples: list[SampleDraft]) -> list[Annotation | AnnotationFailure]:
        self.setup()
        assert self._loop is not None and self.engine is not None
        return self._loop.run_until_complete(self.engine.annotate_all(samples))

    def teardown(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None
