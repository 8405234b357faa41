"""Refusals before any work: nothing is written for a spec that cannot run (issue #14)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from relshard.cli import app
from relshard.errors import SpecError
from relshard.pipelines.runner import new_run_id, run_pipeline
from relshard.shards.lease import OutputLease
from relshard.spec import parse_spec


def _spec(src: Path, out: Path):
    return parse_spec({"name": "refuse", "sources": [{"path": str(src)}],
                       "detect": {"backend": "none"}, "output": {"path": str(out)},
                       "runtime": {"progress": False}})


def test_a_missing_source_creates_no_output_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(SpecError, match="does not exist"):
        run_pipeline(_spec(tmp_path / "nope", out))
    assert not out.exists()


def test_a_source_inside_the_output_is_refused_and_nothing_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    with pytest.raises(SpecError, match="inside the output folder"):
        run_pipeline(_spec(out / "shards", out))
    assert sorted(p.name for p in out.iterdir()) == ["shards"]


def test_a_spec_that_is_a_folder_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", str(tmp_path)])
    assert result.exit_code == 2
    assert "is a folder, not a spec file" in result.output


def test_a_held_output_is_refused_with_exit_2_naming_the_holder(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"x")
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps(_spec(src, out).model_dump(mode="json")))
    with OutputLease(str(out), "holder-run", timeout_s=60):
        result = CliRunner().invoke(app, ["run", str(spec)])
    assert result.exit_code == 2, result.output
    assert "in use by run holder-run" in " ".join(result.output.split())
    assert not (out / "spec.resolved.json").exists()


def test_run_ids_sort_in_start_order() -> None:
    ids = [new_run_id() for _ in range(50)]
    assert all(len(i) == 21 and "-" not in i for i in ids)
    assert [i[:17] for i in ids] == sorted(i[:17] for i in ids)


@pytest.mark.parametrize(("argv", "expected"), [
    (["--retry-rejects"], "retryable"),
    (["--retry-rejects", "timeout,worker_crash"], "timeout,worker_crash"),
    (["--retry-rejects=corrupt"], "corrupt"),
])
def test_retry_rejects_takes_an_optional_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              argv: list[str], expected: str) -> None:
    seen = {}

    def fake_run(spec, **kw):  # noqa: ANN001, ANN003, ANN202
        seen["retry"] = kw["retry"]
        raise SpecError("stop here.")

    monkeypatch.setattr("relshard.pipelines.runner.run_pipeline", fake_run)
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps(_spec(tmp_path, tmp_path / "o").model_dump(mode="json")))
    order = [argv + [str(spec)], [str(spec)] + argv]
    for args in order:
        result = CliRunner().invoke(app, ["run", *args])
        assert result.exit_code == 2, result.output
        assert seen.pop("retry").describe() == expected
