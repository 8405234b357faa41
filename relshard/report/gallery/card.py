"""The HTML of one sample: frames with boxes, subjects and crops, attributes, relations, captions.

Every string that comes from a record, an index row or a member is escaped with
:func:`html.escape`; style attributes only ever hold numbers and colours of our
own palette. Boxes are absolutely positioned ``<div>`` elements over the frame,
in percent of the frame, so they sit where the record's normalized boxes say at
any rendered size. A subject's outline says who found it: solid for the
detector, dashed for the model, double for both; attribute boxes are thin and
dotted, in the colour of the subject they are bound to.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from relshard.report.gallery.sample_reader import SampleBytes
from relshard.report.gallery.timeline import Edge, load_npy, timeline_svg

PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
           "#9a6324", "#008080", "#800000", "#808000", "#000075")
GREY = "#777777"
FRAME_RE = re.compile(r"^f(\d{3,})\.jpg$")
PLACEHOLDER_SPLIT = re.compile(r"(\{[A-Za-z][A-Za-z0-9]*\})")
SOURCES = ("detector", "model", "both")
MAX_TEXT = 4000


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def color_of(entity_id: str) -> str:
    """Colour of ``S3`` (or the subject an id names): the same in every card and timeline."""
    m = re.match(r"^[SA](\d+)$", entity_id)
    return PALETTE[(int(m.group(1)) - 1) % len(PALETTE)] if m else GREY


def data_uri(data: bytes, suffix: str) -> str:
    mime = "image/png" if suffix.endswith(".png") else "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def bbox_of(value: object) -> tuple[float, float, float, float] | None:
    """A normalized box clamped to [0, 1], or None when it is not four finite numbers."""
    if not isinstance(value, list | tuple) or len(value) != 4:
        return None
    try:
        x0, y0, x1, y1 = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return None
    x0, x1 = sorted((min(max(x0, 0.0), 1.0), min(max(x1, 0.0), 1.0)))
    y0, y1 = sorted((min(max(y0, 0.0), 1.0), min(max(y1, 0.0), 1.0)))
    return x0, y0, x1, y1


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _dicts(record: dict[str, Any], name: str) -> list[dict[str, Any]]:
    value = record.get(name)
    return [x for x in value if isinstance(x, dict)] if isinstance(value, list) else []


@dataclass
class ShownSample:
    """One sample as the gallery shows it."""

    row: dict[str, Any]
    data: SampleBytes
    record: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)
    shard_url: str = ""  # where the shard is, as text
    shard_href: str | None = None  # a file:// link for a local shard

    @classmethod
    def parse(cls, row: dict[str, Any], data: SampleBytes, shard_url: str,
              shard_href: str | None) -> ShownSample:
        shown = cls(row=row, data=data, problems=list(data.problems), shard_url=shard_url,
                    shard_href=shard_href)
        blob = data.members.get("json")
        if blob is None:
            shown.problems.append(f"no {data.key}.json could be read")
            return shown
        try:
            record = json.loads(blob)
        except (ValueError, UnicodeDecodeError) as exc:
            shown.problems.append(f"{data.key}.json is not JSON ({exc})")
            return shown
        if not isinstance(record, dict):
            shown.problems.append(f"{data.key}.json is not a JSON object")
            return shown
        shown.record = record
        return shown


def frame_members(data: SampleBytes) -> list[tuple[int, str]]:
    """(position, suffix) of the stored frames that were read, in order."""
    if "jpg" in data.members:
        return [(0, "jpg")]
    found = [(int(m.group(1)), s) for s in data.members for m in [FRAME_RE.match(s)] if m]
    return sorted(found)


def _box(kind: str, ident: str, label: str, box: tuple[float, float, float, float],
         color: str, frame: int) -> str:
    x0, y0, x1, y1 = box
    style = (f"left:{x0 * 100:.4f}%;top:{y0 * 100:.4f}%;width:{(x1 - x0) * 100:.4f}%;"
             f"height:{(y1 - y0) * 100:.4f}%;--c:{color}")
    return (f'<div class="box {kind}" style="{style}" data-id="{esc(ident)}" '
            f'data-frame="{frame}" data-bbox="{x0:.6f},{y0:.6f},{x1:.6f},{y1:.6f}">'
            f'<span class="lbl">{esc(label)}</span></div>')


def boxes_on(record: dict[str, Any], position: int, owner: dict[str, str]) -> list[str]:
    out = []
    for s in _dicts(record, "subjects"):
        sid = str(s.get("id", "?"))
        source = str(s.get("source") or "detector")
        kind = f"subj src-{source if source in SOURCES else 'detector'}"
        label = f"{sid} · {source}"
        main = _int(s.get("frame"))
        box = bbox_of(s.get("bbox"))
        if main == position and box is not None:
            out.append(_box(kind, sid, label, box, color_of(sid), position))
        for point in s.get("track") or []:
            if not isinstance(point, dict) or _int(point.get("frame"), -1) != position:
                continue
            tbox = bbox_of(point.get("bbox"))
            if tbox is not None and position != main:
                out.append(_box(kind + " track", sid, label, tbox, color_of(sid), position))
    for a in _dicts(record, "attributes"):
        box = bbox_of(a.get("bbox"))
        if box is None or _int(a.get("frame"), 0) != position:
            continue
        aid = str(a.get("id", "?"))
        out.append(_box("attr", aid, f"{aid} {str(a.get('text', ''))[:24]}", box,
                        color_of(owner.get(aid, "")), position))
    return out


def owners(record: dict[str, Any]) -> dict[str, str]:
    """Attribute id -> the subject a relation binds it to (the first one)."""
    attrs = {str(a.get("id")) for a in _dicts(record, "attributes")}
    out: dict[str, str] = {}
    for r in _dicts(record, "relations"):
        obj = str(r.get("object"))
        if obj in attrs:
            out.setdefault(obj, str(r.get("subject")))
    return out


def frames_html(shown: ShownSample) -> str:
    record = shown.record or {}
    frames = frame_members(shown.data)
    if not frames:
        return ""
    owner = owners(record)
    times = (record.get("source") or {}).get("frame_times") or []
    cls = "single" if len(frames) == 1 else "strip"
    figs = []
    for position, suffix in frames:
        when = ""
        if position < len(times) and isinstance(times[position], int | float):
            when = f" · t={float(times[position]):.2f}s"
        boxes = "".join(boxes_on(record, position, owner))
        figs.append(f'<figure class="frame"><div class="stage"><img alt="'
                    f'{esc(shown.data.key)} {esc(suffix)}" '
                    f'src="{data_uri(shown.data.members[suffix], suffix)}">{boxes}</div>'
                    f"<figcaption>{esc(suffix)}{esc(when)}</figcaption></figure>")
    more = sum(1 for s in shown.data.skipped if FRAME_RE.match(s))
    tail = f'<p class="muted">{more} more frame(s) not shown</p>' if more else ""
    return f'<div class="{cls}">{"".join(figs)}</div>{tail}'


def subjects_html(shown: ShownSample) -> str:
    record = shown.record or {}
    subjects = _dicts(record, "subjects")
    attributes = {str(a.get("id")): a for a in _dicts(record, "attributes")}
    owner = owners(record)
    rows = []
    for s in subjects:
        sid = str(s.get("id", "?"))
        crop = s.get("crop")
        crop_html = ""
        if isinstance(crop, str) and crop in shown.data.members:
            crop_html = (f'<img class="crop" alt="{esc(shown.data.key)} {esc(sid)} crop" '
                         f'src="{data_uri(shown.data.members[crop], crop)}">')
        bound = [aid for aid, sub in owner.items() if sub == sid]
        chips = "".join(
            f'<span class="chip" style="--c:{color_of(sid)}">{esc(aid)} '
            f'{esc(attributes[aid].get("text", ""))} <i>{esc(attributes[aid].get("category", ""))}'
            f"</i></span>" for aid in bound if aid in attributes)
        score = s.get("score")
        meta = [str(s.get("kind", ""))]
        if s.get("detector") != "events":
            meta.append(f"found by {s.get('source') or 'detector'}")
        if s.get("detector"):
            meta.append(f"detector {s.get('detector')}")
        if isinstance(score, int | float):
            meta.append(f"score {float(score):.2f}")
        if _int(s.get("frame")):
            meta.append(f"frame {_int(s.get('frame'))}")
        if s.get("track"):
            meta.append(f"track of {len(s.get('track') or [])}")
        rows.append(f'<tr><td><span class="sw" style="--c:{color_of(sid)}"></span>'
                    f"<b>{esc(sid)}</b></td><td>{crop_html}</td><td>{esc(' · '.join(meta))}"
                    f"</td><td>{chips}</td></tr>")
    loose = [a for aid, a in attributes.items() if aid not in owner]
    if loose:
        chips = "".join(f'<span class="chip" style="--c:{GREY}">{esc(a.get("id", ""))} '
                        f'{esc(a.get("text", ""))} <i>{esc(a.get("category", ""))}</i></span>'
                        for a in loose)
        rows.append(f"<tr><td><i>unbound</i></td><td></td><td></td><td>{chips}</td></tr>")
    if not rows:
        return '<p class="muted">no subjects</p>'
    return ('<table class="subjects"><thead><tr><th>subject</th><th>crop</th><th>found</th>'
            f'<th>attributes</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def relations_html(record: dict[str, Any]) -> str:
    texts = {str(a.get("id")): str(a.get("text", "")) for a in _dicts(record, "attributes")}
    owner = owners(record)
    items = []
    for r in _dicts(record, "relations"):
        subj, obj = str(r.get("subject", "?")), str(r.get("object", "?"))
        extra = []
        if obj in texts:
            extra.append(texts[obj])
        if isinstance(r.get("weight"), int | float):
            extra.append(f"weight {float(r['weight']):.3g}")
        if isinstance(r.get("confidence"), int | float) and float(r["confidence"]) != 1.0:
            extra.append(f"conf {float(r['confidence']):.2f}")
        note = f' <span class="muted">{esc(" · ".join(extra))}</span>' if extra else ""
        tint = color_of(obj if obj.startswith("S") else owner.get(obj, ""))
        items.append(f'<li><b style="color:{color_of(subj)}">{esc(subj)}</b> '
                     f'—{esc(r.get("predicate", "?"))}→ '
                     f'<b style="color:{tint}">{esc(obj)}</b>{note}</li>')
    if not items:
        return '<p class="muted">no relations</p>'
    return f'<ul class="rels">{"".join(items)}</ul>'


def highlight_placeholders(text: str, owner: dict[str, str] | None = None) -> str:
    """The relational caption, escaped, with ``{S1}``/``{A2}`` placeholders marked (an
    attribute in the colour of the subject ``owner`` binds it to)."""
    out = []
    for part in PLACEHOLDER_SPLIT.split(text[:MAX_TEXT]):
        if PLACEHOLDER_SPLIT.fullmatch(part):
            ident = part[1:-1]
            tint = color_of((owner or {}).get(ident, ident))
            out.append(f'<mark class="ph" style="--c:{tint}">{esc(part)}</mark>')
        else:
            out.append(esc(part))
    return "".join(out)


def events_html(shown: ShownSample) -> str:
    record = shown.record or {}
    times = load_npy(shown.data.members.get("times.npy", b""))
    types = load_npy(shown.data.members.get("types.npy", b""))
    names = {}
    for a in _dicts(record, "attributes"):
        m = re.match(r"^A(\d+)$", str(a.get("id", "")))
        if m:
            names[int(m.group(1)) - 1] = str(a.get("text", ""))
    edges = []
    for r in _dicts(record, "relations"):
        if r.get("predicate") != "excites":
            continue
        ms = re.match(r"^S(\d+)$", str(r.get("subject", "")))
        mt = re.match(r"^S(\d+)$", str(r.get("object", "")))
        if ms and mt:
            edges.append(Edge(int(ms.group(1)) - 1, int(mt.group(1)) - 1,
                              float(r.get("weight") or 0.0), float(r.get("confidence") or 0.0)))
    if times is None or types is None:
        return '<p class="bad">the window\'s times.npy / types.npy could not be read</p>'
    svg = timeline_svg(times, types, names, lambda t: color_of(f"S{t + 1}"), edges)
    listed = "".join(
        f'<li><b style="color:{color_of(f"S{e.source + 1}")}">S{e.source + 1}</b> '
        f'{esc(names.get(e.source, ""))} —excites <b>{e.weight:.3g}</b>→ '
        f'<b style="color:{color_of(f"S{e.target + 1}")}">S{e.target + 1}</b> '
        f'{esc(names.get(e.target, ""))} <span class="muted">conf {e.confidence:.2f}</span></li>'
        for e in sorted(edges, key=lambda e: -e.weight))
    edge_html = (f'<h4>excitation edges</h4><ul class="rels">{listed}</ul>' if edges
                 else '<p class="muted">no excitation edges</p>')
    return f'<div class="events">{svg}{edge_html}</div>'
