import pytest
from typer.testing import CliRunner

from relshard.cli import app
from relshard.errors import SpecError
from relshard.spec import load_spec, parse_spec

GOOD = {"name": "demo", "sources": [{"path": "examples/data"}]}


def test_defaults_and_byte_sizes():
    spec = parse_spec({**GOOD, "output": {"path": "o", "shard_max_bytes": "64MiB"}})
    assert spec.output.shard_max_bytes == 64 * 1024 * 1024
    assert spec.annotate.backend == "heuristic"
    assert spec.decode.frames_per_clip == 8


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"decod": {}}, "unknown key 'decod'"),
        ({"decode": {"max_side": "big"}}, "'decode.max_side'"),
        ({"annotate": {"backend": "nope"}}, "'annotate'"),
        ({"output": {"shard_max_bytes": "10KB"}}, "at least 1MB"),
        ({"sources": []}, "'sources'"),
    ],
)
def test_bad_specs_name_the_field(patch, needle):
    with pytest.raises(SpecError) as err:
        parse_spec({**GOOD, **patch})
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_name_is_named():
    with pytest.raises(SpecError, match="missing required key 'name'"):
        parse_spec({"sources": [{"path": "x"}]})


def test_content_hash_ignores_output_path_but_not_decoding():
    a = parse_spec({**GOOD, "output": {"path": "a"}})
    b = parse_spec({**GOOD, "output": {"path": "b"}})
    c = parse_spec({**GOOD, "decode": {"frames_per_clip": 4}})
    assert a.content_hash() == b.content_hash() != c.content_hash()


def test_yaml_errors_are_one_sentence(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "missing.yaml")


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo pwned']\nsources: []\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(evil)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: demo\nsources: [{path: examples/data}]\ndecode: {frames: 3}\n", "decode.frames"),
        ("name: demo\nsources: [{path: /no/such/dir}]\n", "does not exist"),
    ],
)
def test_cli_reports_user_errors_in_one_line_with_exit_2(tmp_path, text, needle):
    spec = tmp_path / "s.yaml"
    spec.write_text(text)
    result = CliRunner().invoke(app, ["run", str(spec), "--output", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output


def test_a_spec_path_that_is_a_folder_says_so(tmp_path):
    import pytest

    from relshard.errors import SpecError
    from relshard.spec import load_spec

    with pytest.raises(SpecError, match="is a folder, not a spec file"):
        load_spec(tmp_path)
