"""The ``openai`` backend over the official ``openai`` SDK (``AsyncOpenAI``): ``client: sdk``.

What the SDK does, and what relshard keeps doing itself (see
:mod:`relshard.workers.annotate.openai_backend` for what both clients share):

- The SDK builds, authenticates and sends each request, maps failures to its typed
  errors (``APIStatusError``, ``APIConnectionError``, ``APITimeoutError``) and runs
  over ``openai.DefaultAioHttpClient`` (the SDK's aiohttp transport under httpx2,
  its documented choice "for improved concurrency performance"): on the loopback
  benchmark its default httpx2/httpcore pool cost 2.1-2.6x the CPU per request of the
  hand-written client, the aiohttp transport 1.4x (bench/README.md).
- A request is ``client.post("/chat/completions", cast_to=httpx2.Response,
  stream=True)``, the SDK's documented call for requests it does not type, rather
  than ``client.chat.completions.create``: the typed call re-walks the whole body
  (base64 images included) against its TypedDicts, ~0.7 ms of CPU per request for a
  body that is already plain JSON, and parses the answer into models, where
  relshard keeps the raw text. ``stream=True`` hands the response back *before*
  its body is read.
- The body cap: an httpx response hook swaps every response's byte stream for one
  that stops at a cap on the wire (answers one byte past ``max_response_bytes``,
  error bodies at 64 KiB). The hook runs before any body byte is read, so neither
  relshard's reader nor the SDK (which reads error bodies itself) ever reads more;
  closing a response left unread drops its connection rather than draining it.
- ``max_retries=0``: the SDK's own retries cap the backoff at 8 s whatever
  ``backoff_max_s`` says, jitter by 0-25 % instead of fully, skip 425, give up on a
  ``Retry-After`` over 120 s, and would hide attempts from relshard's typed
  ``BackendError(retryable=...)`` flow; relshard's retry loop runs instead.
- ``max_in_flight``: a pool of that many connections (``httpx2.Limits``) under the
  shared semaphore; ``timeout_s`` is both the per-phase timeout handed to the SDK
  and the shared whole-exchange deadline.
- The key: ``api_key`` from ``api_key_env`` only. ``Authorization``,
  ``OpenAI-Organization`` and ``OpenAI-Project`` are set or removed explicitly, so
  ``OPENAI_API_KEY``, ``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID`` and an Authorization
  line in ``OPENAI_CUSTOM_HEADERS`` never reach the server; ``base_url`` is always
  given, so ``OPENAI_BASE_URL`` is never used. The SDK's debug log redacts
  ``Authorization``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from relshard.errors import BackendError, MissingDependencyError
from relshard.rawtext import RAW_OUTPUT_MAX_BYTES
from relshard.spec import OpenAIAnnotate
from relshard.workers.annotate.openai_backend import (
    CHUNK,
    PREFLIGHT_TIMEOUT_S,
    ChatHTTPClient,
    Exchange,
    api_key,
    model_not_served,
    read_capped,
)


def _sdk() -> tuple[Any, Any]:
    try:
        import httpx2
        import openai
    except ImportError:
        raise MissingDependencyError("openai", "pipeline") from None
    return openai, httpx2


def _capping_hook(httpx2: Any, ok_cap: int, error_cap: int) -> Any:
    """An httpx response hook: the body is read through a stream that stops at a cap.

    Response hooks run before any of the body is read (the SDK streams here), so
    whatever reads the body later (relshard's reader, or the SDK reading an error
    body) never gets more than ``ok_cap`` (2xx) or ``error_cap`` bytes off the wire.
    """

    class CappedStream(httpx2.AsyncByteStream):  # type: ignore[misc]
        def __init__(self, inner: Any, cap: int) -> None:
            self._inner = inner
            self._cap = cap

        async def __aiter__(self) -> AsyncIterator[bytes]:
            left = self._cap
            async for part in self._inner:
                if len(part) >= left:
                    if left:
                        yield part[:left]
                    return  # the rest is never read; closing drops the connection
                left -= len(part)
                yield part

        async def aclose(self) -> None:
            await self._inner.aclose()

    async def cap_body(response: Any) -> None:
        cap = ok_cap if 200 <= response.status_code < 300 else error_cap
        response.stream = CappedStream(response.stream, cap)

    return cap_body


def no_key_headers(cfg: OpenAIAnnotate) -> dict[str, Any] | None:
    """Per-request headers when no key is named: the SDK insists a request carries
    ``Authorization`` unless the call itself omits it."""
    return None if api_key(cfg) else {"Authorization": _sdk()[0].Omit()}


def make_sdk(cfg: OpenAIAnnotate, timeout_s: float, max_in_flight: int) -> Any:
    """An ``AsyncOpenAI`` for ``cfg``: no SDK retries, capped bodies, the key from the spec."""
    openai, httpx2 = _sdk()
    key = api_key(cfg)
    omit = openai.Omit()
    headers: dict[str, Any] = {"Authorization": f"Bearer {key}" if key else omit,
                               "OpenAI-Organization": omit, "OpenAI-Project": omit}
    hook = _capping_hook(httpx2, int(cfg.max_response_bytes) + 1, RAW_OUTPUT_MAX_BYTES)
    limits = httpx2.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    http = openai.DefaultAioHttpClient(limits=limits, timeout=httpx2.Timeout(timeout_s),
                                       follow_redirects=True, event_hooks={"response": [hook]})
    return openai.AsyncOpenAI(api_key=key or "relshard-no-key", base_url=cfg.base_url,
                              max_retries=0, timeout=httpx2.Timeout(timeout_s),
                              default_headers=headers, http_client=http)


def _root_cause(err: BaseException) -> BaseException:
    """The first exception of a ``raise ... from`` chain (what really went wrong).

    The SDK's aiohttp transport maps every aiohttp connection error, a reset
    included, to ``httpx2.ConnectTimeout``: the root tells a reset from a timeout.
    """
    seen = {id(err)}
    while err.__cause__ is not None and id(err.__cause__) not in seen:
        err = err.__cause__
        seen.add(id(err))
    return err


class SDKClient(ChatHTTPClient):
    """``annotate.client: sdk``: ``AsyncOpenAI`` under relshard's retries."""

    kind = "sdk"

    def __init__(self, cfg: OpenAIAnnotate) -> None:
        super().__init__(cfg)
        self._openai, self._httpx2 = _sdk()
        self._sdk: Any = None
        headers = no_key_headers(cfg)
        self._options: dict[str, Any] = {"headers": headers} if headers else {}

    async def open(self) -> None:
        await super().open()
        self._sdk = make_sdk(self.cfg, self.cfg.timeout_s, self.cfg.max_in_flight)

    async def close(self) -> None:
        if self._sdk is not None:
            await self._sdk.close()
            self._sdk = None

    async def _exchange(self, body: dict[str, Any]) -> Exchange:
        openai = self._openai
        try:
            raw = await self._sdk.post("/chat/completions", cast_to=self._httpx2.Response,
                                       body=body, options=self._options, stream=True)
            try:
                return await self._read(raw.status_code, raw.headers, raw.aiter_bytes(CHUNK))
            finally:
                await raw.aclose()
        except openai.APIStatusError as err:  # the body is read, capped by the hook
            r = err.response
            return Exchange(r.status_code, r.content[:RAW_OUTPUT_MAX_BYTES], False,
                            r.headers.get("retry-after"))
        except openai.APIConnectionError as err:  # APITimeoutError included
            cause = _root_cause(err)
            if isinstance(cause, TimeoutError | self._httpx2.TimeoutException):
                raise TimeoutError from None
            raise BackendError(f"connection failed: {type(cause).__name__}",
                               retryable=True) from None

    async def _read(self, status: int, headers: Any, chunks: AsyncIterator[bytes]) -> Exchange:
        cap = int(self.cfg.max_response_bytes) if status == 200 else RAW_OUTPUT_MAX_BYTES
        data, longer = await read_capped(chunks, cap)
        return Exchange(status, data, longer, headers.get("retry-after"))

    @staticmethod
    async def check_models(cfg: OpenAIAnnotate) -> None:
        openai, _ = _sdk()
        where = cfg.base_url
        async with make_sdk(cfg, PREFLIGHT_TIMEOUT_S, 4) as client:
            try:
                page = await client.models.list(extra_headers=no_key_headers(cfg))
                served = [m.id for m in page.data]
            except (openai.AuthenticationError, openai.PermissionDeniedError) as err:
                raise BackendError(f"The server at {where} refused the API key (HTTP "
                                   f"{err.status_code}): check annotate.api_key_env.") from None
            except openai.APIStatusError as err:
                raise BackendError(f"The server at {where} answered HTTP {err.status_code} to "
                                   f"GET /models: check annotate.base_url.") from None
            except openai.APIConnectionError as err:
                cause = type(_root_cause(err)).__name__
                raise BackendError(f"The annotation server at {where} is unreachable ({cause}): "
                                   f"start it or fix annotate.base_url.", retryable=True) from None
            except (openai.OpenAIError, ValueError, AttributeError, TypeError):
                raise BackendError(f"The server at {where} did not answer GET /models with a "
                                   f"model list: check annotate.base_url.") from None
        unserved = model_not_served(cfg, served)
        if unserved is not None:
            raise unserved
