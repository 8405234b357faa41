"""``relshard run`` with the ``openai`` backend against a loopback chat-completions server.

End to end on the session's local Ray: the annotate stage runs as an actor pool
that talks HTTP to the scripted server; records carry the model's groups,
relations and anonymized captions; malformed answers land in the rejects ledger
with their raw text; a resume with the response cache makes no new calls; a
wrong model name fails before any work starts.
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from relshard.errors import BackendError
from relshard.pipelines.runner import run_pipeline
from relshard.record import SampleRecord
from relshard.spec import parse_spec
from relshard.workers.detect.nms import iou
from tests.conftest import SAMPLES
from tests.servers.chat_server import (
    ChatServer,
    Reply,
    first_image_url,
    good_answer,
    request_text,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _spec(src: Path, out: Path, srv: ChatServer, **annotate):
    return parse_spec({
        "name": "openai-itest",
        "sources": [{"path": str(src)}],
        "decode": {"frames_per_clip": 4, "max_side": 256},
        "annotate": {"backend": "openai", "base_url": srv.base_url, "model": "test-vlm",
                     "max_in_flight": 8, "batch_size": 8, "backoff_s": 0.01,
                     "timeout_s": 10, **annotate},
        "output": {"path": str(out), "max_reject_fraction": 0.9},
        "runtime": {"progress": False},
    })


def _records(out: Path) -> list[SampleRecord]:
    recs = []
    for shard in sorted(out.glob("**/*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".json"):
                    recs.append(SampleRecord.model_validate_json(tar.extractfile(m).read()))
    return recs


def test_run_with_openai_backend_end_to_end(ray_session, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("two_people.jpg", "grace_hopper.jpg", "chelsea_cat.jpg"):
        shutil.copy(SAMPLES / "images" / name, src / name)
    shutil.copy(SAMPLES / "videos" / "two_people_pan.mp4", src / "pan.mp4")
    out = tmp_path / "out"
    with ChatServer() as srv:
        bad: list[str] = []

        def malformed_for_one_input(body):
            url = first_image_url(body)
            if not bad:
                bad.append(url)
            return Reply("still { not json") if url == bad[0] else None

        srv.responder = malformed_for_one_input
        summary = run_pipeline(_spec(src, out, srv, cache=str(tmp_path / "cache")))
        calls = len(srv.requests)
        assert summary.inputs_written + summary.rejected_total == 4
        assert summary.rejected == {"invalid_output": 1}
        [reject] = pq.ParquetDataset(out / "rejects").read().to_pylist()
        assert reject["stage"] == "annotate" and reject["raw_output"] == "still { not json"
        recs = _records(out)
        assert len(recs) == 3
        assert {r.provenance.backend for r in recs} == {"openai"}
        assert {r.provenance.model for r in recs} == {"test-vlm"}
        with_subjects = [r for r in recs if r.subjects]
        assert with_subjects, "the sample people should be detected"
        for rec in with_subjects:
            assert len(rec.attributes) == len(rec.subjects)
            assert rec.relational_caption.startswith("{S1} wears {A1}")

        # a re-run into a fresh output with the same cache pays for no call
        summary2 = run_pipeline(_spec(src, tmp_path / "out2", srv, cache=str(tmp_path / "cache")))
        assert summary2.inputs_written == 3 and summary2.rejected == {"invalid_output": 1}
        assert len(srv.requests) == calls


_BOX_LINE = re.compile(r"^(S\d+): \w+, (?:frame \d+, )?box \[([^\]]+)\]", re.MULTILINE)
_CORNERS = ([0.01, 0.01, 0.12, 0.16], [0.88, 0.01, 0.99, 0.16], [0.01, 0.84, 0.12, 0.99],
            [0.88, 0.84, 0.99, 0.99])


def _grounding_model(body) -> Reply:
    """Lists the detector's S1 again (a match) and one subject in a free corner (new)."""
    boxes = {sid: [float(v) for v in box.split(",")]
             for sid, box in _BOX_LINE.findall(request_text(body))}
    listed = [{"id": f"S{len(boxes) + 1}", "kind": "person", "bbox": boxes["S1"]}] if boxes else []
    free = next(c for c in _CORNERS if all(iou(c, b) == 0 for b in boxes.values()))
    listed.append({"id": f"S{len(boxes) + 2}", "kind": "person", "bbox": free})
    return Reply(json.dumps(good_answer(body, listed)))


def test_run_with_model_grounded_subjects(ray_session, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("two_people.jpg", "chelsea_cat.jpg"):
        shutil.copy(SAMPLES / "images" / name, src / name)
    shutil.copy(SAMPLES / "videos" / "two_people_pan.mp4", src / "pan.mp4")
    out = tmp_path / "out"
    with ChatServer() as srv:
        srv.responder = _grounding_model
        summary = run_pipeline(_spec(src, out, srv, subjects="both"))
    assert summary.inputs_written == 3 and summary.rejected_total == 0
    names: set[str] = set()
    for shard in out.glob("**/*.tar"):
        with tarfile.open(shard) as tar:
            names.update(tar.getnames())
    recs = _records(out)
    assert any(r.subjects and r.subjects[0].source == "both" for r in recs)
    for rec in recs:
        assert rec.provenance.prompt_version.startswith("v2-")
        assert rec.provenance.prompt_version.endswith("/single/subjects=both")
        sources = [s.source for s in rec.subjects]
        assert sources[-1] == "model" and sources.count("model") == 1
        assert set(sources[:-1]) <= {"detector", "both"}
        assert [s.id for s in rec.subjects] == [f"S{i + 1}" for i in range(len(rec.subjects))]
        for s in rec.subjects:
            assert f"{rec.key}.{s.crop}" in names  # crops for all, the model's included
        owners = {r.subject for r in rec.relations if r.object.startswith("A")}
        assert owners == {s.id for s in rec.subjects}


def test_wrong_model_fails_before_any_work(ray_session, tmp_path):
    out = tmp_path / "out"
    with ChatServer() as srv:
        spec = _spec(SAMPLES / "images", out, srv, model="Qwen/Nope")
        with pytest.raises(BackendError, match="does not serve model 'Qwen/Nope'"):
            run_pipeline(spec)
        assert srv.requests == []
    assert not list(out.glob("**/*.tar"))
    assert json.loads((out / "spec.resolved.json").read_text())["spec"]["annotate"]["model"]
