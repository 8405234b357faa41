"""Bounded model answers (issue #14): response size, raw text kept, list caps, bad UTF-8.

The ``openai`` cases talk HTTP to the scripted chat server of ``tests.servers``,
with each HTTP client (``annotate.client``: ``sdk`` and ``aiohttp``); a subclass
adds raw-bytes bodies (invalid UTF-8, non-completions) and endless streamed bodies
that count what the server managed to send before the client hung up.
"""

from __future__ import annotations

import json
import pickle
import threading
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from relshard.rawtext import RAW_OUTPUT_MAX_BYTES, clip_raw_output, decode_text, storable
from relshard.spec import OpenAIAnnotate, parse_spec
from relshard.workers.annotate import parsing as P
from relshard.workers.annotate.base import Annotation, AnnotationFailure
from relshard.workers.annotate.engine import AnswerError, _Failed
from relshard.workers.annotate.openai_backend import OpenAIAnnotator
from tests.servers.chat_server import ChatServer, Reply, completion, good_answer
from tests.unit.workers.annotate.helpers import draft


@dataclass
class Raw:
    """HTTP 200 with these exact body bytes."""

    data: bytes


@dataclass
class Flood:
    """``status`` with a body of ``total`` bytes, streamed in 64 KiB writes."""

    status: int
    total: int


class RawChatServer(ChatServer):
    def __init__(self, client: str = "sdk") -> None:
        super().__init__()
        self.client = client
        self.flooded = 0  # bytes of Flood bodies written before the client hung up
        self.flood_done = threading.Event()

    async def _act(self, request: web.Request, body: dict[str, Any],
                   action: Any) -> web.StreamResponse:
        if isinstance(action, Raw):
            return web.Response(body=action.data, content_type="application/json")
        if isinstance(action, Flood):
            return await self._flood(request, action)
        return await super()._act(request, body, action)

    async def _flood(self, request: web.Request, action: Flood) -> web.StreamResponse:
        resp = web.StreamResponse(status=action.status,
                                  headers={"Content-Type": "application/json"})
        resp.content_length = action.total
        chunk = b'{"x": "' + b"A" * (64 * 1024 - 7)
        try:
            await resp.prepare(request)
            while self.flooded < action.total:
                await resp.write(chunk)
                self.flooded += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        finally:
            self.flood_done.set()
        return resp


@pytest.fixture(params=["sdk", "aiohttp"])
def server(request):
    with RawChatServer(client=request.param) as srv:
        yield srv


def _run(srv: ChatServer, **over: Any) -> list[Annotation | AnnotationFailure]:
    cfg = {"backend": "openai", "client": getattr(srv, "client", "sdk"),
           "base_url": srv.base_url, "model": "test-vlm",
           "backoff_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 10.0, **over}
    ann = OpenAIAnnotator(OpenAIAnnotate.model_validate(cfg))
    ann.setup()
    try:
        return ann.annotate([draft(2)])
    finally:
        ann.teardown()


def _sized(raw: str | None) -> int:
    assert raw is not None
    return len(raw.encode("utf-8"))


# -- the raw-text helper -----------------------------------------------------------------------


def test_clip_keeps_head_and_tail_within_the_limit() -> None:
    text = "HEAD" + "é" * 100_000 + "x" * 50_001 + "TAIL"
    clipped = clip_raw_output(text)
    assert clipped is not None and _sized(clipped) <= RAW_OUTPUT_MAX_BYTES
    assert clipped.startswith("HEAD") and clipped.endswith("TAIL")
    assert "relshard cut" in clipped and f"of {len(text.encode())} bytes" in clipped
    assert clip_raw_output("short") == "short" and clip_raw_output(None) is None
    for limit in (64, 65, 100, 1000):  # cuts inside multi-byte characters stay valid UTF-8
        assert _sized(clip_raw_output("ü€😀" * 500, limit)) <= limit


def test_invalid_utf8_and_lone_surrogates_become_replacement_characters() -> None:
    assert decode_text(b"ok \xff\xfe done") == "ok \ufffd\ufffd done"
    lone = json.loads('"a\\ud800b"')
    fixed = storable(lone)
    assert fixed.startswith("a\ufffd") and fixed.endswith("b") and "\ud800" not in fixed
    fixed.encode("utf-8")  # storable: no UnicodeEncodeError when parquet writes it
    assert "\ufffd" in (clip_raw_output(lone) or "")


def test_every_reject_raw_output_is_clipped_in_one_place() -> None:
    assert _sized(_Failed("invalid_output", "x", raw="y" * 10**6).raw) <= RAW_OUTPUT_MAX_BYTES
    err = AnswerError("too big", reason="response_too_large", raw="z" * 10**6)
    assert _sized(err.raw) <= RAW_OUTPUT_MAX_BYTES
    again = pickle.loads(pickle.dumps(err))  # Ray ships exceptions between processes
    assert (again.reason, str(again), again.retryable) == ("response_too_large", "too big", False)


# -- response size ----------------------------------------------------------------------------


def test_a_50_mb_answer_is_read_only_to_the_cap_and_rejected_once(server: ChatServer) -> None:
    server.script.append(Reply("A" * 50 * 2**20))
    [fail] = _run(server)
    assert isinstance(fail, AnnotationFailure) and fail.reason == "response_too_large"
    assert "max_response_bytes=4194304" in fail.detail
    assert _sized(fail.raw_output) <= RAW_OUTPUT_MAX_BYTES and "relshard cut" in fail.raw_output
    assert len(server.requests) == 1 and fail.attempts == 1  # not retried


@pytest.mark.parametrize("status", [200, 500])
def test_reading_stops_at_the_cap_on_the_wire(server: RawChatServer, status: int) -> None:
    """A 2 GB body (an answer or an error) is not read: the client hangs up at the cap."""
    server.script.append(Flood(status, 2 * 10**9))
    [fail] = _run(server, max_retries=0, max_response_bytes="1MiB")
    assert server.flood_done.wait(timeout=30)
    assert server.flooded < 64 * 2**20  # the cap plus socket buffers, not the body
    if status == 200:
        assert fail.reason == "response_too_large" and "max_response_bytes=1048576" in fail.detail
        assert _sized(fail.raw_output) <= RAW_OUTPUT_MAX_BYTES
    else:
        assert fail.reason == "backend_unavailable" and "HTTP 500" in fail.detail
        assert len(fail.detail) < 400


def test_max_response_bytes_is_configurable_and_keeps_runs_resumable(server: ChatServer) -> None:
    answer = json.dumps({**good_answer({"messages": []}), "caption": "c" * 20_000})
    server.script.append(Reply(answer))
    [fail] = _run(server, max_response_bytes="16KiB")
    assert fail.reason == "response_too_large"
    [ok] = _run(server, max_response_bytes="1MiB")
    assert isinstance(ok, Annotation)
    base = {"name": "x", "sources": [{"path": "in"}],
            "annotate": {"backend": "openai", "base_url": "http://h/v1", "model": "m"}}
    digest = [parse_spec({**base, "annotate": {**base["annotate"], **over}}).content_hash()
              for over in ({}, {"max_response_bytes": "64MiB"}, {"max_attributes": 8})]
    assert digest[0] == digest[1] != digest[2]
    with pytest.raises(ValueError):
        OpenAIAnnotate.model_validate({**base["annotate"], "max_response_bytes": 10})


def test_a_long_invalid_answer_keeps_head_and_tail_and_echoes_a_clipped_copy(
        server: ChatServer) -> None:
    prose = "BEGIN " + "blah " * 200_000 + " END"  # 1 MB, no JSON
    server.script.extend([Reply(prose), Reply(prose)])
    [fail] = _run(server)
    assert fail.reason == "invalid_output" and fail.attempts == 2
    assert fail.raw_output.startswith("BEGIN") and fail.raw_output.endswith("END")
    assert _sized(fail.raw_output) <= RAW_OUTPUT_MAX_BYTES
    echoed = server.requests[1]["body"]["messages"][-2]["content"]
    assert len(echoed.encode()) <= RAW_OUTPUT_MAX_BYTES


# -- bytes that are not what they claim -------------------------------------------------------


def test_invalid_utf8_answer_keeps_its_raw_text(server: ChatServer) -> None:
    body = json.dumps(completion("PLACEHOLDER", "test-vlm")).encode()
    garbled = body.replace(b"PLACEHOLDER", b"I see \xff\xfe two people")
    server.script.extend([Raw(garbled), Raw(garbled)])
    [fail] = _run(server)
    assert fail.reason == "invalid_output"
    assert fail.raw_output == "I see \ufffd\ufffd two people"


def test_a_200_that_is_not_a_completion_keeps_its_text(server: ChatServer) -> None:
    server.script.append(Raw(b"<html>proxy error \xff</html>"))
    [fail] = _run(server)
    assert fail.reason == "backend_error" and "choices[0].message.content" in fail.detail
    assert fail.raw_output == "<html>proxy error \ufffd</html>"


def test_absurdly_nested_json_is_an_invalid_answer_not_a_crash(server: ChatServer) -> None:
    server.script.extend([Reply("[" * 100_000), Reply("{" * 100_000 + "}" * 100_000)])
    [fail] = _run(server)
    assert fail.reason == "invalid_output" and _sized(fail.raw_output) <= RAW_OUTPUT_MAX_BYTES
    with pytest.raises(P.InvalidAnswer):
        P.extract_json('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")


def test_a_lone_surrogate_in_an_answer_is_storable(server: ChatServer) -> None:
    server.script.extend([Reply("no json \ud800 here"), Reply("no json \ud800 here")])
    [fail] = _run(server)
    assert fail.reason == "invalid_output" and "\ufffd" in fail.raw_output
    fail.raw_output.encode("utf-8")


# -- attributes and relations per record ------------------------------------------------------


def _swollen(attrs: int = 0, rels: int = 0):
    """A responder: first an answer with ``attrs`` extra attributes / ``rels`` relations,
    then good answers."""
    calls = {"n": 0}

    def respond(body: dict[str, Any]) -> Reply:
        calls["n"] += 1
        ans = good_answer(body)
        if calls["n"] == 1:
            ans["attributes"] += [{"id": f"A{i + 3}", "subject": "S1", "text": f"thing {i}",
                                   "category": "object", "predicate": "holds"}
                                  for i in range(attrs)]
            ans["relations"] += [{"subject": "S1", "predicate": "stands_next_to",
                                  "object": "S2"}] * rels
        return Reply(json.dumps(ans))

    return respond


def test_ten_thousand_attributes_are_reasked_once_then_accepted_when_fixed(
        server: ChatServer) -> None:
    server.responder = _swollen(attrs=10_000)
    [ok] = _run(server)
    assert isinstance(ok, Annotation) and len(ok.attributes) == 2
    reask = server.requests[1]["body"]["messages"][-1]["content"][0]["text"]
    assert "10002 attributes, more than the 64 allowed" in reask


def test_too_many_relations_twice_is_an_invalid_output_reject(server: ChatServer) -> None:
    flood = json.dumps({**good_answer({"messages": []}), "relations": [
        {"subject": "S1", "predicate": "stands_next_to", "object": "S2"}] * 300})
    server.script.extend([Reply(flood), Reply(flood)])
    [fail] = _run(server)
    assert fail.reason == "invalid_output" and fail.attempts == 2
    assert "300 relations, more than the 256 allowed" in fail.detail


def test_caps_are_configurable(server: ChatServer) -> None:
    server.responder = _swollen(attrs=3)
    [ok] = _run(server, max_attributes=5)
    assert isinstance(ok, Annotation) and len(ok.attributes) == 5
    server.requests.clear()
    server.responder = _swollen(rels=2)
    [fail] = _run(server, max_relations=1, invalid_retries=0)
    assert fail.reason == "invalid_output" and "more than the 1 allowed" in fail.detail
    with pytest.raises(ValueError):
        OpenAIAnnotate.model_validate({"backend": "openai", "base_url": "http://h/v1",
                                       "model": "m", "max_attributes": 0})


def test_parse_step_checks_counts_before_validating_items() -> None:
    answer = json.dumps({"attributes": [{"bogus": i} for i in range(100)]})
    with pytest.raises(P.InvalidAnswer, match="100 attributes, more than the 64"):
        P.parse_step("groups", answer, limits={"attributes": 64})
    with pytest.raises(P.InvalidAnswer, match="field"):  # no limits: the items are checked
        P.parse_step("groups", answer)
