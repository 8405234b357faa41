"""The stats and verify commands: output formats, exit codes, user errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from relshard.cli import app
from tests.unit.report.builds import shards_of, write_build

runner = CliRunner()


@pytest.fixture()
def build(tmp_path: Path) -> Path:
    return write_build(tmp_path / "out")


def test_stats_json_and_table(build: Path) -> None:
    result = runner.invoke(app, ["stats", str(build), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["samples"] == 9 and data["modality"] == {"image": 5, "video": 4}
    assert data["records"]["leaked"] == 1 and data["reject_rate"] == pytest.approx(2 / 9)
    table = runner.invoke(app, ["stats", str(build), "--records", "0"])
    assert table.exit_code == 0 and "relations per sample" in table.stdout
    assert "anonymization leaks (sampled)" not in table.stdout  # no records sampled
    assert "anonymization leaks (all)" in table.stdout  # from the index, always


def test_stats_html_and_compare_with_a_saved_report(build: Path, tmp_path: Path) -> None:
    saved = tmp_path / "old.json"
    saved.write_text(runner.invoke(app, ["stats", str(build), "--json"]).stdout)
    newer = write_build(tmp_path / "newer", n_video=0)
    html = tmp_path / "r.html"
    result = runner.invoke(app, ["stats", str(newer), "--compare", str(saved),
                                 "--html", str(html)])
    assert result.exit_code == 0, result.output
    assert "modality 'video' is gone (was 4)" in result.stdout
    assert html.read_text().startswith("<!DOCTYPE html>")
    as_json = json.loads(runner.invoke(app, ["stats", str(newer), "--compare", str(build),
                                             "--json"]).stdout)
    figures = {f["figure"]: f for f in as_json["comparison"]["figures"]}
    assert figures["samples"]["delta"] == -4


def test_stats_user_errors_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["stats", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "does not exist" in result.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"samples": "many"}')
    build = write_build(tmp_path / "out")
    result = runner.invoke(app, ["stats", str(build), "--compare", str(bad)])
    assert result.exit_code == 2
    assert "is not a saved `relshard stats --json` report" in result.output


def test_verify_exit_codes_and_repair(build: Path) -> None:
    ok = runner.invoke(app, ["verify", str(build)])
    assert ok.exit_code == 0 and "OK" in ok.stdout
    shutil.rmtree(build / "index")
    broken = runner.invoke(app, ["verify", str(build), "--json"])
    assert broken.exit_code == 1
    problems = json.loads(broken.stdout)["problems"]
    assert sum("no index describes it" in p for p in problems) == len(shards_of(build))
    repaired = runner.invoke(app, ["verify", str(build), "--repair", "--json"])
    assert repaired.exit_code == 0, repaired.output
    data = json.loads(repaired.stdout)
    assert data["ok"] and len(data["repair"]["rewritten"]) == 3 and data["samples"] == 9
    assert runner.invoke(app, ["stats", str(build), "--json"]).exit_code == 0
    missing = runner.invoke(app, ["verify", str(build.parent / "nope")])
    assert missing.exit_code == 2
