"""The benchmark card: ``BENCH/README.md``, generated from ``benchmark.json``.

Plain Markdown, no template engine: what the benchmark was built from, how it
was split, the leak checks that ran and what they found, and per split the
counts, strata, modalities, predicates and attribute categories.
"""

from __future__ import annotations

from typing import Any

TOP = 12


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _dist(values: dict[str, int]) -> str:
    if not values:
        return "none"
    shown = list(values.items())[:TOP]
    more = len(values) - len(shown)
    text = ", ".join(f"{k}: {v}" for k, v in shown)
    return text + (f" (+{more} more)" if more > 0 else "")


def render_card(bench: dict[str, Any]) -> str:
    """The card's Markdown text."""
    src = bench["source"]
    splits = bench["splits"]
    lines = [
        f"# Benchmark of {src.get('name') or src['output']}",
        "",
        f"Built by relshard {bench['relshard_version']} on {bench['created']} from "
        f"`{src['output']}` ({src['samples']} samples; manifest sha256 "
        f"`{src['manifest_sha256'][:16]}...`, spec hash `{src['spec_hash'] or 'n/a'}`).",
        "",
        f"Split by **{bench['split_by']}** with seed {bench['seed']}, shares "
        + ", ".join(f"{k} {v:g}" for k, v in bench["fractions"].items())
        + f", at least {bench['min_per_split']} "
        + ("group" if bench["split_by"] == "group" else "window")
        + " per split" + (" (empty splits allowed)" if bench["allow_empty"] else "") + ".",
        "Each split is an output folder of its own (`SPLIT/manifest.json`, `SPLIT/index/`): "
        "`relshard verify`, `relshard stats` and `ShardStream` read it.",
        "",
        "## Splits",
        "",
    ]
    lines += _table(
        ["split", "samples", "groups", "sources", "sequences", "subject strata", "modalities"],
        [[n, s["samples"], s["groups"], s["sources"], s["sequences"],
          _dist(s["strata"]), _dist(s["modalities"])] for n, s in splits.items()])
    lines += ["", "## Predicates and attribute categories", ""]
    lines += _table(["split", "predicates", "attribute categories"],
                    [[n, _dist(s["predicates"]), _dist(s["attribute_categories"])]
                     for n, s in splits.items()])
    grouping = bench["grouping"]
    lines += ["", "## Leak groups", "",
              f"{src['samples']} samples form {grouping['groups']} groups; a group never "
              "straddles splits" + (" (group split)." if bench["split_by"] == "group" else
                                    "; the time split cuts each sequence instead."), ""]
    rule_rows = []
    for rule in grouping["rules"]:
        threshold = "" if rule.get("threshold") is None else f"{rule['threshold']} bits"
        if rule["rule"] == "near_duplicate":
            if not rule.get("enabled", True):
                threshold = "off"
            else:
                threshold += f", {rule['min_share']:g} of frames"
        rule_rows.append([rule["rule"], rule["what"], threshold or "exact", rule["merged"]])
    lines += _table(["rule", "joins samples with", "threshold", "groups merged"], rule_rows)
    near = next(r for r in grouping["rules"] if r["rule"] == "near_duplicate")
    if near.get("enabled", True):
        lines += ["", f"Near-duplicates: {near['frames_hashed']} frames hashed "
                  f"({near['hash']}), {near['flat_frames_skipped']} flat frames skipped, "
                  f"{near['pairs']} near-duplicate sample pairs."]
    lines += ["", "## Leak checks", ""]
    lines += _table(["check", "checked", "crossing splits", "result"],
                    [[name, c["checked"], c["crossing"], "pass" if not c["crossing"] else "FAIL"]
                     for name, c in bench["leak_checks"].items()])
    if bench.get("time_split"):
        ts = bench["time_split"]
        lines += ["", f"Time split over {ts['sequences']} sequences; "
                  f"{ts['dropped_straddling_windows']} windows that would straddle a cut were "
                  "left out."]
    if bench["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in bench["warnings"]]
    lines += ["", "## Files", "",
              f"`benchmark.json` (kind `{bench['__kind__']}`) holds all of the above, the sha256 "
              "of every split shard and of each split's sorted key list.", ""]
    return "\n".join(lines)
