"""One pipeline run, start to end: lease, recover, list, skip what is done, execute, commit.

0. Check the sources (they exist, none lies inside the output) before writing anything.
1. Take the output's lease (one writer per output, :mod:`relshard.shards.lease`); a
   heartbeat thread keeps it fresh and it is given back at the end, also on errors.
2. Refuse an output folder written by a different spec (mixing would corrupt it).
3. Recover: remove temporary files and shards left uncommitted by a kill.
4. List the sources (listing errors become rejects) and drop inputs already written or
   rejected, except rejects picked by ``retry`` (``--retry-rejects``), which run again.
5. Execute the stages on Ray; each write task commits its own units.
6. Write the manifest (last) and check the books: written + rejected = inputs.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from relshard.deps import require_extra
from relshard.errors import OutputConflictError, RejectBudgetExceeded, RelshardError
from relshard.events.expander import EventsExpander, remove_work
from relshard.events.row_rejects import RowRejectLedger
from relshard.events.stage import EventsStage, SkipEvents
from relshard.pipelines.budget import check_reject_budget
from relshard.pipelines.driver_rejects import ListingRejectLedger
from relshard.pipelines.sources import SourceLister
from relshard.plugins import import_plugins
from relshard.record import is_retryable_reason
from relshard.shards.item import InputRef
from relshard.shards.layout import OutputLayout, open_root
from relshard.shards.lease import OutputLease
from relshard.shards.ledger import RejectRow, ResumePlan, RetrySelection, plan_resume
from relshard.shards.manifest import build_manifest, write_manifest
from relshard.shards.recovery import committed_units, recover
from relshard.spec import PipelineSpec, Resources
from relshard.workers.annotate.base import preflight
from relshard.workers.annotate.registry import build_annotator
from relshard.workers.annotate.stage import AnnotateStage
from relshard.workers.decode.formats import VIDEO_EXTENSIONS
from relshard.workers.detect.backends import preflight_detector
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
    dangling_symlinks: int = 0
    symlinks_skipped: int = 0
    other_skipped: int = 0
    output_excluded: list[str] = field(default_factory=list)
    lease_takeover: str | None = None
    retry: str | None = None  # what --retry-rejects asked for ("retryable" or reasons)
    retrying: dict[str, int] = field(default_factory=dict)  # reason -> rejects re-queued
    retryable_left: int = 0  # rejected inputs whose latest reject is retryable
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

    @property
    def paths(self) -> dict[str, str]:
        """Where the output's parts are: the folder, manifest, shards, index, rejects, spec."""
        root = self.output.rstrip("/")
        return {"output": root, "manifest": f"{root}/manifest.json",
                "shards": f"{root}/shards", "index": f"{root}/index",
                "rejects": f"{root}/rejects", "spec": f"{root}/{SPEC_FILE}"}

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain JSON types, with the derived figures and the paths."""
        data = asdict(self)
        data.update(rejected_total=self.rejected_total, leak_rejects=self.leak_rejects,
                    leak_rate=self.leak_rate, paths=self.paths)
        return data


def _runs_beside(stage: Stage, resources: Resources) -> bool:
    """Whether ``stage`` can run inside a task with ``resources``: no state to load
    once per worker, no GPU, and the same resources (else it keeps its own tasks)."""
    return not stage.stateful and not stage.resources.num_gpus and stage.resources == resources


def video_share(tables: list[pa.Table]) -> float:
    """The fraction of listed inputs whose name ends in a video extension."""
    pattern = r"(?i)\.(" + "|".join(sorted(VIDEO_EXTENSIONS)) + r")$"
    total = sum(t.num_rows for t in tables)
    videos = sum(pc.sum(pc.match_substring_regex(t.column("uri"), pattern)).as_py() or 0
                 for t in tables)
    return videos / total if total else 0.0


def build_stages(spec: PipelineSpec, video_share: float = 0.0) -> list[Stage]:
    """The ordered stages of a spec (pure: no Ray). ``video_share``: the fraction of
    inputs that are videos, which sizes the media stage's tasks when the spec does not
    (``decode.batch_size``)."""
    n_events = sum(1 for s in spec.sources if s.modality == "events")
    if n_events and n_events == len(spec.sources):
        return [EventsStage(spec.decode, spec.plugins)]
    annotate = AnnotateStage(spec.annotate, spec.plugins)
    if _runs_beside(annotate, spec.decode.resources):
        # a stateless CPU annotator (the heuristic) runs on each input right after its
        # decode, in the same process (the decode child when isolated): one trip
        stages: list[Stage] = [MediaStage(spec.decode, spec.detect, spec.plugins,
                                          followers=[annotate], video_share=video_share)]
    else:
        stages = [MediaStage(spec.decode, spec.detect, spec.plugins, video_share=video_share),
                  annotate]
    if n_events:  # media and event logs in one spec: event inputs skip the media stages
        return [*(SkipEvents(s) for s in stages), EventsStage(spec.decode, spec.plugins)]
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


def new_run_id() -> str:
    """``YYYYmmddHHMMSSmmm`` (UTC) + 4 random hex: run ids sort in start order."""
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")[:17] + uuid.uuid4().hex[:4]


@dataclass
class _Listing:
    tables: list[pa.Table]
    todo: int
    skipped: int
    retried_keys: set[str]


def _collect_listing(lister: Iterable[InputRef], done: set[str],
                     retry_keys: dict[str, RejectRow]) -> _Listing:
    """Gather the listing as Arrow chunks (compact: ~150 bytes an input), skipping done inputs."""
    tables: list[pa.Table] = []
    rows: list[tuple[Any, ...]] = []
    todo = skipped = 0
    retried: set[str] = set()

    def flush() -> None:
        if rows:
            cols = [list(c) for c in zip(*rows, strict=True)]
            tables.append(pa.table(cols, schema=_LISTING_SCHEMA))
            rows.clear()

    for ref in lister:
        if ref.input_key in done:
            skipped += 1
            continue
        if ref.input_key in retry_keys:
            retried.add(ref.input_key)
        rows.append((ref.input_key, ref.uri, ref.modality, ref.size,
                     json.dumps(ref.extra) if ref.extra else ""))
        todo += 1
        if len(rows) >= LISTING_CHUNK:
            flush()
    flush()
    return _Listing(tables, todo, skipped, retried)


def run_pipeline(spec: PipelineSpec, *, output: str | None = None, address: str | None = None,
                 num_cpus: int | None = None, retry: RetrySelection | None = None
                 ) -> RunSummary:
    """Run ``spec``; return the summary. Raises RelshardError subclasses for user errors.

    ``retry``: re-queue the rejected inputs whose latest reject it selects
    (``--retry-rejects``); a later write supersedes the reject in the ledger.
    """
    require_extra("pipeline")  # Ray is imported late: say so before any work
    started = time.monotonic()
    import_plugins(spec.plugins)  # the driver too (a spec built by model_copy skipped parsing)
    if output:
        spec = spec.model_copy(update={"output": spec.output.model_copy(update={"path": output})})
    if any(s.modality != "events" for s in spec.sources):
        preflight_detector(spec.detect)  # a missing model or runtime: one sentence, no work
    lister = SourceLister(spec.sources, output=spec.output.path)
    lister.check()  # a missing source or one inside the output: before anything is written
    run_id = new_run_id()
    lease = OutputLease(spec.output.path, run_id, spec.output.lease_timeout_s)
    lease.acquire()  # creates the output folder; refuses while another run holds it
    try:
        lease.start_heartbeat()
        summary = RunSummary(output=spec.output.path, run_id=run_id,
                             lease_takeover=lease.took_over)
        _run_leased(spec, lister, lease, summary, address, num_cpus, retry)
    finally:
        lease.release()
    summary.seconds = time.monotonic() - started
    return summary


def _run_leased(spec: PipelineSpec, lister: SourceLister, lease: OutputLease,
                summary: RunSummary, address: str | None, num_cpus: int | None,
                retry: RetrySelection | None) -> None:
    from relshard.pipelines import ray_cluster  # before anything imports ray

    fs, root = open_root(spec.output.path)
    run_id = summary.run_id
    report = recover(spec.output.path)
    if report.removed:
        log.warning("recovered output: removed %d uncommitted file(s)", len(report.removed))
    layout = OutputLayout.open(spec.output.path)
    units = committed_units(layout)
    plan: ResumePlan = plan_resume(layout, units, retry)
    done = plan.done
    if units or fs.exists(f"{root}/manifest.json"):
        _check_spec(fs, root, spec)  # a folder that holds nothing yet takes any spec
    _write_spec(fs, root, spec)
    summary.retry = retry.describe() if retry is not None else None
    summary.retrying = dict(plan.retrying)
    retry_keys = plan.retry_rows

    list_rejects = ListingRejectLedger(spec.output.path, run_id, done, spec.output.mtime)
    lister.on_reject = list_rejects.add
    # event logs -> bucket inputs; their bad rows go straight to the rejects ledger
    row_rejects = RowRejectLedger(spec.output.path, run_id, done, spec.output.mtime)
    events = EventsExpander(spec, spec.output.path, lister, row_rejects)
    listing = _collect_listing(events, done, retry_keys)
    row_rejects.flush()
    list_rejects.flush()
    stats = lister.stats
    summary.listed = stats.listed
    summary.hidden_skipped = stats.hidden_skipped
    summary.dangling_symlinks = stats.dangling_symlinks
    summary.symlinks_skipped = stats.symlinks_skipped
    summary.other_skipped = stats.other_skipped
    summary.output_excluded = list(stats.output_excluded)
    summary.already_done = listing.skipped + row_rejects.skipped + list_rejects.skipped
    driver_rejected = row_rejects.written + list_rejects.written
    summary.to_process = listing.todo + driver_rejected
    results: list[dict[str, Any]] = []
    if listing.todo:
        preflight(build_annotator(spec.annotate))  # server/model errors before any work
        ray_cluster.connect(address, num_cpus or spec.runtime.num_cpus)
        from relshard.pipelines import ray_backend

        try:
            results = ray_backend.execute(spec, spec.output.path, run_id, listing.tables,
                                          listing.todo,
                                          build_stages(spec, video_share(listing.tables)),
                                          credit=events.summary.rows_ok,
                                          rejected_before=driver_rejected,
                                          rows_per_write=events.summary.rows_per_write(spec))
        except RejectBudgetExceeded as exc:
            raise _budget_error(exc.rejected, exc.seen, exc.fraction) from None

    rejected: Counter[str] = Counter(row_rejects.by_reason) + Counter(list_rejects.by_reason)
    leaks: Counter[str] = Counter()
    for res in results:
        summary.inputs_written += res["inputs_written"]
        summary.samples_written += res["samples_written"]
        summary.units += len(res["units"])
        rejected.update(res["rejects_by_reason"])
        leaks.update(res.get("leaks") or {})
    summary.rejected = dict(rejected)
    summary.leaks = dict(leaks)
    summary.units += row_rejects.units + list_rejects.units
    # the retryable rejects left: earlier ones not retried (or retried but no longer
    # listed) and this run's
    unlisted = [r for k, r in retry_keys.items() if k not in listing.retried_keys]
    summary.retryable_left = (plan.kept_retryable + sum(1 for r in unlisted if r.retryable)
                              + sum(n for reason, n in rejected.items()
                                    if is_retryable_reason(reason)))
    if results:
        # Every write task has ended: what is still uncommitted belongs to attempts
        # that died (a lost node, a killed worker) and was redone by their retries.
        recover(spec.output.path)
    lease.check()  # taken over meanwhile: leave the manifest to the run that holds it
    manifest = build_manifest(spec.output.path, spec.name, spec.content_hash(),
                              extra=events.summary.manifest_extra() or None)
    write_manifest(spec.output.path, manifest)
    summary.manifest = manifest
    accounted = summary.inputs_written + summary.rejected_total
    if accounted != summary.to_process:
        raise RelshardError(
            f"Accounting mismatch: {summary.to_process} inputs to process but {accounted} "
            f"written or rejected; this is a bug, please report it with the run log."
        )
    seen = summary.to_process + events.summary.rows_ok  # the budget counts good event rows
    try:
        check_reject_budget(summary.rejected_total, seen, spec.output.max_reject_fraction)
    except RejectBudgetExceeded as exc:
        raise _budget_error(exc.rejected, exc.seen, exc.fraction, reasons=rejected) from None
    if events.summary.logs:
        remove_work(spec.output.path)


def _budget_error(rejected: int, seen: int, limit: float,
                  reasons: Counter[str] | None = None) -> RejectBudgetExceeded:
    names = sorted(r for r in (reasons or {}) if r)
    hint = ("re-queue them with `relshard run SPEC --retry-rejects"
            + (f" {','.join(names)}`" if names else " REASON,...`"))
    return RejectBudgetExceeded(rejected, seen, limit, hint)
