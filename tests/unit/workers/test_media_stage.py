"""The media stage with its followers: decode -> detect -> heuristic annotate in one trip."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest

from relshard.pipelines.ray_backend import _run_stage
from relshard.pipelines.runner import build_stages, video_share
from relshard.shards.item import InputRef, WorkItem
from relshard.spec import parse_spec
from relshard.workers.annotate.stage import AnnotateStage
from relshard.workers.media import IMAGE_BATCH, VIDEO_BATCH, MediaStage


def _spec(tmp_path: Path, **parts: object) -> object:
    data: dict[str, object] = {"name": "t", "sources": [{"path": str(tmp_path)}],
                               "output": {"path": str(tmp_path / "out")},
                               "detect": {"backend": "none"}}
    data.update(parts)
    return parse_spec(data)


def _images(tmp_path: Path, n: int) -> list[WorkItem]:
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        img = np.full((96, 128, 3), (40 * i) % 255, np.uint8)
        img[20:70, 30:90] = rng.integers(0, 255, 3, dtype=np.uint8)
        path = tmp_path / f"im{i}.jpg"
        cv2.imwrite(str(path), img)
        items.append(WorkItem(InputRef(f"im{i}", str(path), "auto", path.stat().st_size)))
    return items


def test_a_stateless_annotator_runs_beside_decode_and_a_model_one_does_not(tmp_path):
    stages = build_stages(_spec(tmp_path))
    assert len(stages) == 1 and isinstance(stages[0], MediaStage)
    assert [f.name for f in stages[0].followers] == ["annotate"]
    model = _spec(tmp_path, annotate={"backend": "openai", "model": "m",
                                      "base_url": "http://127.0.0.1:9/v1"})
    stages = build_stages(model)
    assert [type(s) for s in stages] == [MediaStage, AnnotateStage]
    assert stages[0].followers == []
    own = _spec(tmp_path, annotate={"backend": "heuristic", "resources": {"num_cpus": 2}})
    assert len(build_stages(own)) == 2  # other resources: its own tasks


def test_tasks_are_sized_by_what_the_listing_holds(tmp_path):
    table = pa.table({"uri": ["a/x.MP4", "b/y.jpg", "c/z.mkv", "d/mp4.png"]})
    assert video_share([table]) == 0.5
    assert video_share([]) == 0.0
    assert build_stages(_spec(tmp_path), 0.5)[0].batch_size == VIDEO_BATCH
    assert build_stages(_spec(tmp_path), 0.1)[0].batch_size == IMAGE_BATCH
    fixed = _spec(tmp_path, decode={"batch_size": 3})
    assert build_stages(fixed, 0.9)[0].batch_size == 3


@pytest.mark.parametrize("isolate", [True, False])
def test_payloads_come_back_annotated_and_a_bad_input_alone_is_rejected(tmp_path, isolate):
    items = _images(tmp_path, 5)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    items.insert(2, WorkItem(InputRef("broken", str(broken), "auto", 20)))
    stage = build_stages(_spec(tmp_path, decode={"isolate": isolate}))[0]
    assert stage.takes_payloads() is isolate
    table = pa.table({"input_key": [it.input.input_key for it in items],
                      "payload": [it.to_bytes() for it in items]})
    out = _run_stage(stage, table)
    assert out.column("input_key").to_pylist() == table.column("input_key").to_pylist()
    back = [WorkItem.from_bytes(p) for p in out.column("payload").to_pylist()]
    assert back[2].rejected and back[2].reject.stage == "decode"
    for item in back[:2] + back[3:]:
        assert not item.rejected
        (sample,) = item.samples
        assert sample.provenance is not None and sample.provenance.backend == "heuristic"
        assert sample.frames and sample.frames[0].jpeg[:2] == b"\xff\xd8"


def test_the_worker_holding_the_stage_imports_no_decoder_but_the_child_runs_it(tmp_path):
    """The Ray worker that runs the stage only forwards bytes to its child: unpickling
    the stage (what Ray does in it) must not import OpenCV, Pillow or the decoders."""
    import pickle
    import subprocess
    import sys

    (stage,) = build_stages(_spec(tmp_path, annotate={"backend": "heuristic"}))
    assert isinstance(stage, MediaStage)
    assert [type(f) for f in stage.followers] == [AnnotateStage]
    code = ("import pickle, sys; stage = pickle.loads(sys.stdin.buffer.read()); "
            "heavy = [m for m in ('cv2', 'PIL', 'relshard.workers.decode', "
            "'relshard.workers.annotate.heuristic') if m in sys.modules]; "
            "print(type(stage).__name__, heavy)")
    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(stage),
                         capture_output=True, check=True)
    assert out.stdout.decode().strip() == "MediaStage []"
    # and the stage still decodes and annotates, through its child
    items = _images(tmp_path, 2)
    done = stage.process_batch(items)
    assert all(not it.rejected and it.samples for it in done)
    assert all(it.samples[0].provenance.backend == "heuristic" for it in done)
