"""One pipeline run, start to end: recover, list, skip what is done, execute, commit.

1. Refuse an output folder written by a different spec (mixing would corrupt it).
2. Recover: remove temporary files and shards left uncommitted by a kill.
3. List the sources and drop inputs already in the index or the rejects ledger.
4. Execute the stages on Ray; each write task commits its own units.
5. Write the manifest (last) and check the books: written + rejected = inputs.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from relshard.errors import OutputConflictError, RejectBudgetExceeded, RelshardError
from relshard.pipelines.sources import SourceLister
from relshard.shards.layout import open_root
from relshard.shards.manifest import build_manifest, write_manifest
from relshard.shards.recovery import done_input_keys, recover
from relshard.spec import PipelineSpec
from relshard.workers.annotate.base import preflight
from relshard.workers.annotate.registry import build_annotator
from relshard.workers.annotate.stage import AnnotateStage
from relshard.workers.decode.events.listing import EventsExpander, remove_work
from relshard.workers.decode.events.row_rejects import RowRejectLedger
from relshard.workers.decode.events.stage import EventsStage, SkipEvents
from relshard.workers.detect.backends import preflight_detector
from relshard.workers.item import InputRef
from relshard.workers.media import MediaStage
from relshard.workers.stage import Stage

log = logging.getLogger(__name__)

LISTING_CHUNK = 100_000
SPEC_FILE = "spec.resolved.json"
LEAK_REJECT_REASON = "anonymization_leak"


@dataclass
class RunSummary:
    output: str
    run_id: str
    listed: int = 0
    already_done: int = 0
    to_process: int = 0
    inputs_written: int = 0
    samples_written: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    hidden_skipped: int = 0
    units: int = 0
    seconds: float = 0.0
    manifest: dict[str, Any] = field(default_factory=dict)
    leaks: dict[str, int] = field(default_factory=dict)  # "fixed"/"kept" -> samples written

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def leak_rejects(self) -> int:
        return self.rejected.get(LEAK_REJECT_REASON, 0)

    @property
    def leak_rate(self) -> float:
        """Samples whose relational caption leaked (fixed by a re-ask, kept, or rejected)
        over the samples annotated: those written plus the leak rejects."""
        annotated = self.samples_written + self.leak_rejects
        total = sum(self.leaks.values()) + self.leak_rejects
        return total / annotated if annotated else 0.0


def build_stages(spec: PipelineSpec) -> list[Stage]:
    """The ordered stages of a spec (pure: no Ray)."""
    n_events = sum(1 for s in spec.sources if s.modality == "events")
    if n_events and n_events == len(spec.sources):
        return [EventsStage(spec.decode)]
    stages: list[Stage] = [MediaStage(spec.decode, spec.detect, spec.plugins),
                           AnnotateStage(spec.annotate)]
    if n_events:  # media and event logs in one spec: event inputs skip the media stages
        return [*(SkipEvents(s) for s in stages), EventsStage(spec.decode)]
    return stages


def _check_spec(fs: Any, root: str, spec: PipelineSpec) -> None:
    path = f"{root}/{SPEC_FILE}"
    if not fs.exists(path):
        return
    try:
        prior = json.loads(fs.cat_file(path))
    except (OSError, ValueError):
        return
    if prior.get("spec_hash") != spec.content_hash():
        raise OutputConflictError(
            f"Output {root!r} holds a run of a different spec (hash {prior.get('spec_hash')} vs "
            f"{spec.content_hash()}); use a new --output folder, or the original spec to resume."
        )


def _write_spec(fs: Any, root: str, spec: PipelineSpec) -> None:
    body = {"spec_hash": spec.content_hash(), "spec": spec.model_dump(mode="json")}
    with fs.open(f"{root}/{SPEC_FILE}", "w") as fh:
        json.dump(body, fh, indent=2, sort_keys=True)


_LISTING_SCHEMA = pa.schema([
    ("input_key", pa.string()), ("uri", pa.string()), ("modality", pa.string()),
    ("size", pa.int64()), ("extra", pa.string()),
])


def _collect_listing(lister: Iterable[InputRef],
                     done: set[str]) -> tuple[list[pa.Table], int, int]:
    """Gather the listing as Arrow chunks (compact: ~150 bytes an input), skipping done inputs."""
    tables: list[pa.Table] = []
    rows: list[tuple] = []
    todo = skipped = 0

    def flush() -> None:
        if rows:
            cols = [list(c) for c in zip(*rows, strict=True)]
            tables.append(pa.table(cols, schema=_LISTING_SCHEMA))
            rows.clear()

    for ref in lister:
        if ref.input_key in done:
            skipped += 1
            continue
        rows.append((ref.input_key, ref.uri, ref.modality, ref.size,
                     json.dumps(ref.extra) if ref.extra else ""))
        todo += 1
        if len(rows) >= LISTING_CHUNK:
            flush()
    flush()
    return tables, todo, skipped


def run_pipeline(spec: PipelineSpec, *, output: str | None = None, address: str | None = None,
                 num_cpus: int | None = None) -> RunSummary:
    """Run ``spec``; return the summary. Raises RelshardError subclasses for user errors."""
    from relshard.pipelines import ray_cluster  # before anything imports ray

    started = time.monotonic()
    if output:
        spec = spec.model_copy(update={"output": spec.output.model_copy(update={"path": output})})
    if any(s.modality != "events" for s in spec.sources):
        preflight_detector(spec.detect)  # a missing model or runtime: one sentence, no work
    fs, root = open_root(spec.output.path)
    fs.makedirs(root, exist_ok=True)
    run_id = time.strftime("%Y%m%d%H%M%S") + uuid.uuid4().hex[:6]
    summary = RunSummary(output=spec.output.path, run_id=run_id)
    report = recover(spec.output.path)
    if report.removed:
        log.warning("recovered output: removed %d uncommitted file(s)", len(report.removed))
    done = done_input_keys(spec.output.path)
    if done or fs.exists(f"{root}/manifest.json"):
        _check_spec(fs, root, spec)  # a folder that holds nothing yet takes any spec
    _write_spec(fs, root, spec)

    lister = SourceLister(spec.sources)
    # event logs -> bucket inputs; their bad rows go straight to the rejects ledger
    row_rejects = RowRejectLedger(spec.output.path, run_id, done, spec.output.mtime)
    events = EventsExpander(spec, spec.output.path, lister, row_rejects)
    tables, todo, skipped = _collect_listing(events, done)
    row_rejects.flush()
    summary.listed = lister.stats.listed
    summary.hidden_skipped = lister.stats.hidden_skipped
    summary.already_done = skipped + row_rejects.skipped
    summary.to_process = todo + row_rejects.written
    results: list[dict] = []
    if todo:
        preflight(build_annotator(spec.annotate))  # server/model errors before any work
        ray_cluster.connect(address, num_cpus or spec.runtime.num_cpus)
        from relshard.pipelines import ray_backend

        results = ray_backend.execute(spec, spec.output.path, run_id, tables, todo,
                                      build_stages(spec), credit=events.summary.rows_ok,
                                      rejected_before=row_rejects.written,
                                      rows_per_write=events.summary.rows_per_write(spec))

    rejected: Counter[str] = Counter(row_rejects.by_reason)
    leaks: Counter[str] = Counter()
    for res in results:
        summary.inputs_written += res["inputs_written"]
        summary.samples_written += res["samples_written"]
        summary.units += len(res["units"])
        rejected.update(res["rejects_by_reason"])
        leaks.update(res.get("leaks") or {})
    summary.rejected = dict(rejected)
    summary.leaks = dict(leaks)
    summary.units += row_rejects.units
    if results:
        # Every write task has ended: what is still uncommitted belongs to attempts
        # that died (a lost node, a killed worker) and was redone by their retries.
        recover(spec.output.path)
    manifest = build_manifest(spec.output.path, spec.name, spec.content_hash(),
                              extra=events.summary.manifest_extra() or None)
    write_manifest(spec.output.path, manifest)
    summary.manifest = manifest
    summary.seconds = time.monotonic() - started
    accounted = summary.inputs_written + summary.rejected_total
    if accounted != summary.to_process:
        raise RelshardError(
            f"Accounting mismatch: {summary.to_process} inputs to process but {accounted} "
            f"written or rejected; this is a bug, please report it with the run log."
        )
    seen = summary.to_process + events.summary.rows_ok  # the budget counts good event rows
    limit = spec.output.max_reject_fraction
    if seen and summary.rejected_total > limit * seen:
        raise RejectBudgetExceeded(summary.rejected_total, seen, limit)
    if events.summary.logs:
        remove_work(spec.output.path)
    return summary
