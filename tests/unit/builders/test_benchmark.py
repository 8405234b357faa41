"""Benchmark builds: leak-free stratified splits, streamable split shards, metrics, CLI."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from relshard import ShardStream
from relshard.builders.benchmark import BenchmarkError, build_benchmark
from relshard.builders.evaluate import evaluate_benchmark, split_records
from relshard.builders.metrics import caption_valid, evaluate_relations
from relshard.builders.splits import SampleRow, assign_splits, check_no_leak
from relshard.cli import app
from tests.unit.training.shardgen import make_relational_output


def corpus() -> list[tuple[str, str, int]]:
    """60 sources: clips of one video share a uri, copies share a sha256."""
    out = []
    for v in range(30):  # 30 videos of 3 clips each
        out += [(f"videos/v{v}.mp4", f"h{v}", v % 4)] * 3
    for c in range(30):  # 30 images, every third a byte-identical copy of a video
        sha = f"h{c}" if c % 3 == 0 else f"img{c}"
        out.append((f"images/i{c}.jpg", sha, c % 3))
    return out


def test_splits_keep_sources_and_duplicates_together_and_stratify() -> None:
    rows = [SampleRow(f"k{i:03d}", u, h, n) for i, (u, h, n) in enumerate(corpus())]
    splits = assign_splits(rows, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=1)
    check_no_leak(rows, splits)
    assert sorted(sum(splits.values(), [])) == list(range(len(rows)))
    for name, share in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        assert abs(len(splits[name]) / len(rows) - share) < 0.08
        strata = Counter(min(rows[i].n_subjects, 3) for i in splits[name])
        assert len(strata) == 4  # every subject-count stratum reaches every split
    assert splits == assign_splits(rows, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=1)
    assert splits != assign_splits(rows, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=2)
    leaky = {"train": [0], "test": [1]}  # two clips of one video
    with pytest.raises(ValueError, match="(uri videos/v0.mp4|sha256 h0) is in both"):
        check_no_leak(rows, leaky)


def test_build_benchmark_writes_streamable_splits(tmp_path: Path) -> None:
    out = make_relational_output(tmp_path / "run", corpus()).parent
    bench = build_benchmark(str(out), str(tmp_path / "bench"), seed=3,
                            fractions={"train": 0.6, "val": 0.2, "test": 0.2},
                            samples_per_shard=16)
    saved = json.loads((tmp_path / "bench" / "benchmark.json").read_text())
    assert saved["seed"] == 3 and saved["source"]["samples"] == 120
    assert len(saved["source"]["manifest_sha256"]) == 64
    total = 0
    uris: dict[str, str] = {}
    for name, info in bench["splits"].items():
        stream = ShardStream(tmp_path / "bench" / name, batch_size=1, members=["json"])
        keys = [k for b in stream for k in b["__key__"]]
        records = split_records(str(tmp_path / "bench"), name)
        assert len(keys) == len(records) == info["samples"] == sum(info["strata"].values())
        for rec in records.values():
            assert uris.setdefault(rec["source"]["uri"], name) == name
        total += info["samples"]
        assert all(len(s["sha256"]) == 64 for s in info["shards"])
    assert total == 120
    runner = CliRunner()
    for name in bench["splits"]:  # every split is an ordinary output folder
        folder = str(tmp_path / "bench" / name)
        res = runner.invoke(app, ["verify", folder])
        assert res.exit_code == 0, res.output
        res = runner.invoke(app, ["stats", folder, "--json"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["samples"] == bench["splits"][name]["samples"]
        index = list((tmp_path / "bench" / name / "index").glob("*.parquet"))
        assert index and not list((tmp_path / "bench" / name / "shards").glob(".*"))
    card = (tmp_path / "bench" / "README.md").read_text()
    for text in ("## Splits", "## Leak checks", "near_duplicate", "seed 3", "relshard 0.1.0",
                 "wears"):
        assert text in card
    rules = {r["rule"]: r for r in saved["grouping"]["rules"]}
    assert rules["sha256"]["merged"] == 60 + 10 and rules["uri"]["merged"] == 0  # sha first
    assert all(c["crossing"] == 0 for c in saved["leak_checks"].values())
    with pytest.raises(BenchmarkError, match="already holds"):
        build_benchmark(str(out), str(tmp_path / "bench"))


def test_metrics_score_perfect_wrong_and_partial_predictions(tmp_path: Path) -> None:
    out = make_relational_output(tmp_path / "run", corpus()[:40]).parent
    build_benchmark(str(out), str(tmp_path / "b"), fractions={"train": 0, "val": 0, "test": 1})
    gold = evaluate_benchmark(str(tmp_path / "b"), "gold", replicates=200)
    assert gold["binding_accuracy"] == 1.0 and gold["relations"]["f1"] == 1.0
    assert gold["placeholder_validity"] == 1.0
    assert set(gold["systems"]) == {"gold", "containment", "majority"}
    rule = gold["systems"]["containment"]  # attributes lie inside their owner's box here,
    assert rule["binding_accuracy"] > 0.85  # wrong only where two boxes overlap
    assert rule["binding_accuracy_ci"][0] <= rule["binding_accuracy"] <= 1.0
    major = gold["systems"]["majority"]
    lo, hi = major["binding_accuracy_ci"]
    assert lo <= major["binding_accuracy"] <= hi and hi - lo > 0.01
    assert set(major["strata"]) == {"0", "1", "2", "3"}
    assert major["strata"]["1"]["binding_accuracy"] == 1.0  # one subject: S1 is right
    records = split_records(str(tmp_path / "b"), "test")
    swapped = {}  # bind every attribute to S1: right only where S1 is the true subject
    for key, rec in records.items():
        swapped[key] = {"relations": [{**r, "subject": "S1"} for r in rec["relations"]],
                        "relational_caption": "{S1} wears {A99}."}
    m = evaluate_relations(records, swapped)
    n_right = sum(r["subject"] == "S1" for rec in records.values() for r in rec["relations"])
    n_all = sum(len(rec["relations"]) for rec in records.values())
    assert m["binding_accuracy"] == pytest.approx(n_right / n_all)
    assert m["relations"]["precision"] == pytest.approx(n_right / len(
        {(k, r["object"]) for k, rec in records.items() for r in rec["relations"]}))
    assert m["placeholder_validity"] == 0.0
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"key": k, **v}) + "\n" for k, v in swapped.items()))
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "b"), str(preds), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["binding_accuracy"] == pytest.approx(n_right / n_all)


def test_caption_validity_rules() -> None:
    rec = {"subjects": [{"id": "S1"}], "attributes": [{"id": "A1", "text": "red hat"}],
           "relations": [{"subject": "S1", "predicate": "wears", "object": "A1"}]}
    assert caption_valid(rec, "{S1} wears {A1}.")
    assert not caption_valid(rec, "{S1} wears {A2}.")  # unknown id
    assert not caption_valid(rec, "{S1 wears {A1}.")  # unbalanced
    assert not caption_valid(rec, "{S1} wears a red hat.")  # leaks the attribute
    assert not caption_valid(rec, "A person wears something.")  # no placeholder


def test_cli_build_benchmark_and_user_errors(tmp_path: Path) -> None:
    out = make_relational_output(tmp_path / "run", corpus()[:20]).parent
    runner = CliRunner()
    ok = runner.invoke(app, ["build-benchmark", str(out), "--to", str(tmp_path / "b"),
                             "--split", "0.5,0.25,0.25"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "b" / "val" / "manifest.json").exists()
    bad = runner.invoke(app, ["build-benchmark", str(out), "--to", str(tmp_path / "c"),
                              "--split", "1,2"])
    assert bad.exit_code == 2 and "three non-negative shares" in bad.output
    missing = runner.invoke(app, ["build-benchmark", str(tmp_path), "--to", str(tmp_path / "d")])
    assert missing.exit_code == 2 and "no finished run" in missing.output
