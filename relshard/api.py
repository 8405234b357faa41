"""The Python face of relshard: what the ``relshard`` command does, as functions.

    import relshard

    spec = relshard.spec_from(name="photos", sources=["photos/"], output={"path": "out/photos"})
    summary = relshard.run(spec, num_cpus=4)          # or run("examples/demo.yaml")
    print(summary.to_dict()["rejected"])
    relshard.verify("out/photos").ok
    relshard.build_benchmark("out/photos", to="bench/photos", seed=1)

Every function raises a :class:`relshard.errors.RelshardError` subclass (one sentence)
for anything the caller can fix, and returns a result with ``to_dict()``. Heavy imports
(Ray, pyarrow, torch) happen inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relshard.deps import require_extra
from relshard.errors import RelshardError, SpecError
from relshard.spec import PipelineSpec, load_spec, parse_spec

if TYPE_CHECKING:
    from relshard.builders.benchmark import BenchmarkOptions
    from relshard.pipelines.runner import RunSummary
    from relshard.report.compare import Comparison
    from relshard.report.export import ExportOptions, ExportResult
    from relshard.report.figures import BuildStats
    from relshard.report.gallery.build import GalleryOptions
    from relshard.report.repair import RepairReport
    from relshard.report.verify import VerifyReport
    from relshard.training.trainer import TrainConfig, TrainResult

SpecLike = PipelineSpec | Mapping[str, Any] | str | Path
#: ``progress(description, total)`` -> ``advance(n)``: how show/export report progress.
ProgressFactory = Callable[[str, int], Callable[[int], None]]

__all__ = [
    "BenchmarkResult", "Evaluation", "ShowResult", "SpecLike", "StatsResult", "TrainSummary",
    "VerifyResult", "build_benchmark", "evaluate", "export", "load_spec", "parse_split", "run",
    "show", "spec_from", "stats", "submit", "train", "verify",
]


# ---- specs --------------------------------------------------------------------------------


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on ``base``; mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _looks_like_yaml(text: str) -> bool:
    return "\n" in text or ": " in text or text.rstrip().endswith(":") or \
        text.lstrip().startswith("{")


def _as_dict(source: SpecLike) -> dict[str, Any]:
    if isinstance(source, PipelineSpec):
        return source.model_dump(mode="json", exclude_unset=True)
    if isinstance(source, Mapping):
        return dict(source)
    if isinstance(source, str) and _looks_like_yaml(source):
        import yaml

        try:
            data = yaml.safe_load(source)
        except yaml.YAMLError:
            raise SpecError("The spec text is not valid YAML: fix its syntax.") from None
        if not isinstance(data, dict):
            raise SpecError("The spec text must be a YAML mapping with keys name, sources, ...")
        return data
    return load_spec(source).model_dump(mode="json", exclude_unset=True)


def spec_from(source: SpecLike | None = None, /, **fields: Any) -> PipelineSpec:
    """A validated :class:`PipelineSpec` from a dict, YAML text, a YAML file, a spec, and/or
    keyword arguments (top-level keys, merged over ``source`` key by key).

    ``sources`` may name paths directly: ``sources=["photos/"]`` is
    ``sources=[{"path": "photos/"}]``. Raises :class:`SpecError` naming the field and the fix.
    """
    if source is None and not fields:
        raise SpecError("spec_from needs a spec (a dict, YAML text or a file) or keyword "
                        "arguments such as name= and sources=.")
    if not fields:
        if isinstance(source, PipelineSpec):
            return source
        if isinstance(source, Path) or (isinstance(source, str) and
                                        not _looks_like_yaml(source)):
            return load_spec(source)
    data = _as_dict(source) if source is not None else {}
    data = _merge(data, fields)
    if isinstance(data.get("sources"), str | Path):
        data["sources"] = [data["sources"]]
    if isinstance(data.get("sources"), list):
        data["sources"] = [{"path": str(s)} if isinstance(s, str | Path) else s
                           for s in data["sources"]]
    origin = "spec" if not isinstance(source, str | Path) or _looks_like_yaml(str(source)) \
        else f"spec {str(source)!r}"
    return parse_spec(data, origin=origin)


# ---- run ----------------------------------------------------------------------------------


def _retry_selection(retry_rejects: bool | str | Iterable[str] | None) -> Any:
    from relshard.shards.ledger import RetrySelection

    if retry_rejects is None or retry_rejects is False:
        return None
    if retry_rejects is True:
        return RetrySelection.parse("retryable")
    if isinstance(retry_rejects, str):
        return RetrySelection.parse(retry_rejects)
    return RetrySelection.parse(",".join(retry_rejects))


def run(spec: SpecLike, *, output: str | Path | None = None, address: str | None = None,
        num_cpus: int | None = None, retry_rejects: bool | str | Iterable[str] | None = None,
        progress: bool | None = None) -> RunSummary:
    """Run a pipeline: decode, detect, annotate and write shards, resuming if possible.

    ``spec``: a :class:`PipelineSpec`, a dict, YAML text or a YAML file. ``output``
    overrides ``output.path``; ``address``: a Ray cluster (``auto``, ``ray://HOST:10001``),
    default a local Ray of ``num_cpus``; ``retry_rejects``: True for every retryable reject,
    or reasons (``"timeout,backend_unavailable"`` or a list) to run again; ``progress``
    overrides ``runtime.progress`` (Ray Data's progress bars).

    Returns the :class:`~relshard.pipelines.runner.RunSummary` (``to_dict()``: counts,
    rejects by reason, output paths). Raises :class:`RejectBudgetExceeded` when more
    inputs were rejected than ``output.max_reject_fraction`` allows (the output is kept).
    """
    pipeline = spec_from(spec)
    require_extra("pipeline")  # Ray, OpenCV, numba: one sentence naming the extra
    from relshard.pipelines.runner import run_pipeline

    if progress is not None:
        pipeline = pipeline.model_copy(update={
            "runtime": pipeline.runtime.model_copy(update={"progress": progress})})
    return run_pipeline(pipeline, output=str(output) if output is not None else None,
                        address=address, num_cpus=num_cpus,
                        retry=_retry_selection(retry_rejects))


def submit(spec: SpecLike, *, address: str | None = None, output: str | None = None,
           relshard_from: str = "local", job_id: str | None = None,
           env: Mapping[str, str] | None = None) -> str:
    """Submit a pipeline to a Ray cluster (its dashboard address) as a Ray Job; the job id."""
    pipeline = spec_from(spec)
    require_extra("pipeline")
    from relshard.cluster import jobs

    if output:
        pipeline = pipeline.model_copy(
            update={"output": pipeline.output.model_copy(update={"path": output})})
    return jobs.submit(pipeline, address, relshard_from=relshard_from, job_id=job_id,
                       env_vars=dict(env or {}))


# ---- stats, verify, show, export ----------------------------------------------------------


def _load_stats(target: str, records: int) -> BuildStats:
    """Stats of an output root, or a report saved with ``stats --json`` (a ``.json`` file)."""
    import json

    from relshard.report.figures import BuildStats
    from relshard.report.stats import compute_stats
    from relshard.report.tables import InspectError

    path = Path(target)
    if target.endswith(".json") and path.is_file():
        try:
            return BuildStats.from_json_dict(json.loads(path.read_text()))
        except ValueError as exc:
            raise InspectError(f"{target} is not a saved `relshard stats --json` report: "
                               f"{str(exc).splitlines()[0]}") from None
    return compute_stats(target, records=records)


def _samples_strip(root: str, compare: str | None, n: int = 8) -> str:
    """A strip of random samples of ``root`` for the HTML stats report, with a link to its
    gallery when ``ROOT/gallery.html`` exists (``relshard show`` writes it there)."""
    from relshard.report.gallery.build import paired_strip, sample_strip
    from relshard.report.gallery.page import strip_html

    local = "://" not in root or root.startswith("file://")
    gallery = Path(root.removeprefix("file://")) / "gallery.html"
    link = gallery.resolve().as_uri() if local and gallery.is_file() else None
    hint = f"relshard show {root}" + (f" --compare {compare}" if compare else "")
    if compare and not compare.endswith(".json"):  # another output: the same keys beside
        mine, theirs = paired_strip(root, compare, n=n)
        if mine:
            return (strip_html(mine, f"Samples of {root}", link, hint)
                    + strip_html(theirs, f"The same keys in {compare}"))
    samples = sample_strip(root, n=n)
    if not samples:
        return ""
    return strip_html(samples, "Samples", link, hint)


@dataclass
class StatsResult:
    """The figures of a build, with the comparison against an older one when asked."""

    stats: BuildStats
    comparison: Comparison | None = None
    html: Path | None = None
    missing_shards: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = self.stats.to_json_dict()
        if self.comparison is not None:
            data["comparison"] = self.comparison.to_json_dict()
        return data


def stats(out: str | Path, *, records: int = 10_000, compare: str | Path | None = None,
          html: str | Path | None = None) -> StatsResult:
    """Figures of the build at ``out`` (a folder, URL, or a saved ``stats --json`` report).

    ``records``: ``KEY.json`` records sampled for the record-level figures (0: none);
    ``compare``: an older build or saved report; ``html``: also write the HTML report there.
    """
    from relshard.report.compare import compare_stats
    from relshard.report.stats import missing_shards

    root, other = str(out), str(compare) if compare is not None else None
    current = _load_stats(root, records)
    comparison = compare_stats(_load_stats(other, records), current) if other else None
    result = StatsResult(current, comparison)
    if html is not None:
        from relshard.report.report_html import render_html
        from relshard.report.tables import InspectError

        result.html = Path(html)
        try:
            strip = "" if root.endswith(".json") else _samples_strip(root, other)
            result.html.write_text(render_html(current, comparison, strip), encoding="utf-8")
        except OSError as exc:
            raise InspectError(f"Cannot write the HTML report to {html}: "
                               f"{exc.strerror}.") from None
    if not root.endswith(".json"):
        with suppress(RelshardError, OSError):  # the figures stand; only the warning goes
            result.missing_shards = list(missing_shards(root, current))
    return result


@dataclass
class VerifyResult:
    """What ``verify`` found (``ok``: no problem), and what ``repair`` rewrote first."""

    report: VerifyReport
    repaired: RepairReport | None = None

    @property
    def ok(self) -> bool:
        return bool(self.report.ok)

    def to_dict(self) -> dict[str, Any]:
        data = self.report.to_json_dict()
        if self.repaired is not None:
            data["repair"] = self.repaired.to_json_dict()
        return data


def verify(out: str | Path, *, repair: bool = False, workers: int = 4,
           progress: Callable[[str, int], Callable[[int], None]] | None = None
           ) -> VerifyResult:
    """Check every shard, record, index row and the manifest of ``out``.

    ``repair``: first rebuild the index and manifest from the shards (holds the lease).
    ``progress(description, total) -> advance(n)`` follows the shard bytes re-hashed.
    Problems are in the result (``ok`` False), not raised.
    """
    from relshard.report.verify import verify_output

    repaired = None
    if repair:
        from relshard.report.repair import repair_output

        repaired = repair_output(str(out))
    return VerifyResult(verify_output(str(out), workers=workers, progress=progress), repaired)


@dataclass
class ShowResult:
    """Where the gallery was written, and a line on what it shows."""

    path: Path
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "message": self.message}


def _no_progress(_task: str, _total: int) -> Callable[[int], None]:
    return lambda _n: None


def show(out: str | Path, *, to: str | Path | None = None, options: GalleryOptions | None = None,
         progress: ProgressFactory | None = None, **overrides: Any) -> ShowResult:
    """Write an HTML gallery of ``out``'s samples to ``to`` (default ``OUT/gallery.html``
    for a local output, ``./gallery.html`` for a URL). ``overrides``: GalleryOptions
    fields (``n=``, ``seed=``, ``where=[...]``, ``compare=``...)."""
    from pydantic import ValidationError

    from relshard.report.gallery.build import GalleryOptions, build_gallery
    from relshard.report.tables import InspectError

    root = str(out)
    if to is None:
        local = "://" not in root or root.startswith("file://")
        to = Path(root.removeprefix("file://")) / "gallery.html" if local else "gallery.html"
    try:
        opts = GalleryOptions.model_validate(
            {**(options or GalleryOptions()).model_dump(), **overrides})
    except ValidationError as exc:
        raise InspectError(f"Invalid gallery option: {exc.errors()[0]['msg']}.") from None
    result = build_gallery(root, opts, progress or _no_progress)
    path = Path(to)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(result.html, encoding="utf-8")
    except OSError as exc:
        raise InspectError(f"Cannot write the gallery to {path}: {exc.strerror}.") from None
    return ShowResult(path, result.message)


def export(out: str | Path, *, to: str | Path, options: ExportOptions | None = None,
           progress: Callable[[int], Callable[[int], None]] | None = None,
           **overrides: Any) -> ExportResult:
    """Write the run at ``out`` as Parquet under ``to`` (one schema for every sample).

    ``overrides``: ExportOptions fields (``format="hf"``, ``rows_per_file=``,
    ``overwrite=True``...). The result has ``to_json_dict()``.
    """
    from dataclasses import replace

    from relshard.report.export import ExportOptions, export_run

    opts = replace(options or ExportOptions(), **overrides)
    return export_run(str(out), to, opts, progress)


# ---- benchmarks and training --------------------------------------------------------------


def parse_split(split: str | Sequence[float] | Mapping[str, float]) -> dict[str, float]:
    """``"0.8,0.1,0.1"``, ``(0.8, 0.1, 0.1)`` or ``{"train": .8, ...}`` as train/val/test
    shares; raises RelshardError unless three non-negative shares with a positive sum."""
    if isinstance(split, Mapping):
        return {str(k): float(v) for k, v in split.items()}
    try:
        parts = [float(p) for p in (split.split(",") if isinstance(split, str) else split)]
    except (TypeError, ValueError):
        parts = []
    if len(parts) != 3 or min(parts) < 0 or sum(parts) <= 0:
        raise RelshardError(
            f"The split {split!r} must be three non-negative shares, e.g. 0.8,0.1,0.1.")
    return dict(zip(("train", "val", "test"), parts, strict=True))


@dataclass
class BenchmarkResult:
    """The benchmark written to ``path``: its ``benchmark.json`` as ``data``."""

    path: str
    data: dict[str, Any]

    @property
    def splits(self) -> dict[str, Any]:
        return dict(self.data.get("splits", {}))

    @property
    def warnings(self) -> list[str]:
        return list(self.data.get("warnings", []))

    def to_dict(self) -> dict[str, Any]:
        return dict(self.data)


def build_benchmark(out: str | Path, *, to: str | Path, options: BenchmarkOptions | None = None,
                    split: str | Sequence[float] | Mapping[str, float] | None = None,
                    **overrides: Any) -> BenchmarkResult:
    """Split the finished run at ``out`` into leak-free train/val/test outputs under ``to``.

    ``split``: the shares (see :func:`parse_split`); ``overrides``: BenchmarkOptions
    fields (``seed=``, ``split_by="time"``, ``min_per_split=``, ``overwrite=True``...).
    """
    from relshard.builders.benchmark import build_benchmark as build

    if split is not None:
        overrides["fractions"] = parse_split(split)
    return BenchmarkResult(str(to), build(str(out), str(to), options, **overrides))


@dataclass
class Evaluation:
    """Metrics of a split beside its baselines (``data``: what ``evaluate --json`` prints)."""

    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.data)


def evaluate(bench: str | Path, predictions: str | Path, *, split: str = "test",
             bootstrap: int = 1000, seed: int = 0) -> Evaluation:
    """Score ``predictions`` (a ``.pt`` checkpoint, JSON Lines, ``"gold"`` or
    ``"baselines"``) on ``split`` of the benchmark at ``bench``, with bootstrap intervals."""
    from relshard.builders.evaluate import evaluate_benchmark

    return Evaluation(evaluate_benchmark(str(bench), str(predictions), split,
                                         replicates=bootstrap, seed=seed))


@dataclass
class TrainSummary:
    """What training did: steps, mean losses at the start and the end, the checkpoint."""

    result: TrainResult

    @property
    def first_loss(self) -> float:
        from relshard.training.trainer import mean_loss

        return mean_loss(self.result.losses, self._k())

    @property
    def last_loss(self) -> float:
        from relshard.training.trainer import mean_loss

        return mean_loss(self.result.losses, -self._k())

    def _k(self) -> int:
        return max(1, min(10, len(self.result.losses) // 2))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self.result)
        data.update(first_loss=self.first_loss, last_loss=self.last_loss)
        return data


def train(config: str | Path | TrainConfig, *, max_steps: int | None = None,
          use_ray: bool = False, address: str | None = None, workers: int = 1,
          use_gpu: bool = False, cpus_per_worker: float | None = None) -> TrainSummary:
    """Train the binding or Hawkes model from shards; re-running resumes from the checkpoint.

    ``config``: a training YAML or a TrainConfig; ``use_ray``: through Ray Train
    (``workers``, ``use_gpu``, ``cpus_per_worker``) on ``address`` or a local Ray.
    """
    require_extra("train")  # torch: one sentence naming the extra, not an ImportError
    if use_ray:
        require_extra("pipeline")
    from relshard.training.trainer import TrainConfig, load_train_config
    from relshard.training.trainer import train as train_local

    cfg = config if isinstance(config, TrainConfig) else load_train_config(config)
    if max_steps is not None:
        cfg = cfg.model_copy(update={"max_steps": max_steps})
    if not use_ray:
        return TrainSummary(train_local(cfg))
    from relshard.pipelines import ray_cluster
    from relshard.training.ray_train import train_ray

    started = ray_cluster.connect(address)
    try:
        return TrainSummary(train_ray(cfg, num_workers=workers, use_gpu=use_gpu,
                                      cpus_per_worker=cpus_per_worker))
    finally:
        if started:
            ray_cluster.shutdown()
