"""The Ray Data backend: the only module that builds a Ray Data graph.

    from_blocks(listing) ─► map_batches(decode+detect) ─► map_batches(annotate) ─► ShardDatasink

Rows carry one input each: ``input_key`` and ``payload`` (a msgpack WorkItem), so
an input's samples stay together. Stateless stages run as tasks; stateful ones
(a model to load) or GPU ones as an actor pool. Task retries are bounded: Ray
Data would otherwise retry a deterministic worker crash forever.
"""

from __future__ import annotations

import json
import re
import warnings
from typing import Any

import pyarrow as pa
import ray

from relshard.errors import RelshardError
from relshard.pipelines.gc_pause import gc_paused
from relshard.pipelines.ray_datasink import ShardDatasink, warm_writer
from relshard.pipelines.run_monitor import report_failure, start_monitor
from relshard.shards.item import InputRef, WorkItem
from relshard.spec import PipelineSpec, Resources
from relshard.workers.stage import Stage

MAX_BLOCKS = 100_000
MIN_WRITE_ROWS = 16
# Write tasks run in worker processes of their own: Ray keeps a worker pool per runtime
# env, and a task's env_vars merge into the job's runtime env (working_dir, pip and the
# rest are inherited). Without it, a worker that had run a write task later took a decode
# task and started one more decode child (3 children on 2 CPUs, each ~0.6 CPU-s to start,
# and 2 writer processes; with it: 2 and 1, peak PSS ~100 MB lower on 2,000 images).
# A run starts one writer worker at once (``warm_writer``): a worker of this env is not
# prestarted, and a run of few inputs writes only after its last decode.
WRITER_ENV = {"env_vars": {"RELSHARD_WORKER_ROLE": "write"}}
PAYLOAD_SCHEMA = pa.schema([("input_key", pa.string()), ("payload", pa.binary())])


def _items_from_table(table: pa.Table) -> list[WorkItem]:
    if "payload" in table.column_names:
        return [WorkItem.from_bytes(p) for p in table.column("payload").to_pylist()]
    rows = table.to_pylist()
    return [
        WorkItem(InputRef(r["input_key"], r["uri"], r["modality"], r["size"],
                          json.loads(r["extra"]) if r["extra"] else {}))
        for r in rows
    ]


def _table_from_items(items: list[WorkItem]) -> pa.Table:
    return pa.table(
        [[it.input.input_key for it in items], [it.to_bytes() for it in items]],
        schema=PAYLOAD_SCHEMA,
    )


def _payloads_from_table(table: pa.Table) -> list[bytes]:
    if "payload" in table.column_names:
        return list(table.column("payload").to_pylist())
    return [it.to_bytes() for it in _items_from_table(table)]


def _run_stage(stage: Stage, table: pa.Table) -> pa.Table:
    if stage.takes_payloads():  # bytes through: no WorkItem objects in this worker
        out = stage.process_payloads(_payloads_from_table(table))
        return pa.table([table.column("input_key"), pa.array(out, pa.binary())],
                        schema=PAYLOAD_SCHEMA)
    return _table_from_items(stage.process_batch(_items_from_table(table)))


def _process(stage: Stage, table: pa.Table, monitor: Any) -> pa.Table:
    try:
        with gc_paused():
            return _run_stage(stage, table)
    except RelshardError as exc:  # Ray Data wraps it untyped: the driver reads the monitor
        report_failure(monitor, exc)
        raise


class _StageActor:
    """Actor-pool wrapper: setup() once per actor."""

    def __init__(self, stage: Stage, monitor: Any) -> None:
        self.stage = stage
        self.monitor = monitor
        try:
            stage.setup()
        except RelshardError as exc:
            report_failure(monitor, exc)
            raise

    def __call__(self, table: pa.Table) -> pa.Table:
        return _process(self.stage, table, self.monitor)


def _stage_fn(stage: Stage, monitor: Any) -> Any:
    def run(table: pa.Table) -> pa.Table:
        return _process(stage, table, monitor)

    run.__name__ = f"relshard_{stage.name}"
    return run


def _remote_args(res: Resources, max_retries: int, actor: bool) -> dict[str, Any]:
    args: dict[str, Any] = {"num_cpus": res.num_cpus}
    if res.num_gpus:
        args["num_gpus"] = res.num_gpus
    if res.custom:
        args["resources"] = dict(res.custom)
    if res.memory_mb:
        args["memory"] = res.memory_mb * 1024 * 1024
    if actor:
        args.update(max_restarts=max_retries, max_task_retries=max_retries)
    else:
        args["max_retries"] = max_retries
    return args


def _cluster_cpus() -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _apply_stage(ds: Any, stage: Stage, spec: PipelineSpec, monitor: Any,
                 batch_size: int) -> Any:
    actor = stage.stateful or stage.resources.num_gpus > 0
    remote = _remote_args(stage.resources, spec.runtime.max_task_retries, actor)
    with warnings.catch_warnings():
        # Ray 2.60 marks max_retries/max_restarts as passed-through "ray_remote_args"
        # deprecated, with no named replacement yet; they are what bounds crash retries.
        warnings.simplefilter("ignore", DeprecationWarning)
        return _map(ds, stage, actor, remote, monitor, batch_size)


def _map(ds: Any, stage: Stage, actor: bool, remote: dict[str, Any], monitor: Any,
         batch_size: int) -> Any:
    if actor:
        size = max(1, int(_cluster_cpus() // max(stage.resources.num_cpus, 1)))
        return ds.map_batches(
            _StageActor, fn_constructor_args=(stage, monitor), batch_size=batch_size,
            batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(min_size=1, max_size=size),
            zero_copy_batch=True, **remote,
        )
    return ds.map_batches(
        _stage_fn(stage, monitor), batch_size=batch_size, batch_format="pyarrow",
        zero_copy_batch=True, **remote,
    )


_LOST_TYPE = re.compile(r"Exception ([\w.]+)\.(\w+) isn't serializable")


def _lost_relshard_error(err: BaseException) -> RelshardError | None:
    """The stand-in for a relshard error Ray could not ship: its class, named in Ray's
    message, is looked up (never guessed from words in the text)."""
    import importlib

    match = _LOST_TYPE.search(str(err))
    if match is None:
        return None
    try:
        cls = getattr(importlib.import_module(match.group(1)), match.group(2))
    except (ImportError, AttributeError):
        return None
    if not (isinstance(cls, type) and issubclass(cls, RelshardError)):
        return None
    lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
    return RelshardError(lines[-1].split(": ", 1)[-1].strip())


def relshard_error(exc: BaseException) -> RelshardError | None:
    """The relshard error a Ray failure carries, as the original object, or None.

    relshard errors pickle (each keeps its arguments in ``args``), so Ray ships them
    back whole: a :class:`ray.exceptions.RayTaskError` holds the raised error in
    ``cause`` (also when it is the dual "as instance of cause" class, whose text is the
    worker traceback, hence ``cause`` first), and Ray Data chains it with ``from``.
    Ray loses the type only when the error does not pickle (a plugin's subclass with
    an unpicklable attribute): its ``cause`` is then a plain ``RayError`` naming the
    class; when that class is a RelshardError, one with the error's message stands in.
    """
    cur: BaseException | None = exc
    for _ in range(16):
        if cur is None:
            break
        if isinstance(cur, ray.exceptions.RayTaskError):
            cause = cur.cause
            if isinstance(cause, RelshardError):
                return cause
            if isinstance(cause, BaseException) and cause is not cur:
                cur = cause
                continue
        if isinstance(cur, RelshardError):
            return cur
        if isinstance(cur, ray.exceptions.RayError) and (lost := _lost_relshard_error(cur)):
            return lost
        cur = cur.__cause__ or cur.__context__
    return None


def _monitor_failure(monitor: Any) -> RelshardError | None:
    """The typed relshard error a task handed to the run monitor, if any."""
    try:
        failure = ray.get(monitor.failure.remote())
    except ray.exceptions.RayError:
        return None
    return failure if isinstance(failure, RelshardError) else None


def _split(tables: list[pa.Table], blocks: int) -> list[pa.Table]:
    """Slice the listing into about ``blocks`` tables (one Ray block each).

    Slices are zero-copy views of the listing chunks (a 10M-input listing is ~1.5 GB;
    concatenating it first would hold it twice)."""
    size = -(-sum(t.num_rows for t in tables) // blocks)
    return [t.slice(i, size) for t in tables for i in range(0, t.num_rows, size)]


def _batch_sizes(stages: list[Stage], blocks: list[pa.Table]) -> list[int]:
    """Each stage's Ray Data batch size: its own, but the first stage's is at most a block.

    Ray Data bundles input blocks until a task has ``batch_size`` rows: a batch a few
    rows over the blocks' size gave each task two blocks, half as many tasks as planned,
    and a run's last task ran alone for twice as long (2,000 images on 2 CPUs: 4 tasks
    of 500 rather than 8 of 250, 8.5-8.6 s vs 8.1-8.3 s a run)."""
    sizes = [stage.batch_size for stage in stages]
    if sizes and blocks:
        sizes[0] = max(1, min(sizes[0], max(t.num_rows for t in blocks)))
    return sizes


def _writers(stages: list[Stage], cpus: int) -> int:
    """Concurrent write tasks. Writers reserve no CPU (reserving one starved the maps on
    small machines), so their number is capped instead: unbounded, Ray started a worker
    process per concurrent write, each re-importing everything (16 processes in a 16 s
    run on 2 CPUs). Event runs write hundreds of samples an input: at half the CPUs the
    writer was their bottleneck (10M events: 37-41 s vs 32 s), so they get one per CPU.
    A media input costs the writer ~0.25 ms against ~5 ms (an image) to make it, so one
    writer per 4 CPUs keeps up and leaves the CPUs to the maps (6,000 images on 2 CPUs:
    2 writers 160-194 img/s, 1 writer 196-229 img/s)."""
    if any(stage.name == "events" for stage in stages):
        return max(1, cpus)
    return max(1, cpus // 4)


def _rows_per_write(cap: int, n_inputs: int, writers: int) -> int:
    """Inputs per write task: ``cap`` (``output.write_batch_inputs``), or fewer in a run
    too small to give each writer four write tasks of that size, so that writes overlap
    the decoding instead of waiting for its end (a 120-clip run wrote all 120 clips after
    its last decode task, ~0.9 s of a 7 s run; with 4 writes of 30 the last one is short).
    Never below ``MIN_WRITE_ROWS``: a run of a few inputs keeps one write task."""
    return max(1, min(cap, max(MIN_WRITE_ROWS, -(-n_inputs // (4 * writers)))))


def execute(spec: PipelineSpec, root: str, run_id: str, listing: list[pa.Table], n_inputs: int,
            stages: list[Stage], credit: int = 0, rejected_before: int = 0,
            rows_per_write: int | None = None) -> list[dict[str, Any]]:
    """Run the graph over the listing; return one write summary per write task.

    ``credit``: good units seen before the graph (event rows of the events pre-pass),
    counted with the written inputs by the reject budget; ``rejected_before``: inputs the
    driver rejected itself (bad event rows), counted with the rejects. ``rows_per_write``:
    inputs per write task (default ``output.write_batch_inputs``); event buckets hold
    hundreds of samples each, so they use fewer, or one write would wait for the whole
    dataset.
    """
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = spec.runtime.progress  # Ray logs progress when not a tty
    ctx.print_on_execution_start = False
    ctx.verbose_stats_logs = False
    cpus = _cluster_cpus()
    first = stages[0].batch_size if stages else 1
    # One block per batch of the first stage (so small runs spread over every CPU),
    # capped so that ten million inputs make ~100 rows a block, not millions of blocks.
    blocks = max(1, min(n_inputs, MAX_BLOCKS, max(cpus * 4, -(-n_inputs // max(first, 1)))))
    parts = _split(listing, blocks)
    # from_blocks: the blocks' metadata is read here; from_arrow sent a remote task per
    # table for it, and the run's first decode task waited ~0.6 s on those
    ds = ray.data.from_blocks(parts)
    monitor = start_monitor()  # before the stages: they report their errors to it too
    warm_writer.options(runtime_env=WRITER_ENV).remote()  # fire and forget
    for stage, size in zip(stages, _batch_sizes(stages, parts), strict=True):
        ds = _apply_stage(ds, stage, spec, monitor, size)
    if credit or rejected_before:
        ray.get(monitor.add.remote(credit, rejected_before))
    writers = _writers(stages, cpus)
    if rows_per_write is None:
        rows_per_write = _rows_per_write(
            spec.output.write_batch_inputs or spec.output.WRITE_BATCH_DEFAULT, n_inputs, writers)
    sink = ShardDatasink(root, run_id, spec.output, monitor, rows_per_write=rows_per_write)
    try:
        ds.write_datasink(sink, ray_remote_args={"num_cpus": 0,
                                                 "max_retries": spec.runtime.max_task_retries,
                                                 "runtime_env": WRITER_ENV},
                          concurrency=writers)
    except Exception as exc:
        inner = _monitor_failure(monitor) or relshard_error(exc)
        if inner is not None:
            raise inner from None
        raise
    return sink.result
