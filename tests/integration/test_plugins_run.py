"""A real run (local Ray) with a plugin decoder, detector and annotator, isolated or not.

The plugin module is ``tests.plugins.full_plugin``; Ray adds the driver's working
directory (the repo root, where pytest runs) to its local workers' ``sys.path``, so the
workers and the isolated decode child import it by name, as a user's installed plugin.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from relshard.pipelines.runner import run_pipeline
from relshard.record import SampleRecord
from relshard.spec import PipelineSpec, parse_spec
from tests.conftest import SAMPLES

pytestmark = [pytest.mark.ray, pytest.mark.slow]

FULL = "tests.plugins.full_plugin"


def _inputs(root: Path) -> Path:
    root.mkdir()
    (root / "red.swatch").write_text(json.dumps({"width": 80, "height": 60,
                                                 "rgb": [250, 10, 10]}))
    (root / "blue.swatch").write_text(json.dumps({"width": 40, "height": 90,
                                                  "rgb": [10, 10, 250]}))
    (root / "bad.swatch").write_text("not a swatch")
    shutil.copy(SAMPLES / "images" / "grace_hopper.jpg", root / "photo.jpg")
    return root


def _spec(src: Path, out: Path, isolate: bool, **parts: Any) -> PipelineSpec:
    return parse_spec({
        "name": "plugins",
        "sources": [{"path": str(src)}],
        "decode": {"isolate": isolate, "max_side": 256, "batch_size": 2},
        "detect": {"backend": "fixed-box", "options": {"box": [0.1, 0.2, 0.6, 0.9]}},
        "annotate": {"backend": "swatch-namer", "label": "tile"},
        "output": {"path": str(out), "max_reject_fraction": 0.5},
        "runtime": {"progress": False},
        "plugins": [FULL],
        **parts,
    })


def _records(out: Path) -> dict[str, SampleRecord]:
    import webdataset as wds

    manifest = json.loads((out / "manifest.json").read_text())
    shards = [str(out / s["url"]) for s in manifest["shardlist"]]
    return {s["__key__"]: SampleRecord.model_validate_json(s["json"])
            for s in wds.WebDataset(shards, shardshuffle=False)}


@pytest.mark.parametrize("isolate", [False, True], ids=["in-worker", "isolated"])
def test_a_run_uses_the_plugin_decoder_detector_and_annotator(ray_session, tmp_path: Path,
                                                              isolate: bool) -> None:
    src = _inputs(tmp_path / "src")
    out = tmp_path / "out"
    summary = run_pipeline(_spec(src, out, isolate))
    assert summary.inputs_written == 3 and summary.rejected == {"corrupt": 1}

    (reject,) = pq.ParquetDataset(out / "rejects").read().to_pylist()
    assert reject["uri"].endswith("bad.swatch") and "not a swatch" in reject["detail"]

    records = _records(out)
    by_uri = {Path(r.source.uri).name: r for r in records.values()}
    assert set(by_uri) == {"red.swatch", "blue.swatch", "photo.jpg"}
    for name, colour in (("red.swatch", "red"), ("blue.swatch", "blue")):
        rec = by_uri[name]
        assert rec.source.decoder == "swatch" and rec.source.format == "swatch"
        assert rec.caption == f"tile: {colour} with 1 subject(s)"
    for rec in records.values():
        assert rec.provenance.backend == "swatch-namer"
        (subject,) = rec.subjects
        assert subject.detector == "fixed-box" and subject.kind == "person"
        assert subject.bbox == pytest.approx([0.1, 0.2, 0.6, 0.9], abs=0.02)
    assert by_uri["photo.jpg"].source.decoder != "swatch"  # a built-in decoder, same run

    resolved = json.loads((out / "spec.resolved.json").read_text())["spec"]
    assert resolved["annotate"]["label"] == "tile" and resolved["plugins"] == [FULL]
    assert resolved["detect"]["options"]["kind"] == "person"
    # resuming with the same spec: nothing to do, nothing conflicts
    again = run_pipeline(_spec(src, out, isolate))
    assert again.already_done == 4 and again.inputs_written == 0

