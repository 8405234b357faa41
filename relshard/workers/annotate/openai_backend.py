"""The ``openai`` backend: any OpenAI-compatible chat-completions server with image input.

vLLM, SGLang, Ollama, TGI and hosted APIs all speak ``POST {base_url}/chat/completions``.
Images go as JPEG data URLs (several frames per clip). Two HTTP clients do the talking,
picked by ``annotate.client``:

- ``aiohttp`` (default): the hand-written client, here;
- ``sdk``: the official ``openai`` package (``AsyncOpenAI``), in
  :mod:`relshard.workers.annotate.openai_sdk`.

The SDK is not the default because on ``bench/annotate.py`` (both clients, same
loopback server, same run, three runs each, three sessions) it missed the bar set
for it: 0.64-0.81x of the ``max_in_flight / latency`` ideal (medians) where aiohttp
reached 0.81-0.86x, at 1.37-1.76x aiohttp's client CPU per request (bar: 0.9x ideal
and 1.5x CPU), even in its best configuration (see openai_sdk.py). The figures are in
bench/README.md.

Both share everything above the wire, in :class:`ChatHTTPClient`: up to
``max_in_flight`` requests really in flight per worker (a semaphore, and a connection
pool of the same size), one deadline of ``timeout_s`` per request, relshard's own
retry loop, the structured-output fallback and the reading of answers. The SDK's own
retries are off (``max_retries=0``): they cap the backoff at 8 s whatever
``backoff_max_s`` says, jitter by 0-25 % instead of fully, and do not retry 425; and
ours keep the typed ``BackendError(retryable=...)`` flow that becomes rejects.

A request that meets a 408, 409, 425, 429 or 5xx, a timeout or a reset connection is
retried up to ``max_retries`` times with exponential backoff and full jitter
(``uniform(0, min(backoff_max_s, backoff_s * 2**attempt))``). A server's
``Retry-After`` (seconds, or an HTTP date) is honoured: the wait is what it asks plus
that jitter, so that many requests told the same do not return at the same instant.
A ``Retry-After`` longer than ``retry_after_max_s`` (default 300 s) is not waited
out: the request fails at once as ``backend_unavailable``. Structured output is asked
for with ``response_format`` (JSON schema); with ``structured_output: auto`` a server
that refuses it (HTTP 400 naming it) is asked prompt-only from then on.

The API key is read only from the environment variable ``api_key_env`` names (never
``OPENAI_API_KEY``, ``OPENAI_ORG_ID`` or ``OPENAI_PROJECT_ID``, which the SDK would
otherwise pick up and send to whatever server ``base_url`` names); it is sent only in
the ``Authorization`` header and is never logged, written, or kept in the spec.

Answers are bounded: at most ``max_response_bytes`` (default 4 MiB) of a body are
read, and reading stops there (an error body: at most 64 KiB). A longer answer is
rejected as ``response_too_large`` and not retried (a model that rambles that far
does so again; lower ``max_new_tokens`` instead), with the head of what was read kept
as raw output. Bodies are decoded as UTF-8 with invalid bytes replaced, so a garbled
answer still reaches the rejects ledger; a 200 answer that is not a completion is a
``backend_error`` reject keeping its text. The raw text is parsed by relshard, never
by the SDK's models, so what the server said is what the ledger keeps.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import logging
import math
import os
import random
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from relshard.errors import BackendError, MissingDependencyError, SpecError
from relshard.rawtext import RAW_OUTPUT_MAX_BYTES, decode_text, storable
from relshard.shards.item import SampleDraft
from relshard.spec import OpenAIAnnotate
from relshard.workers.annotate.base import Annotation, AnnotationFailure
from relshard.workers.annotate.engine import AnnotationEngine, AnswerError
from relshard.workers.annotate.prompts import ChatRequest

log = logging.getLogger(__name__)
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
PREFLIGHT_TIMEOUT_S = 10.0
CHUNK = 64 * 1024


async def read_capped(chunks: AsyncIterator[bytes], cap: int) -> tuple[bytes, bool]:
    """Up to ``cap`` bytes of a body's chunks, and whether the body was longer.

    Reading stops at the first chunk past the cap; the caller then closes the
    response, which drops the connection instead of draining the rest.
    """
    parts: list[bytes] = []
    total = 0
    try:
        async for chunk in chunks:
            if total + len(chunk) > cap:
                parts.append(chunk[:cap - total])
                return b"".join(parts), True
            parts.append(chunk)
            total += len(chunk)
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:  # an async generator left early: finish it on this loop
            await close()
    return b"".join(parts), False


def _aiohttp() -> Any:
    try:
        import aiohttp
    except ImportError:
        raise MissingDependencyError("aiohttp", "pipeline") from None
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


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for: delay-seconds or an HTTP date (RFC 9110).

    A date in the past is 0; anything unreadable (or NaN) is None: no server advice.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000" or no zone: HTTP dates are GMT
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


@dataclass
class Exchange:
    """One HTTP answer as read: status, (capped) body, whether it was longer, Retry-After."""

    status: int
    data: bytes
    longer: bool = False
    retry_after: str | None = None


class StatusError(BackendError):
    """A server's error status; ``retry_after``: the seconds its Retry-After asks for."""

    def __init__(self, message: str, retryable: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message, retryable)
        self.args = (message, retryable, retry_after)
        self.retry_after = retry_after


class ChatHTTPClient(ABC):
    """What both HTTP clients share: concurrency bound, deadline, retries, answer reading.

    A subclass opens and closes its transport and implements :meth:`_exchange` (one
    POST of a chat-completions body, returning the status and capped body, raising
    ``TimeoutError`` or a retryable :class:`BackendError` when the exchange fails).
    An instance is bound to one event loop between ``open()`` and ``close()``.
    """

    kind = "?"

    def __init__(self, cfg: OpenAIAnnotate) -> None:
        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self.structured = cfg.structured_output != "none"
        self.key = api_key(cfg)
        self._sem: asyncio.Semaphore | None = None
        self.retries = 0
        self.waits: list[float] = []  # seconds slept before each retry (for tests, benchmarks)
        self.posts = 0
        self.post_seconds = 0.0  # summed wall time of HTTP exchanges (for benchmarks)

    async def open(self) -> None:
        self._sem = asyncio.Semaphore(self.cfg.max_in_flight)

    async def close(self) -> None:  # noqa: B027 - a transport without resources keeps it
        """Release the transport (nothing to release in the base)."""

    @abstractmethod
    async def _exchange(self, body: dict[str, Any]) -> Exchange:
        """One POST of ``body``: status and capped body (see the class doc)."""

    @staticmethod
    @abstractmethod
    async def check_models(cfg: OpenAIAnnotate) -> None:
        """Preflight: raise one-sentence errors (unreachable, refused key, unknown model)."""

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
                asked = getattr(outcome, "retry_after", None)
                if asked is not None and asked > cfg.retry_after_max_s:
                    raise BackendError(f"{outcome} (it asks to retry after {asked:.0f} s, more "
                                       f"than retry_after_max_s={cfg.retry_after_max_s:g})",
                                       retryable=True)
                delay = random.uniform(0, min(cfg.backoff_max_s, cfg.backoff_s * 2 ** attempt))
                attempt += 1
                self.retries += 1
                self.waits.append(delay + (asked or 0.0))
                await asyncio.sleep(self.waits[-1])
                continue
            if outcome.retryable:
                raise BackendError(f"{outcome} (after {attempt} retries)", retryable=True)
            raise outcome

    async def _post(self, body: dict[str, Any]) -> str | BackendError:
        """One exchange within ``timeout_s``, as answer text or a typed error."""
        try:
            async with asyncio.timeout(self.cfg.timeout_s):
                ex = await self._exchange(body)
        except TimeoutError:
            return BackendError(f"no answer within timeout_s={self.cfg.timeout_s}",
                                retryable=True)
        except BackendError as err:
            return err
        text = decode_text(ex.data)
        if ex.status == 200:
            if ex.longer:
                cap = int(self.cfg.max_response_bytes)
                return AnswerError(
                    f"the server's answer is longer than max_response_bytes={cap}; "
                    f"reading stopped there (lower max_new_tokens or raise the cap)",
                    reason="response_too_large", raw=text)
            return _answer_text(text)
        if (ex.status == 400 and self.structured
                and self.cfg.structured_output == "auto" and "response_format" in text):
            log.warning("server refuses response_format; asking prompt-only from now on")
            self.structured = False
            body.pop("response_format", None)
            return await self._post(body)
        return StatusError(f"server answered HTTP {ex.status}: {text[:200]}",
                           retryable=ex.status in RETRY_STATUS or ex.status >= 500,
                           retry_after=parse_retry_after(ex.retry_after))


def model_not_served(cfg: OpenAIAnnotate, served: list[Any]) -> BackendError | None:
    if cfg.model in served:
        return None
    return BackendError(f"The server at {cfg.base_url} does not serve model {cfg.model!r} "
                        f"(it serves: {', '.join(map(str, served[:10]))}); fix annotate.model.")


class AiohttpClient(ChatHTTPClient):
    """The hand-written client of earlier releases (``annotate.client: aiohttp``)."""

    kind = "aiohttp"

    def __init__(self, cfg: OpenAIAnnotate) -> None:
        super().__init__(cfg)
        self._headers = {"Content-Type": "application/json"}
        if self.key:
            self._headers["Authorization"] = f"Bearer {self.key}"
        self._session: Any = None

    async def open(self) -> None:
        await super().open()
        aiohttp = _aiohttp()
        connector = aiohttp.TCPConnector(limit=self.cfg.max_in_flight, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _exchange(self, body: dict[str, Any]) -> Exchange:
        aiohttp = _aiohttp()
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s)
        try:
            async with self._session.post(self.url, json=body, timeout=timeout) as resp:
                cap = int(self.cfg.max_response_bytes) if resp.status == 200 \
                    else RAW_OUTPUT_MAX_BYTES
                data, longer = await read_capped(resp.content.iter_chunked(CHUNK), cap)
                return Exchange(resp.status, data, longer, resp.headers.get("Retry-After"))
        except TimeoutError:
            raise
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise BackendError(f"connection failed: {type(exc).__name__}",
                               retryable=True) from None

    @staticmethod
    async def check_models(cfg: OpenAIAnnotate) -> None:
        aiohttp = _aiohttp()
        url = cfg.base_url.rstrip("/") + "/models"
        key = api_key(cfg)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            async with aiohttp.ClientSession(headers=headers) as session, session.get(
                    url, timeout=aiohttp.ClientTimeout(total=PREFLIGHT_TIMEOUT_S)) as resp:
                if resp.status in (401, 403):
                    raise BackendError(f"The server at {cfg.base_url} refused the API key "
                                       f"(HTTP {resp.status}): check annotate.api_key_env.")
                if resp.status != 200:
                    raise BackendError(f"The server at {cfg.base_url} answered HTTP "
                                       f"{resp.status} to GET /models: check annotate.base_url.")
                data, _ = await read_capped(resp.content.iter_chunked(CHUNK),
                                            int(cfg.max_response_bytes))
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise BackendError(f"The annotation server at {cfg.base_url} is unreachable "
                               f"({type(exc).__name__}): start it or fix annotate.base_url.",
                               retryable=True) from None
        err = model_not_served(cfg, served_models(data, cfg))
        if err is not None:
            raise err


def served_models(data: bytes, cfg: OpenAIAnnotate) -> list[Any]:
    """The model ids of a ``GET /models`` body (one sentence if it is not a model list)."""
    try:
        listing = json.loads(data)
        return [m.get("id") for m in listing.get("data", []) if isinstance(m, dict)]
    except (ValueError, AttributeError, TypeError, RecursionError):
        raise BackendError(f"The server at {cfg.base_url} did not answer GET /models with a "
                           f"model list: check annotate.base_url.") from None


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


def make_client(cfg: OpenAIAnnotate) -> ChatHTTPClient:
    """The HTTP client ``annotate.client`` names."""
    if cfg.client == "aiohttp":
        return AiohttpClient(cfg)
    from relshard.workers.annotate.openai_sdk import SDKClient

    return SDKClient(cfg)


def client_class(cfg: OpenAIAnnotate) -> type[ChatHTTPClient]:
    if cfg.client == "aiohttp":
        return AiohttpClient
    from relshard.workers.annotate.openai_sdk import SDKClient

    return SDKClient


class OpenAIAnnotator:
    """The ``openai`` backend (Annotator protocol, with ``preflight``)."""

    name = "openai"

    def __init__(self, cfg: OpenAIAnnotate) -> None:
        self.cfg = cfg
        self._loop: asyncio.AbstractEventLoop | None = None
        self.client: ChatHTTPClient | None = None
        self.engine: AnnotationEngine | None = None

    def preflight(self) -> None:
        """One clear error if the server is unreachable or does not serve the model."""
        api_key(self.cfg)
        if self.cfg.preflight:
            asyncio.run(self._check_models())

    async def _check_models(self) -> None:
        await client_class(self.cfg).check_models(self.cfg)

    def setup(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.new_event_loop()
        self.client = make_client(self.cfg)
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
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()
            self._loop = None
