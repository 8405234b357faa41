"""The gallery page: a card per sample (or a pair of cards with ``--compare``), then the rejects.

One HTML file, no script, nothing fetched: images are ``data:`` URIs, timelines
inline SVG, raw model output folded in ``<details>``. All text from the data is
escaped (see :mod:`relshard.report.gallery.card`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from relshard.report.gallery.card import (
    MAX_TEXT,
    ShownSample,
    boxes_on,
    data_uri,
    esc,
    events_html,
    frame_members,
    frames_html,
    highlight_placeholders,
    owners,
    relations_html,
    subjects_html,
)
from relshard.report.gallery.rejects import RejectsSummary

MAX_RAW = 4000  # characters of a reject's raw model output shown
MAX_DETAIL = 1000

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5em auto;max-width:1280px;
color:#222;padding:0 1em}
h1{font-size:1.4em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
h3{font-size:1em;margin:.2em 0}h4{font-size:.9em;margin:.6em 0 .2em}
.muted{color:#777}.bad{color:#b00}.legend span{margin-right:1.2em}
.card{border:1px solid #ddd;border-radius:6px;padding:.8em;margin:1em 0;background:#fff;
min-width:0}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:1em}.pair>.card{margin:0}
.pairwrap{margin:1em 0}.runlabel{font-size:.8em;color:#555;text-transform:uppercase}
.cols{display:flex;flex-wrap:wrap;gap:1em}.cols>div{flex:1 1 300px;min-width:0}
.cols>.vis{flex:0 1 420px}.cols>.vis.wide{flex:1 1 100%}.pair .cols>.vis{flex:1 1 100%}
.single .stage{width:min(100%,420px)}
.strip{display:flex;gap:6px;overflow-x:auto;padding-bottom:4px}.strip .stage{width:200px}
figure.frame{margin:0}figure.frame figcaption{font-size:.75em;color:#666}
.stage{position:relative;line-height:0}.stage img{display:block;width:100%;height:auto}
.box{position:absolute;box-sizing:border-box;border:2px solid var(--c)}
.box.src-model{border-style:dashed}.box.src-both{border:4px double var(--c)}
.box.track{opacity:.75}.box.attr{border:1px dotted var(--c)}
.box .lbl{position:absolute;left:0;top:0;background:var(--c);color:#fff;font-size:10px;
line-height:1.3;padding:0 3px;white-space:nowrap;font-family:monospace}
.box.attr .lbl{background:rgba(255,255,255,.85);color:var(--c);top:auto;bottom:0}
table{border-collapse:collapse;font-size:.85em}td,th{padding:.2em .5em;border-bottom:1px solid #eee;
text-align:left;vertical-align:top}
.sw{display:inline-block;width:.8em;height:.8em;background:var(--c);margin-right:.3em}
img.crop{height:56px;width:auto}
.chip{display:inline-block;border:1px solid var(--c);border-radius:3px;padding:0 .3em;
margin:1px;font-size:.85em}
.rels{margin:.2em 0;padding-left:1.2em;font-size:.9em}
mark.ph{background:none;color:var(--c);font-weight:bold;font-family:monospace}
.caption{margin:.3em 0}.kv td:first-child{color:#666;white-space:nowrap}
.kv td:last-child{overflow-wrap:anywhere}
.card p,.card li,.chip{overflow-wrap:anywhere}
code{font-size:.85em;background:#f4f4f4;padding:0 .2em;word-break:break-all}
details pre{white-space:pre-wrap;word-break:break-word;background:#f7f7f7;padding:.5em;
max-height:20em;overflow:auto;font-size:.8em}
.rejects .card{display:flex;gap:1em}.rejects img{max-width:160px;height:auto}
.empty{font-size:1.1em;padding:1em;background:#f7f7f7;border-radius:6px}
.timeline text{font-family:system-ui,sans-serif}
"""
STRIP_CSS = """
.gstrip .mini{display:flex;gap:8px;flex-wrap:wrap}
.gstrip figure{margin:0;width:180px;font-size:.75em}
.gstrip .stage{position:relative;line-height:0}
.gstrip .stage img{display:block;width:100%;height:auto}
.gstrip .box{position:absolute;box-sizing:border-box;border:2px solid var(--c)}
.gstrip .box.src-model{border-style:dashed}.gstrip .box.src-both{border:4px double var(--c)}
.gstrip .box.attr{border:1px dotted var(--c)}.gstrip .box .lbl{display:none}
.gstrip .muted{color:#777}
"""


@dataclass
class Gallery:
    """Everything the page shows."""

    title: str
    root: str
    lines: list[str] = field(default_factory=list)  # summary sentences
    notes: list[str] = field(default_factory=list)  # warnings worth reading first
    runs: tuple[str, str] | None = None  # (this run, the compared run) with --compare
    samples: list[tuple[ShownSample, ShownSample | None]] = field(default_factory=list)
    empty: str | None = None  # the one sentence shown when there is nothing to show
    rejects: RejectsSummary | None = None


def _kv(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows
                   if v not in (None, "", []))
    return f'<table class="kv">{body}</table>'


def _source_rows(record: dict[str, Any]) -> list[tuple[str, Any]]:
    src = record.get("source") if isinstance(record.get("source"), dict) else {}
    assert isinstance(src, dict)
    size = ""
    if src.get("frame_width"):
        size = f"{src.get('frame_width')}×{src.get('frame_height')} stored"
        if src.get("width"):
            size += f" (original {src.get('width')}×{src.get('height')})"
    timing = ""
    if src.get("duration") is not None:
        timing = f"{float(src['duration']):.2f} s"
        if src.get("fps"):
            timing += f" at {float(src['fps']):.3g} fps"
    return [("uri", src.get("uri")), ("modality", src.get("modality")), ("size", size),
            ("duration", timing), ("time span", _span(src.get("time_span"))),
            ("sequence", src.get("sequence")), ("window", src.get("window_index")),
            ("events", src.get("event_count")), ("clip", src.get("clip_index"))]


def _span(value: object) -> str:
    if isinstance(value, list) and len(value) == 2 and all(
            isinstance(v, int | float) for v in value):
        return f"{float(value[0]):.10g} – {float(value[1]):.10g} s"
    return ""


def _provenance_rows(record: dict[str, Any]) -> list[tuple[str, Any]]:
    prov = record.get("provenance") if isinstance(record.get("provenance"), dict) else {}
    assert isinstance(prov, dict)
    latency = prov.get("latency_s")
    return [("backend", prov.get("backend")), ("model", prov.get("model") or "(none)"),
            ("prompt version", prov.get("prompt_version")), ("method", prov.get("method")),
            ("latency", f"{float(latency):.2f} s" if isinstance(latency, int | float) else ""),
            ("relshard", prov.get("relshard_version"))]


def _location(shown: ShownSample) -> str:
    d = shown.data
    name = esc(d.shard)
    link = f'<a href="{esc(shown.shard_href)}">{name}</a>' if shown.shard_href else name
    cmd = (f"tail -c +{d.offset + 1} {shown.shard_url} | head -c {d.size} | tar -tv")
    skipped = ", ".join(f"{s} ({n:,} B)" for s, n in d.skipped.items())
    return (f'<p class="muted">{link} · bytes {d.offset:,}–{d.offset + d.size:,} '
            f"({d.size:,} B)" + (f" · not read: {esc(skipped)}" if skipped else "")
            + f"<br><code>{esc(cmd)}</code></p>")


def card_html(shown: ShownSample, label: str = "") -> str:
    record = shown.record or {}
    modality = str((record.get("source") or {}).get("modality") or shown.row.get("modality"))
    head = (f'<div class="runlabel">{esc(label)}</div>' if label else "") + (
        f'<h3 id="{esc(shown.data.key)}">{esc(shown.data.key)} '
        f'<span class="muted">{esc(modality)}</span></h3>')
    problems = "".join(f'<p class="bad">{esc(p)}</p>' for p in shown.problems)
    if shown.record is None:
        return f'<div class="card">{head}{problems}{_location(shown)}</div>'
    visual = events_html(shown) if modality == "events" else frames_html(shown)
    wide = modality == "events" or len(frame_members(shown.data)) > 1
    caption = str(record.get("caption") or "")[:MAX_TEXT]
    rel = str(record.get("relational_caption") or "")
    warnings = record.get("warnings") if isinstance(record.get("warnings"), list) else []
    warn = "".join(f'<p class="bad">warning: {esc(w)}</p>' for w in warnings or [])
    return (
        f'<div class="card">{head}{problems}<div class="cols">'
        f'<div class="vis{" wide" if wide else ""}">{visual}</div><div>'
        f"<h4>subjects and their attributes</h4>{subjects_html(shown)}"
        f"<h4>relations</h4>{relations_html(record)}</div><div>"
        f'<h4>caption</h4><p class="caption">{esc(caption) or "<i>(empty)</i>"}</p>'
        f'<h4>relational caption</h4><p class="caption rel">'
        f'{highlight_placeholders(rel, owners(record)) or "<i>(empty)</i>"}</p>{warn}'
        f"<h4>provenance</h4>{_kv(_provenance_rows(record))}"
        f"<h4>source</h4>{_kv(_source_rows(record))}</div></div>{_location(shown)}</div>")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit:,} more chars)"


def rejects_html(summary: RejectsSummary) -> str:
    if summary.total == 0:
        return '<h2 id="rejects">Rejects</h2><p class="muted">No input was rejected.</p>'
    counts = "".join(f"<tr><td>{esc(stage)}</td><td>{esc(reason)}</td><td>{n:,}</td></tr>"
                     for (stage, reason), n in summary.by_reason.most_common())
    parts = [f'<h2 id="rejects">Rejects ({summary.total:,} inputs)</h2><div class="rejects">',
             "<table><thead><tr><th>stage</th><th>reason</th><th>inputs</th></tr></thead>"
             f"<tbody>{counts}</tbody></table>"]
    for (stage, reason), examples in summary.examples.items():
        parts.append(f"<h3>{esc(stage)}: {esc(reason)} "
                     f'<span class="muted">({summary.by_reason[(stage, reason)]:,})</span></h3>')
        for ex in examples:
            row = ex.row
            thumb = (f'<img alt="{esc(row.get("input_key", ""))} thumbnail" '
                     f'src="{esc(ex.thumbnail)}">' if ex.thumbnail else "")
            raw = row.get("raw_output")
            folded = (f"<details><summary>raw model output ({len(str(raw)):,} chars)</summary>"
                      f"<pre>{esc(_cut(str(raw), MAX_RAW))}</pre></details>" if raw else "")
            parts.append(
                f'<div class="card">{thumb}<div><b>{esc(row.get("input_key", ""))}</b><br>'
                f'<code>{esc(row.get("uri", ""))}</code><p>'
                f'{esc(_cut(str(row.get("detail") or ""), MAX_DETAIL))}</p>{folded}</div></div>')
    if summary.thumbnails_skipped:
        parts.append(f'<p class="muted">{summary.thumbnails_skipped} thumbnail(s) not made '
                     "(count or time cap).</p>")
    parts.append("</div>")
    return "".join(parts)


LEGEND = ('<p class="legend muted"><span>── solid: subject from the detector</span>'
          "<span>- - dashed: from the model</span><span>══ double: both</span>"
          "<span>··· dotted: attribute box</span></p>")


def page_html(gallery: Gallery) -> str:
    """The whole gallery as one HTML string."""
    title = esc(gallery.title)
    parts = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
             '<meta name="viewport" content="width=device-width,initial-scale=1">'
             f"<style>{CSS}</style></head><body><h1>{title}</h1>"]
    parts.extend(f"<p>{esc(line)}</p>" for line in gallery.lines)
    parts.extend(f'<p class="bad">{esc(note)}</p>' for note in gallery.notes)
    if gallery.empty:
        parts.append(f'<p class="empty">{esc(gallery.empty)}</p>')
    else:
        parts.append(LEGEND)
    for mine, other in gallery.samples:
        if gallery.runs is None:
            parts.append(card_html(mine))
        elif other is None:
            parts.append(f'<div class="pairwrap">{card_html(mine, gallery.runs[0])}'
                         f'<p class="muted">not in {esc(gallery.runs[1])}</p></div>')
        else:
            parts.append(f'<div class="pair">{card_html(mine, gallery.runs[0])}'
                         f"{card_html(other, gallery.runs[1])}</div>")
    if gallery.rejects is not None:
        parts.append(rejects_html(gallery.rejects))
    parts.append("</body></html>")
    return "".join(parts)


def strip_html(samples: list[ShownSample], heading: str, link: str | None = None,
               hint: str = "") -> str:
    """A small strip of samples (first frame with boxes and the caption) for the stats report."""
    figs = []
    for s in samples:
        record = s.record or {}
        frames = frame_members(s.data)
        if frames:
            pos, suffix = frames[0]
            visual = (f'<div class="stage"><img alt="{esc(s.data.key)}" '
                      f'src="{data_uri(s.data.members[suffix], suffix)}">'
                      f'{"".join(boxes_on(record, pos, owners(record)))}</div>')
        else:
            visual = f'<div class="muted">{esc(s.row.get("modality", ""))}</div>'
        caption = esc(str(record.get("caption") or "")[:140])
        figs.append(f"<figure>{visual}<figcaption><b>{esc(s.data.key)}</b><br>{caption}"
                    "</figcaption></figure>")
    more = f' <a href="{esc(link)}">Open the gallery</a>.' if link else ""
    if hint:
        more += f" Every detail, for more samples: <code>{esc(hint)}</code>"
    return (f'<style>{STRIP_CSS}</style><div class="gstrip"><h2>{esc(heading)}</h2>'
            f'<p class="muted">{len(samples)} random samples.{more}</p>'
            f'<div class="mini">{"".join(figs)}</div></div>')
