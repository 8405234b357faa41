"""The ``openai`` backend: any OpenAI-compatible chat-completions server with image input.

vLLM, SGLang, Ollama, TGI and hosted APIs all speak ``POST {base_url}/chat/completions``.
Images go as JPEG data URLs (several frames per clip). One aiohttp session per
worker keeps up to ``max_in_flight`` requests really in flight (a semaphore, and a
connection pool of the same size). A request that meets a 429, a 5xx, a timeout
or a reset connection is retried up to ``max_retries`` times with exponential
backoff and full jitter (a server's ``Retry-After`` is honoured). Structured
output is asked for with ``response_format`` (JSON schema); with
``structured_output: auto`` a server that refuses it (HTTP 400 naming it) is
asked prompt-only from then on.

The API key is read from the environment variable ``api_key_env`` names; it is
sent only in the ``Authorization`` header and is never logged, written, or kept
in the spec.

Answers are bounded: at most ``max_response_bytes`` (default 4 MiB) of a body are
read. A longer answer is rejected as ``response_too_large`` and not retried (a
model that rambles that far does so again; lower ``max_new_tokens`` instead), with
the head of what was read kept as raw output. Bodies are decoded as UTF-8 with
invalid bytes replaced, so a garbled answer still reaches the rejects ledger; a
200 answer that is not a completion is a ``backend_error`` reject keeping its text.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import random
import time
from typing import Any

from relshard.errors import BackendError, MissingDependencyError, SpecError
from relshard.rawtext import RAW_OUTPUT_MAX_BYTES, decode_text, storable
from relshard.spec import OpenAIAnnotate
from relshard.workers.annotate.base import Annotation, AnnotationFailure
from relshard.workers.annotate.engine import AnnotationEngine, AnswerError
from relshard.workers.annotate.prompts import ChatRequest
from relshard.workers.item import SampleDraft

log = logging.getLogger(__name__)
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
PREFLIGHT_TIMEOUT_S = 10.0
CHUNK = 64 * 1024


async def read_capped(resp: Any, cap: int) -> tuple[bytes, bool]:
    """Up to ``cap`` bytes of a response body, and whether the body was longer."""
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.content.iter_chunked(CHUNK):
        if total + len(chunk) > cap:
            chunks.append(chunk[:cap - total])
            return b"".join(chunks), True
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks), False


def _aiohttp() -> Any:
    try:
        import aiohttp
    except ImportError:
        raise MissingDependencyError("aiohttp") from None
    return aiohttp


def api_key(cfg: OpenAIAnnotate) -> str | None:
    """The key from the named environment variable (None when no variable is named)."""
    if cfg.api_key_env is None:
        return None
    value = os.environ.get(cfg.api_key_env)
    if not value:
        raise SpecError(f"annotate.api_key_env names {cfg.api_key_env!r}, which is not set in "
                        f"the environment: export it before the run.")
    return value


def wire_messages(req: ChatRequest) -> list[dict[str, Any]]:
    """OpenAI message format: image parts become JPEG data URLs."""
    out: list[dict[str, Any]] = []
    for msg in req.messages:
        content = msg["content"]
        if isinstance(content, list):
            parts = []
            for part in content:
                if part["type"] == "image":
                    data = base64.b64encode(req.images[part["index"]]).decode("ascii")
                    parts.append({"type": "image_url",
                                  "image_url": {"url": f"data:image/jpeg;base64,{data}"}})
                else:
                    parts.append(part)
            content = parts
        out.append({"role": msg["role"], "content": content})
    return out


class OpenAIClient:
    """An async chat-completions client bound to one event loop (see OpenAIAnnotator)."""

    def __init__(self, cfg: OpenAIAnnotate) -> None:
        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self.structured = cfg.structured_output != "none"
        self._headers = {"Content-Type": "application/json"}
        key = api_key(cfg)
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._session: Any = None
        self._sem: asyncio.Semaphore | None = None
        self.retries = 0
        self.posts = 0
        self.post_seconds = 0.0  # summed wall time of HTTP exchanges (for benchmarks)

    async def open(self) -> None:
        aiohttp = _aiohttp()
        connector = aiohttp.TCPConnector(limit=self.cfg.max_in_flight, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)
        self._sem = asyncio.Semaphore(self.cfg.max_in_flight)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _body(self, req: ChatRequest, schema: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.cfg.model, "messages": wire_messages(req),
                                "max_tokens": self.cfg.max_new_tokens,
                                "temperature": self.cfg.temperature}
        if self.structured:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": f"relshard_{req.step}", "schema": schema, "strict": False}}
        return body

    async def complete(self, request: ChatRequest, schema: dict[str, Any]) -> str:
        assert self._sem is not None, "open() first"
        cfg = self.cfg
        attempt = 0
        while True:
            async with self._sem:
                body = self._body(request, schema)
                start = time.perf_counter()
                outcome = await self._post(body)
                self.posts += 1
                self.post_seconds += time.perf_counter() - start
            if isinstance(outcome, str):
                return outcome
            if outcome.retryable and attempt < cfg.max_retries:
                delay = getattr(outcome, "retry_after", None)
                if delay is None:
                    delay = random.uniform(0, min(cfg.backoff_max_s, cfg.backoff_s * 2 ** attempt))
                attempt += 1
                self.retries += 1
                await asyncio.sleep(min(delay, cfg.backoff_max_s))
                continue
            if outcome.retryable:
                raise BackendError(f"{outcome} (after {attempt} retries)", retryable=True)
            raise outcome

    async def _post(self, body: dict[str, Any]) -> str | BackendError:
        aiohttp = _aiohttp()
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s)
        try:
            async with self._session.post(self.url, json=body, timeout=timeout) as resp:
                ok = resp.status == 200
                cap = int(self.cfg.max_response_bytes) if ok else RAW_OUTPUT_MAX_BYTES
                data, longer = await read_capped(resp, cap)
                text = decode_text(data)
                if ok:
                    if longer:
                        return AnswerError(
                            f"the server's answer is longer than max_response_bytes={cap}; "
                            f"reading stopped there (lower max_new_tokens or raise the cap)",
                            reason="response_too_large", raw=text)
                    return _answer_text(text)
                if (resp.status == 400 and self.structured
                        and self.cfg.structured_output == "auto" and "response_format" in text):
                    log.warning("server refuses response_format; asking prompt-only from now on")
                    self.structured = False
                    body.pop("response_format", None)
                    return await self._post(body)
                err = BackendError(f"server answered HTTP {resp.status}: {text[:200]}",
                                   retryable=resp.status in RETRY_STATUS or resp.status >= 500)
                err.retry_after = _retry_after(resp.headers.get("Retry-After"))  # type: ignore[attr-defined]
                return err
        except TimeoutError:
            return BackendError(f"no answer within timeout_s={self.cfg.timeout_s}", retryable=True)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            return BackendError(f"connection failed: {type(exc).__name__}", retryable=True)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _answer_text(body: str) -> str | AnswerError:
    """The message content of a completion body, storable (lone surrogates replaced)."""
    try:
        data = json.loads(body)
        content = data["choices"][0]["message"]["content"]
        if isinstance(content, list):  # some servers return content parts
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        if content is not None and not isinstance(content, str):
            raise TypeError(type(content).__name__)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError):
        return AnswerError("server answered 200 without choices[0].message.content",
                           raw=body)
    return storable(content or "")


class OpenAIAnnotator:
    """The ``openai`` backend (Annotator protocol, with ``preflight``)."""

    name = "openai"

    def __init__(self, cfg: OpenAIAnnotate) -> None:
        self.cfg = cfg
        self._loop: asyncio.AbstractEventLoop | None = None
        self.client: OpenAIClient | None = None
        self.engine: AnnotationEngine | None = None

    def preflight(self) -> None:
        """One clear error if the server is unreachable or does not serve the model."""
        api_key(self.cfg)
        if self.cfg.preflight:
            asyncio.run(self._check_models())

    async def _check_models(self) -> None:
        aiohttp = _aiohttp()
        url = self.cfg.base_url.rstrip("/") + "/models"
        key = api_key(self.cfg)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            async with aiohttp.ClientSession(headers=headers) as session, session.get(
                    url, timeout=aiohttp.ClientTimeout(total=PREFLIGHT_TIMEOUT_S)) as resp:
                if resp.status in (401, 403):
                    raise BackendError(f"The server at {self.cfg.base_url} refused the API key "
                                       f"(HTTP {resp.status}): check annotate.api_key_env.")
                if resp.status != 200:
                    raise BackendError(f"The server at {self.cfg.base_url} answered HTTP "
                                       f"{resp.status} to GET /models: check annotate.base_url.")
                data = await resp.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise BackendError(f"The annotation server at {self.cfg.base_url} is unreachable "
                               f"({type(exc).__name__}): start it or fix annotate.base_url.",
                               retryable=True) from None
        served = [m.get("id") for m in (data or {}).get("data", []) if isinstance(m, dict)]
        if self.cfg.model not in served:
            raise BackendError(f"The server at {self.cfg.base_url} does not serve model "
                               f"{self.cfg.model!r} (it serves: {', '.join(map(str, served[:10]))}"
                               f"); fix annotate.model.")

    def setup(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.new_event_loop()
        self.client = OpenAIClient(self.cfg)
        params = {"max_tokens": self.cfg.max_new_tokens, "temperature": self.cfg.temperature,
                  "structured_output": self.cfg.structured_output}
        self.engine = AnnotationEngine(self.cfg, self.client, backend=self.name,
                                       model=self.cfg.model, params=params,
                                       max_active=self.cfg.max_in_flight * 5 // 4 + 1)

    def annotate(self, samples: list[SampleDraft]) -> list[Annotation | AnnotationFailure]:
        self.setup()
        assert self._loop is not None and self.engine is not None
        return self._loop.run_until_complete(self._annotate(samples))

    async def _annotate(self, samples: list[SampleDraft]) -> list[Annotation | AnnotationFailure]:
        # One session per call: a call holds many requests, and no session outlives its loop.
        assert self.client is not None and self.engine is not None
        await self.client.open()
        try:
            return await self.engine.annotate_all(samples)
        finally:
            await self.client.close()

    def teardown(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None
