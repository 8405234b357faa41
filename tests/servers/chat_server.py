"""A scriptable OpenAI-compatible chat-completions server on 127.0.0.1 (a real protocol peer).

It speaks ``GET /v1/models`` and ``POST /v1/chat/completions`` over real HTTP on a
random loopback port, in a background thread with its own event loop. By default
it answers *well*: it reads the step and the subject/attribute ids from the
prompt and returns a valid answer. ``script`` is a FIFO of actions consumed one
per request before the default applies:

- ``Reply(text)``: HTTP 200 with ``text`` as the message content (e.g. malformed JSON);
- ``Status(code, retry_after=None)``: an error status (429, 500, 400...); ``retry_after``
  is sent as the ``Retry-After`` header: a number of seconds, or a string as given
  (e.g. an HTTP date);
- ``Slow(seconds, then=None)``: wait, then do ``then`` (or answer well);
- ``Hang()``: never answer (until the client gives up or the server stops);
- ``Reset()``: drop the connection without a response.

``latency`` delays every answer; ``requests`` records each request's JSON body
and headers; with ``api_key`` set, a request without ``Authorization: Bearer
<api_key>`` is answered 401 (both endpoints). ``good_answer(body, model_subjects)``
(or the responder ``lists_subjects(...)``) also lists subjects as the model found
them, for the grounding tests. Used by the tests and by ``bench/annotate.py``.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from aiohttp import web

_SUBJECT_LINE = re.compile(r"^(S\d+): ", re.MULTILINE)
_ATTR_LINE = re.compile(r"^(A\d+): ", re.MULTILINE)
_REL_LINE = re.compile(r"^(S\d+) (\S+) ([SA]\d+)$", re.MULTILINE)
_STEP = re.compile(r"^Step: (\w+)", re.MULTILINE)
ATTRIBUTE_TEXTS = ["red scarf", "blue denim jacket", "short brown hair", "silver watch"]


@dataclass
class Reply:
    text: str


@dataclass
class Status:
    code: int
    retry_after: float | str | None = None


@dataclass
class Slow:
    seconds: float
    then: Any = None


@dataclass
class Hang:
    pass


@dataclass
class Reset:
    pass


def request_text(body: dict[str, Any]) -> str:
    """All text parts of a request's user messages, joined."""
    out = []
    for msg in body.get("messages", []):
        content = msg.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out += [p.get("text", "") for p in content if p.get("type") == "text"]
    return "\n".join(out)


def first_image_url(body: dict[str, Any]) -> str | None:
    """The data URL of a request's first image (identifies the input it is about)."""
    for msg in body.get("messages", []):
        if isinstance(msg.get("content"), list):
            for p in msg["content"]:
                if p.get("type") == "image_url":
                    return p["image_url"]["url"]
    return None


def good_answer(body: dict[str, Any], model_subjects: list[dict[str, Any]] | None = None,
                refer: Collection[str] | None = None) -> dict[str, Any]:
    """A valid answer for the request's step, built from the ids its prompt lists.

    ``model_subjects``: subjects the model lists itself (the ``ground`` answer, or
    ``"subjects"`` of a ``single`` answer), as given; a ``single`` answer also
    groups an attribute under each of their ids in ``refer`` (default: all).
    """
    text = request_text(body)
    steps = _STEP.findall(text)
    step = steps[0] if steps else "single"
    subjects = list(dict.fromkeys(_SUBJECT_LINE.findall(text)))
    if step == "ground":
        return {"subjects": list(model_subjects or [])}
    listed = [str(m["id"]) for m in model_subjects or [] if m.get("id") is not None]
    if step == "single":
        subjects += [i for i in listed if (refer is None or i in refer) and i not in subjects]
    attrs = [{"id": f"A{i + 1}", "subject": s, "text": ATTRIBUTE_TEXTS[i % len(ATTRIBUTE_TEXTS)],
              "category": "clothing", "predicate": "wears"} for i, s in enumerate(subjects)]
    rels = [{"subject": a, "predicate": "stands_next_to", "object": b}
            for a, b in zip(subjects, subjects[1:], strict=False)]
    if step == "caption":
        return {"caption": f"A scene with {len(subjects) or 'no'} people."}
    if step == "groups":
        return {"attributes": attrs}
    if step == "relations":
        return {"relations": rels}
    if step == "relcaption":
        lines = _REL_LINE.findall(text.split("Relations:", 1)[-1])
        parts = [f"{{{s}}} {p.replace('_', ' ')} {{{o}}}" for s, p, o in lines]
        return {"relational_caption": "; ".join(parts)}
    grouping = [f"{{{a['subject']}}} wears {{{a['id']}}}" for a in attrs]
    pairs = [f"{{{r['subject']}}} stands next to {{{r['object']}}}" for r in rels]
    answer = {"caption": f"A scene with {len(subjects) or 'no'} people.", "attributes": attrs,
              "relations": rels, "relational_caption": "; ".join(grouping + pairs)}
    if model_subjects is not None:
        answer["subjects"] = list(model_subjects)
    return answer


def lists_subjects(model_subjects: list[dict[str, Any]], refer: Collection[str] | None = None
                   ) -> Callable[[dict[str, Any]], Reply]:
    """A responder: good answers that list ``model_subjects`` (see :func:`good_answer`)."""
    def respond(body: dict[str, Any]) -> Reply:
        return Reply(json.dumps(good_answer(body, model_subjects, refer)))

    return respond


def completion(content: str, model: str) -> dict[str, Any]:
    return {"id": "chatcmpl-test", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class ChatServer:
    """Start with ``with ChatServer() as srv:``; ``srv.base_url`` ends in ``/v1``."""

    def __init__(self, models: tuple[str, ...] = ("test-vlm",), latency: float = 0.0,
                 refuse_response_format: bool = False, api_key: str | None = None) -> None:
        self.models = models
        self.api_key = api_key
        self.latency = latency
        self.refuse_response_format = refuse_response_format
        self.script: deque[Any] = deque()
        self.responder: Callable[[dict[str, Any]], Any] | None = None  # after the script
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ChatServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _refused(self, request: web.Request) -> web.Response | None:
        if self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        return web.json_response({"error": {"message": "invalid api key"}}, status=401)

    async def _models(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        return web.json_response({"object": "list",
                                  "data": [{"id": m, "object": "model"} for m in self.models]})

    def _next_action(self, body: dict[str, Any]) -> Any:
        with self._lock:
            if self.script:
                return self.script.popleft()
        return self.responder(body) if self.responder else None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        with self._lock:
            self.requests.append({"body": body, "headers": dict(request.headers)})
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            return await self._act(request, body, self._next_action(body))
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _act(self, request: web.Request, body: dict[str, Any],
                   action: Any) -> web.StreamResponse:
        model = body.get("model", "")
        refused = self._refused(request)
        if refused is not None:
            return refused
        if model not in self.models:
            return web.json_response({"error": {"message": f"model {model} not found"}},
                                     status=404)
        if self.refuse_response_format and "response_format" in body:
            return web.json_response({"error": {"message": "response_format not supported"}},
                                     status=400)
        if isinstance(action, Slow):
            await asyncio.sleep(action.seconds)
            action = action.then
        if isinstance(action, Hang):
            await asyncio.sleep(3600)
        if isinstance(action, Reset):
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        if isinstance(action, Status):
            headers = {"Retry-After": str(action.retry_after)} if action.retry_after else {}
            return web.json_response({"error": {"message": f"scripted {action.code}"}},
                                     status=action.code, headers=headers)
        content = action.text if isinstance(action, Reply) else json.dumps(good_answer(body))
        return web.json_response(completion(content, model))
