"""Turn fitted excitations into the sample contract: subjects, attributes, relations, captions.

Each event type present in a window is a subject ``S{id+1}`` (kind ``other``,
whole-sample box) bound to an attribute ``A{id+1}`` whose text is the type's name
(relation ``has_type``), where ``id`` is the type's id in the log's vocabulary
(stored in the manifest): ``S3`` is the same type in every shard. An excitation is
the relation ``S_k excites S_u`` with the branching ratio as ``weight`` and the
fit's confidence.

The caption names types; the relational caption uses only placeholders::

    events of {S1} are followed by {S2} within about 4 minutes (0.63 per event).
"""

from __future__ import annotations

from relshard.events.hawkes_fit import Excitation
from relshard.record import Attribute, Relation, Subject

WHOLE = [0.0, 0.0, 1.0, 1.0]
_UNITS = ((86400.0 * 365.25, "year"), (86400.0 * 7, "week"), (86400.0, "day"),
          (3600.0, "hour"), (60.0, "minute"), (1.0, "second"))


def duration(seconds: float) -> str:
    """``'4 minutes'``, ``'1.5 hours'``, ``'0.2 seconds'``: two significant figures."""
    for size, name in _UNITS:
        if seconds >= size or size == 1.0:
            value = seconds / size
            text = f"{value:.2g}" if value < 10 else f"{value:.0f}"
            return f"{text} {name}" + ("" if text == "1" else "s")
    raise AssertionError("unreachable")


def entities(type_ids: tuple[int, ...], vocab: list[str]
             ) -> tuple[tuple[Subject, ...], tuple[Attribute, ...], tuple[Relation, ...]]:
    """The subjects, attributes and ``has_type`` relations of the types present in a window."""
    subjects = tuple(Subject(id=f"S{t + 1}", kind="other", bbox=WHOLE, detector="events")
                     for t in type_ids)
    attributes = tuple(Attribute(id=f"A{t + 1}", text=vocab[t] or "(empty)", category="other")
                       for t in type_ids)
    typed = tuple(Relation(subject=f"S{t + 1}", predicate="has_type", object=f"A{t + 1}")
                  for t in type_ids)
    return subjects, attributes, typed


def excitation_relations(edges: list[Excitation]) -> list[Relation]:
    return [Relation(subject=f"S{e.source + 1}", predicate="excites", object=f"S{e.target + 1}",
                     confidence=round(min(max(e.confidence, 0.0), 1.0), 6),
                     weight=round(e.weight, 6))
            for e in edges]


def _sentence(edge: Excitation, left: str, right: str) -> str:
    return (f"events of {left} are followed by {right} within about {duration(edge.delay)} "
            f"({edge.weight:.2g} per event)")


def captions(edges: list[Excitation], vocab: list[str], n_events: int, span: float,
             sequence: str | None, type_ids: list[int]) -> tuple[str, str]:
    """(caption, relational caption) of a window or a whole log."""
    where = f" of sequence {sequence!r}" if sequence else ""
    names = ", ".join(vocab[t] for t in type_ids[:8]) + (", ..." if len(type_ids) > 8 else "")
    head = (f"{n_events} events{where} over {duration(span)}, "
            f"{len(type_ids)} type{'s' if len(type_ids) != 1 else ''} ({names}).")
    rel_head = (f"{n_events} events over {duration(span)}, {len(type_ids)} "
                f"type{'s' if len(type_ids) != 1 else ''}.")
    if not edges:
        tail = " No type significantly excites another."
        return head + tail, rel_head + tail
    plain = "; ".join(_sentence(e, vocab[e.source], vocab[e.target]) for e in edges[:6])
    anon = "; ".join(_sentence(e, f"{{S{e.source + 1}}}", f"{{S{e.target + 1}}}")
                     for e in edges[:6])
    return f"{head} {plain[0].upper()}{plain[1:]}.", f"{rel_head} {anon[0].upper()}{anon[1:]}."
