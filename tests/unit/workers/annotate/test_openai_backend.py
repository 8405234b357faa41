"""The ``openai`` backend against a real HTTP chat-completions peer on 127.0.0.1.

No client is monkeypatched: every test talks HTTP to ``tests.servers.chat_server``,
scripted to answer well, answer malformed JSON, fail with 429/500, reset the
connection, be slow, or hang. Each runs against both HTTP clients (``annotate.client``:
the ``openai`` SDK and the hand-written aiohttp one).
"""

from __future__ import annotations

import email.utils
import json
import time

import pytest

from relshard.errors import BackendError, SpecError
from relshard.spec import OpenAIAnnotate
from relshard.workers.annotate.base import Annotation, AnnotationFailure, preflight
from relshard.workers.annotate.openai_backend import OpenAIAnnotator, parse_retry_after
from tests.servers.chat_server import ChatServer, Hang, Reply, Reset, Slow, Status, good_answer
from tests.unit.workers.annotate.helpers import draft


@pytest.fixture(params=["sdk", "aiohttp"])
def client(request) -> str:
    return request.param


@pytest.fixture()
def server():
    with ChatServer(models=("test-vlm", "other")) as srv:
        yield srv


def _annotator(srv: ChatServer, client: str, **over) -> OpenAIAnnotator:
    cfg = {"backend": "openai", "client": client, "base_url": srv.base_url,
           "model": "test-vlm", "backoff_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5.0, **over}
    ann = OpenAIAnnotator(OpenAIAnnotate.model_validate(cfg))
    ann.setup()
    return ann


def _run(ann: OpenAIAnnotator, samples):
    try:
        return ann.annotate(samples)
    finally:
        ann.teardown()


def _leaky(body) -> str:
    ans = good_answer(body)
    ans["relational_caption"] = "{S1} wears the red scarf next to {S2}"
    return json.dumps(ans)


def test_good_answers_become_annotations_with_provenance(server, monkeypatch, client):
    monkeypatch.setenv("RELSHARD_TEST_KEY", "sk-secret-123")
    ann = _annotator(server, client, api_key_env="RELSHARD_TEST_KEY", frames_per_request=3)
    [image, clip] = _run(ann, [draft(2, "img"), draft(3, "clip", frames=8)])
    assert isinstance(image, Annotation) and isinstance(clip, Annotation)
    assert [a.id for a in clip.attributes] == ["A1", "A2", "A3"]
    assert ("S1", "stands_next_to", "S2") in {(r.subject, r.predicate, r.object)
                                              for r in clip.relations}
    assert clip.relational_caption.startswith("{S1} wears {A1}")
    assert image.provenance.backend == "openai" and image.provenance.model == "test-vlm"
    # the default asks the model for subjects too, with the v2 prompts
    assert image.provenance.prompt_version.startswith("v2-")
    assert image.provenance.prompt_version.endswith("/single/subjects=both")
    bodies = sorted((r["body"] for r in server.requests), key=lambda b: len(json.dumps(b)))
    parts = [p for m in bodies[1]["messages"] if isinstance(m["content"], list)
             for p in m["content"] if p["type"] == "image_url"]
    assert len(parts) == 3 and parts[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert bodies[0]["response_format"]["type"] == "json_schema"
    assert {r["headers"]["Authorization"] for r in server.requests} == {"Bearer sk-secret-123"}
    assert "sk-secret" not in repr(image) + repr(ann.cfg) + ann.cfg.model_dump_json()


def test_invalid_answer_is_reasked_with_the_error_then_rejected(server, client):
    server.script.extend([Reply("I think there are two people."), None])
    [ok] = _run(_annotator(server, client), [draft(2)])
    assert isinstance(ok, Annotation)
    second = server.requests[1]["body"]["messages"]
    assert second[-2]["role"] == "assistant" and "two people" in second[-2]["content"]
    assert "no JSON object" in second[-1]["content"][0]["text"]

    bad = json.dumps({"caption": "x", "attributes": [{"id": "A1", "subject": "S7", "text": "hat"}],
                      "relations": [], "relational_caption": "{S1} wears {A1}"})
    server.script.extend([Reply("```json\n" + bad + "\n```"), Reply(bad)])
    [fail] = _run(_annotator(server, client), [draft(2)])
    assert isinstance(fail, AnnotationFailure)
    assert fail.reason == "invalid_output" and "S7" in fail.detail
    assert fail.raw_output == bad and fail.attempts == 2


def test_429_500_reset_and_slow_are_retried(server, client):
    server.script.extend([Status(429, retry_after=0.01), Status(500), Reset(), Slow(1.0)])
    ann = _annotator(server, client, timeout_s=0.4)
    [ok] = _run(ann, [draft(2)])
    assert isinstance(ok, Annotation)
    assert ann.client.retries == 4


def test_hanging_server_times_out_and_rejects_after_retries(server, client):
    server.script.extend([Hang(), Hang()])
    ann = _annotator(server, client, timeout_s=0.3, max_retries=1)
    [fail] = _run(ann, [draft(1)])
    assert isinstance(fail, AnnotationFailure) and fail.reason == "backend_unavailable"
    assert "timeout_s=0.3" in fail.detail


def test_a_reset_is_a_connection_failure_not_a_timeout(server, client):
    server.script.append(Reset())
    [fail] = _run(_annotator(server, client, max_retries=0), [draft(1)])
    assert fail.reason == "backend_unavailable" and "connection failed" in fail.detail


def test_non_retryable_status_fails_at_once(server, client):
    server.script.append(Status(422))
    ann = _annotator(server, client)
    [fail] = _run(ann, [draft(1)])
    assert fail.reason == "backend_error" and "422" in fail.detail and ann.client.retries == 0


def test_max_in_flight_requests_are_really_in_flight(client):
    with ChatServer(latency=0.2) as srv:
        results = _run(_annotator(srv, client, max_in_flight=8), [draft(1, f"k{i}", seed=i)
                                                          for i in range(24)])
        assert all(isinstance(r, Annotation) for r in results)
        assert srv.max_in_flight == 8


def test_structured_output_falls_back_to_prompt_only(client):
    with ChatServer(refuse_response_format=True) as srv:
        [ok] = _run(_annotator(srv, client), [draft(2)])
        assert isinstance(ok, Annotation)
        assert "response_format" not in srv.requests[-1]["body"]
    with ChatServer() as srv:
        _run(_annotator(srv, client, structured_output="none"), [draft(1)])
        assert "response_format" not in srv.requests[0]["body"]


def test_staged_prompts_run_in_order(server, client):
    [ok] = _run(_annotator(server, client, prompt_mode="staged"), [draft(2)])
    assert isinstance(ok, Annotation) and ok.relational_caption
    steps = [r["body"]["response_format"]["json_schema"]["name"] for r in server.requests]
    assert steps == ["relshard_ground", "relshard_caption", "relshard_groups",
                     "relshard_relations", "relshard_relcaption"]
    assert ok.provenance.prompt_version.endswith("/staged/subjects=both")


def test_cache_means_a_rerun_makes_no_calls(server, tmp_path, client):
    samples = [draft(2, f"k{i}", seed=i) for i in range(3)]
    first = _run(_annotator(server, client, cache=str(tmp_path / "cache")), samples)
    calls = len(server.requests)
    assert calls == 3
    again = _run(_annotator(server, client, cache=str(tmp_path / "cache")), samples)
    assert len(server.requests) == calls
    assert [a.relational_caption for a in again] == [a.relational_caption for a in first]
    _run(_annotator(server, client, cache=str(tmp_path / "cache"), temperature=0.7), samples[:1])
    assert len(server.requests) == calls + 1  # other generation parameters: a new call


@pytest.mark.parametrize("policy", ["retry", "reject", "keep"])
def test_leaky_relational_captions(server, policy, client):
    sample = draft(2)
    server.script.append(Reply(_leaky({"messages": [{"role": "user", "content": (
        "Step: single\nS1: person\nS2: person")}]})))
    [res] = _run(_annotator(server, client, on_leak=policy), [sample])
    if policy == "retry":
        assert isinstance(res, Annotation)
        assert res.warnings == ["anonymization_leak_fixed: 'red', 'scarf'"]
        assert "not anonymized" in server.requests[1]["body"]["messages"][-1]["content"][0]["text"]
    elif policy == "reject":
        assert isinstance(res, AnnotationFailure) and res.reason == "anonymization_leak"
        assert "red scarf" in res.raw_output
    else:
        assert isinstance(res, Annotation) and "red scarf" in res.relational_caption
        assert res.warnings[0].startswith("anonymization_leak:")


def test_preflight_one_clear_error(server, monkeypatch, client):
    def check(**over):
        cfg = {"backend": "openai", "client": client, "base_url": server.base_url,
               "model": "test-vlm", **over}
        preflight(OpenAIAnnotator(OpenAIAnnotate.model_validate(cfg)))

    check()
    with pytest.raises(BackendError, match="does not serve model 'nope'.*test-vlm"):
        check(model="nope")
    with pytest.raises(BackendError, match="unreachable"):
        check(base_url="http://127.0.0.1:9/v1")
    monkeypatch.delenv("RELSHARD_UNSET_KEY", raising=False)
    with pytest.raises(SpecError, match="RELSHARD_UNSET_KEY"):
        check(api_key_env="RELSHARD_UNSET_KEY")


def test_preflight_names_a_refused_key(monkeypatch, client):
    monkeypatch.setenv("RELSHARD_TEST_KEY", "sk-wrong")
    with ChatServer(api_key="sk-right") as srv:
        cfg = {"backend": "openai", "client": client, "base_url": srv.base_url,
               "model": "test-vlm", "api_key_env": "RELSHARD_TEST_KEY"}
        with pytest.raises(BackendError, match="refused the API key \\(HTTP 401\\)") as info:
            preflight(OpenAIAnnotator(OpenAIAnnotate.model_validate(cfg)))
        assert "sk-wrong" not in str(info.value)
        monkeypatch.setenv("RELSHARD_TEST_KEY", "sk-right")
        preflight(OpenAIAnnotator(OpenAIAnnotate.model_validate(cfg)))


def test_only_the_named_variable_is_a_key(server, monkeypatch, client):
    """The SDK would read OPENAI_API_KEY and friends: none of them reaches the server."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-ambient")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-ambient")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-ambient")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    [ok] = _run(_annotator(server, client), [draft(1)])
    assert isinstance(ok, Annotation)
    headers = {k.lower(): v for k, v in server.requests[0]["headers"].items()}
    assert "authorization" not in headers and "openai-organization" not in headers
    assert "ambient" not in json.dumps(server.requests)
    monkeypatch.setenv("RELSHARD_TEST_KEY", "sk-named")
    _run(_annotator(server, client, api_key_env="RELSHARD_TEST_KEY"), [draft(1)])
    assert server.requests[-1]["headers"]["Authorization"] == "Bearer sk-named"


def test_retry_after_is_honoured_beyond_backoff_max(server, client):
    server.script.append(Status(429, retry_after=0.3))
    ann = _annotator(server, client, backoff_max_s=0.05)
    [ok] = _run(ann, [draft(1)])
    assert isinstance(ok, Annotation) and ann.client.retries == 1
    assert 0.3 <= ann.client.waits[0] <= 0.35  # what the server asked, plus the jitter


def test_retry_after_as_an_http_date(server, client):
    soon = email.utils.formatdate(time.time() + 2, usegmt=True)  # whole seconds: 1-2 s away
    server.script.append(Status(503, retry_after=soon))
    ann = _annotator(server, client)
    start = time.perf_counter()
    [ok] = _run(ann, [draft(1)])
    assert isinstance(ok, Annotation) and ann.client.retries == 1
    assert ann.client.waits[0] >= 0.9 and time.perf_counter() - start >= 0.9


def test_a_retry_after_past_the_limit_fails_at_once(server, client):
    later = email.utils.formatdate(time.time() + 3600, usegmt=True)
    server.script.extend([Status(429, retry_after=later), Status(429, retry_after=120)])
    ann = _annotator(server, client)
    [fail] = _run(ann, [draft(1)])
    assert fail.reason == "backend_unavailable" and ann.client.retries == 0
    assert "more than retry_after_max_s=300" in fail.detail and "HTTP 429" in fail.detail
    [fail] = _run(_annotator(server, client, retry_after_max_s=60), [draft(1)])
    assert "retry after 120 s" in fail.detail and len(server.requests) == 2


def test_parse_retry_after_both_forms():
    now = 1_800_000_000.0
    assert parse_retry_after("7", now) == 7.0 and parse_retry_after(" 1.5 ", now) == 1.5
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(30.0)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0
    assert parse_retry_after("-3", now) == 0.0
    for junk in (None, "", "soon", "nan", "Mon, 99 Foo 2026"):
        assert parse_retry_after(junk, now) is None


def test_scheduling_settings_keep_a_run_resumable():
    from relshard.spec import parse_spec

    base = {"name": "x", "sources": [{"path": "in"}],
            "annotate": {"backend": "openai", "base_url": "http://127.0.0.1:8000/v1",
                         "model": "m"}}

    def digest(**annotate):
        return parse_spec({**base, "annotate": {**base["annotate"], **annotate}}).content_hash()

    assert digest() == digest(max_in_flight=8, timeout_s=5, cache="/tmp/c",
                              base_url="http://127.0.0.1:9000/v1", client="sdk",
                              retry_after_max_s=10)
    assert digest() != digest(model="other") != digest(prompt_mode="staged")
