"""The Python API (relshard.api) without Ray: specs, results, the CLI layer over it."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

import relshard
from relshard import api
from relshard.cli import ORDER, app
from relshard.errors import RejectBudgetExceeded, RelshardError, SpecError
from relshard.pipelines.budget import check_reject_budget, over_budget
from relshard.spec import OutputSpec, TransformersAnnotate, parse_spec
from tests.unit.report.builds import write_build

runner = CliRunner()
SPEC = {"name": "t", "sources": [{"path": "imgs"}], "output": {"path": "out/t"}}


# ---- the package ---------------------------------------------------------------------------


def test_api_is_exported_lazily() -> None:
    code = ("import sys, relshard; assert 'relshard.api' not in sys.modules; "
            "assert 'ray' not in sys.modules and 'pyarrow' not in sys.modules; "
            "relshard.run; assert 'relshard.api' in sys.modules; "
            "assert 'ray' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    for name in ("run", "stats", "verify", "build_benchmark", "show", "export", "spec_from",
                 "submit", "train", "evaluate", "load_spec", "PipelineSpec", "RunSummary"):
        assert name in relshard.__all__
        assert getattr(relshard, name) is not None
    with pytest.raises(AttributeError):
        relshard.nothing_here  # noqa: B018


# ---- specs ---------------------------------------------------------------------------------


def test_spec_from_dict_yaml_file_and_keywords(tmp_path: Path) -> None:
    from_dict = api.spec_from(SPEC)
    from_yaml = api.spec_from("name: t\nsources: [{path: imgs}]\noutput: {path: out/t}\n")
    path = tmp_path / "spec.yaml"
    path.write_text("name: t\nsources: [{path: imgs}]\noutput: {path: out/t}\n")
    from_file = api.spec_from(path)
    from_str_path = api.spec_from(str(path))
    from_kwargs = api.spec_from(name="t", sources=["imgs"], output={"path": "out/t"})
    specs = (from_dict, from_yaml, from_file, from_str_path, from_kwargs)
    assert len({s.model_dump_json() for s in specs}) == 1
    assert api.spec_from(from_dict) is from_dict
    assert relshard.load_spec(path) == from_file


def test_spec_from_merges_keywords_over_a_source_key_by_key() -> None:
    base = {**SPEC, "output": {"path": "out/t", "max_reject_fraction": 0.2}}
    spec = api.spec_from(base, output={"path": "elsewhere"}, decode={"max_side": 256})
    assert spec.output.path == "elsewhere" and spec.output.max_reject_fraction == 0.2
    assert spec.decode.max_side == 256
    again = api.spec_from(spec, name="renamed")
    assert again.name == "renamed" and again.output.path == "elsewhere"


@pytest.mark.parametrize(("source", "fields", "match"), [
    (None, {}, "needs a spec"),
    ({**SPEC, "colour": 1}, {}, "unknown key 'colour'"),
    ("name: [unclosed\nsources: x\n", {}, "not valid YAML"),
    ("- a\n- b\n", {}, "YAML mapping"),
    ("missing.yaml", {}, "does not exist"),
    (None, {"name": "t"}, "missing required key 'sources'"),
])
def test_spec_from_user_errors_are_one_sentence(source: object, fields: dict[str, object],
                                                match: str) -> None:
    with pytest.raises(SpecError, match=match):
        api.spec_from(source, **fields)  # type: ignore[arg-type]


# ---- one meaning per knob -----------------------------------------------------------------


def test_shard_max_samples_alone_still_sets_the_write_batch_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    with pytest.warns(DeprecationWarning, match="output.write_batch_inputs"):
        old = OutputSpec(shard_max_samples=4)
    assert old.write_batch_inputs == 4 and old.shard_max_samples == 4
    assert "deprecated: output.shard_max_samples" in caplog.text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert OutputSpec().write_batch_inputs == 1000
        both = OutputSpec(shard_max_samples=4, write_batch_inputs=50)
        assert (both.shard_max_samples, both.write_batch_inputs) == (4, 50)
        same = OutputSpec(shard_max_samples=1000)  # the default write batch: nothing changes
        assert same.write_batch_inputs == 1000
        # a resolved spec (spec.resolved.json, a submitted job) reloads without a warning
        assert OutputSpec.model_validate(old.model_dump()).write_batch_inputs == 4


def test_transformers_batch_size_alone_still_sets_the_generate_batch_with_a_warning() -> None:
    base = {"backend": "transformers", "model_path": "m"}
    with pytest.warns(DeprecationWarning, match="annotate.generate_batch_size"):
        old = TransformersAnnotate.model_validate({**base, "batch_size": 4})
    assert (old.batch_size, old.generate_batch_size) == (4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert TransformersAnnotate.model_validate(base).generate_batch_size == 16
        new = TransformersAnnotate.model_validate({**base, "batch_size": 64,
                                                   "generate_batch_size": 8})
        assert (new.batch_size, new.generate_batch_size) == (64, 8)


def test_the_new_knobs_schedule_and_do_not_change_the_content_hash() -> None:
    annotate = {"backend": "transformers", "model_path": "m", "batch_size": 16}
    one = parse_spec({**SPEC, "annotate": annotate})
    two = parse_spec({**SPEC, "annotate": {**annotate, "generate_batch_size": 2},
                      "output": {"path": "o", "write_batch_inputs": 7}})
    assert one.content_hash() == two.content_hash()


# ---- the reject budget ---------------------------------------------------------------------


@pytest.mark.parametrize(("rejected", "seen", "fraction", "min_seen", "over"), [
    (0, 0, 0.5, 1, False),     # nothing seen: no verdict
    (6, 7, 0.5, 1, True),      # the end of a run: any count
    (6, 7, 0.5, 100, False),   # while running: not before reject_check_after
    (60, 100, 0.5, 100, True),
    (50, 100, 0.5, 100, False),  # exactly the budget is allowed
    (1, 1, 0.0, 1, True),
])
def test_one_reject_budget_check(rejected: int, seen: int, fraction: float, min_seen: int,
                                 over: bool) -> None:
    assert over_budget(rejected, seen, fraction, min_seen) is over
    if over:
        with pytest.raises(RejectBudgetExceeded) as info:
            check_reject_budget(rejected, seen, fraction, min_seen)
        assert (info.value.rejected, info.value.seen, info.value.fraction) == (
            rejected, seen, fraction)
    else:
        check_reject_budget(rejected, seen, fraction, min_seen)


# ---- results -------------------------------------------------------------------------------


def test_run_summary_to_dict_has_counts_rejects_and_paths() -> None:
    from relshard.pipelines.runner import RunSummary

    summary = RunSummary(output="out/x/", run_id="r", inputs_written=3, samples_written=4,
                         rejected={"corrupt": 2, "timeout": 1})
    data = json.loads(json.dumps(summary.to_dict()))
    assert data["rejected_total"] == 3 and data["rejected"]["corrupt"] == 2
    assert data["paths"]["manifest"] == "out/x/manifest.json"
    assert data["paths"]["shards"] == "out/x/shards"


def test_stats_verify_show_on_a_build(tmp_path: Path) -> None:
    out = write_build(tmp_path / "out")
    stats = api.stats(out, records=0)
    assert stats.to_dict()["samples"] == 9
    assert stats.missing_shards == []
    checked = api.verify(out)
    assert checked.ok and "problems" in checked.to_dict()
    shown = api.show(out, n=2, to=tmp_path / "g.html")
    assert shown.path.is_file() and shown.to_dict()["path"] == str(tmp_path / "g.html")


def test_api_user_errors_raise_relshard_errors(tmp_path: Path) -> None:
    with pytest.raises(RelshardError):
        api.stats(tmp_path / "nothing")
    with pytest.raises(RelshardError):
        api.verify(tmp_path / "nothing")
    with pytest.raises(RelshardError, match="three non-negative shares"):
        api.parse_split("1,2")
    assert api.parse_split((0.5, 0.25, 0.25)) == {"train": 0.5, "val": 0.25, "test": 0.25}
    with pytest.raises(RelshardError, match="no finished run"):
        api.build_benchmark(tmp_path, to=tmp_path / "bench")


def test_build_benchmark_returns_a_result(tmp_path: Path) -> None:
    out = write_build(tmp_path / "out")
    bench = api.build_benchmark(out, to=tmp_path / "bench", split="0.6,0.2,0.2",
                                allow_empty=True)
    assert set(bench.splits) == {"train", "val", "test"}
    assert bench.to_dict()["splits"] == bench.splits
    assert (tmp_path / "bench" / "benchmark.json").is_file()


# ---- the CLI over it -----------------------------------------------------------------------


def test_help_lists_commands_in_the_order_of_the_work_and_version() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    positions = [result.output.index(f" {name} ") for name in ORDER]
    assert positions == sorted(positions)
    assert runner.invoke(app, ["--version"]).output.strip() == relshard.__version__
    module = subprocess.run([sys.executable, "-m", "relshard", "--version"], check=True,
                            capture_output=True, text=True)
    assert module.stdout.strip() == relshard.__version__


def test_quiet_everywhere_and_no_progress_into_a_pipe(tmp_path: Path) -> None:
    out = str(write_build(tmp_path / "out"))
    for args in (["stats", out, "--records", "0"], ["verify", out],
                 ["show", out, "-n", "1", "-o", str(tmp_path / "g.html")]):
        for extra in ([], ["--quiet"], ["-q"]):
            result = runner.invoke(app, [*args, *extra])
            assert result.exit_code == 0, result.output
            assert "\r" not in result.output  # no live display when not a terminal
    for command in ("run", "submit", "build-benchmark", "train", "evaluate", "export"):
        assert "--quiet" in runner.invoke(app, [command, "--help"]).output


def test_cli_user_errors_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder" in result.output
    result = runner.invoke(app, ["build-benchmark", str(tmp_path), "--to", str(tmp_path / "b"),
                                 "--split", "1,2"])
    assert result.exit_code == 2 and "three non-negative shares" in result.output
