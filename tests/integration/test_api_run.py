"""relshard.run, the Python API, on a tiny folder of images made at test time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

import relshard
from relshard.errors import RejectBudgetExceeded

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _images(root: Path, n: int, broken: int = 0) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (64 + 8 * i, 48), (40 * i % 255, 90, 160)).save(root / f"im{i}.jpg")
    for i in range(broken):
        (root / f"broken{i}.jpg").write_bytes(b"\xff\xd8 not a jpeg" * 10)
    return root


def _spec(src: Path, **output: object) -> relshard.PipelineSpec:
    return relshard.spec_from(name="api", sources=[src], detect={"backend": "none"},
                              output=output, runtime={"progress": False})


def test_run_returns_a_summary_and_the_output_verifies(ray_session, tmp_path: Path) -> None:  # noqa: ANN001
    src = _images(tmp_path / "imgs", 3, broken=1)
    out = tmp_path / "out"
    summary = relshard.run(_spec(src), output=out)
    data = json.loads(json.dumps(summary.to_dict()))
    assert data["inputs_written"] == 3 and data["rejected_total"] == 1
    assert sum(data["rejected"].values()) == 1
    assert Path(data["paths"]["manifest"]).is_file()
    assert relshard.verify(out).ok
    assert relshard.stats(out, records=0).to_dict()["samples"] == 3
    again = relshard.run(_spec(src), output=out)  # resumes: nothing left to do
    assert again.already_done == 4 and again.inputs_written == 0


def test_a_blown_budget_crosses_ray_typed(ray_session, tmp_path: Path) -> None:  # noqa: ANN001
    src = _images(tmp_path / "imgs", 1, broken=4)
    out = tmp_path / "out"
    with pytest.raises(RejectBudgetExceeded) as info:  # raised in a write task, on Ray
        relshard.run(_spec(src, path=str(out), max_reject_fraction=0.1,
                           reject_check_after=1, write_batch_inputs=1))
    assert info.value.fraction == 0.1 and info.value.rejected >= 1
    assert not (out / "manifest.json").exists()  # stopped by the monitor, not at the end
