"""``relshard run`` totals anonymization leaks: the run summary and ``relshard stats`` agree.

A loopback chat-completions server answers with a relational caption that names an
attribute (``red scarf``); with ``on_leak: keep`` every annotated sample with
subjects is written with the leak kept, and both totals count it.
"""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from relshard.pipelines.runner import run_pipeline
from relshard.report.stats import compute_stats
from relshard.spec import parse_spec
from tests.conftest import SAMPLES
from tests.servers.chat_server import ChatServer, Reply, good_answer

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_kept_leaks_are_totalled(ray_session, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("two_people.jpg", "grace_hopper.jpg"):
        shutil.copy(SAMPLES / "images" / name, src / name)
    out = tmp_path / "out"

    def leaky(body):
        answer = good_answer(body)
        if answer.get("attributes"):
            answer["relational_caption"] = "{S1} wears the red scarves"
        return Reply(json.dumps(answer))

    with ChatServer() as srv:
        srv.responder = leaky
        spec = parse_spec({
            "name": "leaks-itest", "sources": [{"path": str(src)}],
            "annotate": {"backend": "openai", "base_url": srv.base_url, "model": "test-vlm",
                         "on_leak": "keep", "backoff_s": 0.01, "timeout_s": 10},
            "output": {"path": str(out)}, "runtime": {"progress": False},
        })
        summary = run_pipeline(spec)
    rows = pq.ParquetDataset(out / "index").read(columns=["leak", "n_subjects"]).to_pylist()
    kept = sum(1 for r in rows if r["leak"] == "kept")
    assert kept == sum(1 for r in rows if r["n_subjects"]) >= 1
    assert summary.leaks == {"kept": kept} and summary.leak_rejects == 0
    assert summary.leak_rate == pytest.approx(kept / summary.samples_written)
    stats = compute_stats(str(out), records=0)
    assert (stats.leaks.kept, stats.leaks.fixed, stats.leaks.rejected) == (kept, 0, 0)
    assert stats.leaks.rate == pytest.approx(summary.leak_rate)
