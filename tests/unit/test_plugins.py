"""Plugins: imported once per process, validated by the spec, run by every stage."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field
from typer.testing import CliRunner

from relshard import plugins
from relshard.cli import app
from relshard.errors import SpecError
from relshard.events.stage import EventsStage
from relshard.pipelines.runner import build_stages
from relshard.plugins import (
    AnnotatorConfig,
    DetectorOptions,
    detector_options,
    import_plugins,
    imported_plugins,
    register_backend,
    register_detector,
)
from relshard.shards.item import InputRef, WorkItem
from relshard.spec import DecodeSpec, DetectSpec, PipelineSpec, parse_spec
from relshard.workers.annotate import registry
from relshard.workers.annotate.stage import AnnotateStage
from relshard.workers.detect import backends
from relshard.workers.media import MediaStage
from tests.conftest import SAMPLES

FULL = "tests.plugins.full_plugin"


def _spec(**parts: Any) -> PipelineSpec:
    return parse_spec({"name": "plug", "sources": [{"path": "."}], **parts})


def _plugin_spec(**parts: Any) -> PipelineSpec:
    defaults: dict[str, Any] = {"plugins": [FULL], "detect": {"backend": "fixed-box"},
                                "annotate": {"backend": "swatch-namer"}}
    return _spec(**{**defaults, **parts})


@pytest.fixture()
def isolated_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test are undone after it."""
    monkeypatch.setattr(plugins, "_ANNOTATOR_CONFIGS", dict(plugins._ANNOTATOR_CONFIGS))
    monkeypatch.setattr(plugins, "_DETECTOR_OPTIONS", dict(plugins._DETECTOR_OPTIONS))
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    monkeypatch.setattr(backends, "_FACTORIES", dict(backends._FACTORIES))


# --- import_plugins ----------------------------------------------------------------------

def test_import_plugins_imports_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import_plugins([FULL])
    assert FULL in imported_plugins()

    def boom(name: str) -> None:
        raise AssertionError(f"imported {name} again")

    monkeypatch.setattr(plugins.importlib, "import_module", boom)
    import_plugins([FULL, FULL])  # cached: no second import


@pytest.mark.parametrize(("module", "says"), [
    ("tests.plugins.no_such_plugin", r"^Plugin module 'tests.plugins.no_such_plugin' \(in "
     r"plugins\) was not found: install it, or put the folder that holds it on PYTHONPATH"),
    ("tests.plugins.needs_missing", r"module 'relshard_no_such_dependency' it needs is "
     r"missing: install that"),
    ("tests.plugins.broken_import", r"failed while being imported \(RuntimeError: this plugin "
     r"is broken on purpose\): fix the module, or remove it from plugins\.$"),
    ("tests/plugins/full_plugin.py", r"is not a module name"),
])
def test_a_plugin_that_cannot_be_imported_is_one_sentence(module: str, says: str) -> None:
    for _ in range(2):  # failures are not cached: the second call says it again
        with pytest.raises(SpecError, match=says) as err:
            import_plugins([module])
        assert "\n" not in str(err.value)
    assert module not in imported_plugins()


# --- the spec ----------------------------------------------------------------------------

def test_the_spec_imports_its_plugins_before_validating_annotate_and_detect() -> None:
    spec = _plugin_spec()
    cfg = spec.annotate
    assert type(cfg).__name__ == "SwatchNamerConfig" and isinstance(cfg, AnnotatorConfig)
    assert cfg.label == "swatch" and cfg.batch_size == 2  # the plugin's own defaults
    # detect.options: validated by the plugin's model, stored with its defaults
    assert spec.detect.options == {"box": [0.25, 0.25, 0.75, 0.75], "kind": "person",
                                   "score": 0.9}
    typed = detector_options(spec.detect)
    assert isinstance(typed, DetectorOptions) and typed.kind == "person"


@pytest.mark.parametrize(("parts", "says"), [
    ({"annotate": {"backend": "swatch-namer", "label": ""}},
     "'annotate.label': String should have at least 1 character"),
    ({"annotate": {"backend": "swatch-namer", "colour": "red"}},
     "unknown key 'annotate.colour': remove it"),
    ({"detect": {"backend": "fixed-box", "options": {"score": 2}}},
     "'detect.options.score': Input should be less than or equal to 1"),
    ({"detect": {"backend": "fixed-box", "options": {"shape": "round"}}},
     "unknown key 'detect.options.shape'"),
])
def test_a_plugins_settings_are_checked_by_its_own_model(parts: dict[str, Any],
                                                         says: str) -> None:
    spec = {"plugins": [FULL], "detect": {"backend": "fixed-box"},
            "annotate": {"backend": "swatch-namer"}, **parts}
    with pytest.raises(SpecError, match=f"^Invalid spec: {says}"):
        _spec(**spec)


@pytest.mark.parametrize(("annotate", "says"), [
    ({"backend": "openai"}, "missing required key 'annotate.openai.base_url': add it "
     r"\(and 1 more problem\(s\)\)\."),
    ({"backend": "heuristic", "batch_size": 0},
     "'annotate.heuristic.batch_size': Input should be greater than or equal to 1."),
    ({"backend": "heuristic", "x": 1}, "unknown key 'annotate.heuristic.x'"),
    ({}, "'annotate': Unable to extract tag using discriminator 'backend'."),
    ({"backend": 3}, "'annotate': Input tag '3' found using 'backend' does not match any of "
     "the expected tags: 'heuristic', 'openai', 'transformers'."),
])
def test_built_in_backends_keep_their_messages(annotate: dict[str, Any], says: str) -> None:
    with pytest.raises(SpecError, match=f"^Invalid spec: {says}"):
        _spec(annotate=annotate)


@pytest.mark.parametrize(("parts", "says"), [
    ({"annotate": {"backend": "not-registered"}},
     "'annotate': backend 'not-registered' is not known: use heuristic, openai or "
     "transformers, or list the plugin module that registers it in plugins."),
    ({"detect": {"backend": "not-registered"}},
     "'detect': detect.backend 'not-registered' is not known: use one of centerface, "
     ".*none, opencv, or list the plugin module"),
    ({"detect": {"backend": "centerface", "options": {"a": 1}}},
     "'detect.options': only a plugin detector that registered an options model takes "
     "detect.options, and 'centerface' does not"),
    ({"plugins": ["my/plugin.py"]}, "'plugins': 'my/plugin.py' is not a module name"),
])
def test_unknown_names_are_one_sentence(parts: dict[str, Any], says: str) -> None:
    with pytest.raises(SpecError, match=f"^Invalid spec: {says}") as err:
        _spec(**parts)
    assert "\n" not in str(err.value)


def test_a_spec_whose_plugin_fails_to_import_exits_2(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: p\nsources: [{path: .}]\nplugins: [tests.plugins.broken_import]\n"
                    "annotate: {backend: swatch-namer}\n")
    with pytest.raises(SpecError, match="'tests.plugins.broken_import'"):
        parse_spec({"name": "p", "sources": [{"path": "."}],
                    "plugins": ["tests.plugins.broken_import"]})
    result = CliRunner().invoke(app, ["run", str(spec)])
    assert result.exit_code == 2, result.output
    assert "tests.plugins.broken_import" in result.output and "fix the module" in result.output


def test_a_plugin_config_round_trips_and_hashes_like_a_built_in() -> None:
    spec = _plugin_spec(annotate={"backend": "swatch-namer", "label": "tile"})
    data = spec.model_dump(mode="json")
    assert data["annotate"]["label"] == "tile"  # the subclass's fields are serialized
    again = parse_spec(data)
    assert again == spec and again.content_hash() == spec.content_hash()
    faster = _plugin_spec(annotate={"backend": "swatch-namer", "label": "tile",
                                    "batch_size": 9, "resources": {"num_cpus": 2}})
    assert faster.content_hash() == spec.content_hash()  # scheduling, not content
    other = _plugin_spec(annotate={"backend": "swatch-namer", "label": "tiles"})
    assert other.content_hash() != spec.content_hash()
    boxes = _plugin_spec(detect={"backend": "fixed-box", "options": {"kind": "face"}})
    assert boxes.content_hash() != _plugin_spec().content_hash()


def test_a_spec_without_detect_options_keeps_its_hash() -> None:
    # detect.options is newer than the outputs already written: they must still resume
    assert "options" not in __import__("json").dumps(_spec().model_dump(
        mode="json", exclude={"detect"}))
    assert _spec().content_hash() == _spec(detect={"options": {}}).content_hash()


# --- registering -------------------------------------------------------------------------

@pytest.mark.usefixtures("isolated_registries")
def test_registering_checks_names_and_models() -> None:
    class NotAConfig(DetectorOptions):
        pass

    with pytest.raises(TypeError, match="must subclass relshard.plugins.AnnotatorConfig"):
        register_backend("odd", object, config_model=NotAConfig)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is built in"):
        register_backend("openai", object, config_model=AnnotatorConfig)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must match"):
        register_backend("Bad Name", object)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must subclass relshard.plugins.DetectorOptions"):
        register_detector("odd", object, config_model=AnnotatorConfig)  # type: ignore[arg-type]


@pytest.mark.usefixtures("isolated_registries")
def test_a_backend_registered_without_a_model_takes_the_base_settings() -> None:
    class Options(DetectorOptions):
        level: int = Field(default=1, ge=0)

    register_backend("plain-test", object)  # type: ignore[arg-type]
    register_detector("levels-test", object, config_model=Options)  # type: ignore[arg-type]
    spec = _spec(annotate={"backend": "plain-test", "batch_size": 3},
                 detect={"backend": "levels-test", "options": {"level": 4}})
    assert type(spec.annotate) is AnnotatorConfig and spec.annotate.batch_size == 3
    assert detector_options(spec.detect) == Options(level=4)
    with pytest.raises(SpecError, match="unknown key 'annotate.label'"):
        _spec(annotate={"backend": "plain-test", "label": "x"})


# --- the stages import the plugins themselves --------------------------------------------

def test_every_stage_imports_the_spec_plugins_before_work() -> None:
    missing = ["tests.plugins.no_such_plugin"]
    item = WorkItem(InputRef("a", str(SAMPLES / "images" / "grace_hopper.jpg"), "auto", None))
    media = MediaStage(DecodeSpec(isolate=False), DetectSpec(backend="none"), missing)
    with pytest.raises(SpecError, match="no_such_plugin"):
        media.process_batch([item])
    with pytest.raises(SpecError, match="no_such_plugin"):
        AnnotateStage(_spec().annotate, missing).setup()
    with pytest.raises(SpecError, match="no_such_plugin"):
        EventsStage(DecodeSpec(), missing).process_batch([item])


def test_the_isolated_child_says_which_plugin_it_cannot_import() -> None:
    item = WorkItem(InputRef("a", str(SAMPLES / "images" / "grace_hopper.jpg"), "auto", None))
    media = MediaStage(DecodeSpec(isolate=True, timeout_s=60), DetectSpec(backend="none"),
                       ["tests.plugins.needs_missing"])
    with pytest.raises(SpecError, match="'relshard_no_such_dependency' it needs is missing"):
        media.process_batch([item])


@pytest.mark.parametrize("isolate", [False, True])
def test_plugin_decoder_detector_and_annotator_run_in_the_stages(tmp_path: Path,
                                                                 isolate: bool) -> None:
    (tmp_path / "red.swatch").write_text('{"width": 64, "height": 48, "rgb": [250, 10, 10]}')
    (tmp_path / "bad.swatch").write_text("not json")
    shutil.copy(SAMPLES / "images" / "grace_hopper.jpg", tmp_path / "photo.jpg")
    spec = _plugin_spec(decode={"isolate": isolate, "timeout_s": 60},
                        annotate={"backend": "swatch-namer", "label": "tile"})
    items = [WorkItem(InputRef(p.name, str(p), "auto", None))
             for p in sorted(tmp_path.iterdir())]
    for stage in build_stages(spec):
        items = stage.process_batch(items)
    by_key = {it.input.input_key: it for it in items}
    assert by_key["bad.swatch"].reject is not None
    assert by_key["bad.swatch"].reject.reason == "corrupt"
    (red,) = by_key["red.swatch"].samples
    assert red.source.decoder == "swatch" and red.caption == "tile: red with 1 subject(s)"
    assert [s.detector for s in red.subjects] == ["fixed-box"]
    assert red.provenance is not None and red.provenance.backend == "swatch-namer"
    (photo,) = by_key["photo.jpg"].samples  # a built-in decoder, the plugin's detector
    assert photo.caption.startswith("tile: ") and len(photo.subjects) == 1
