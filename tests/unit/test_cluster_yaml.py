"""cluster.yaml is a launcher config Ray itself accepts, wired the way the docs say."""

from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

import relshard
from relshard.spec import load_spec

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def config() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_ray_validates_the_cluster_config(config):
    validate_config(config)
    validate_config(prepare_config(config))


def test_ray_rejects_a_broken_copy(config):
    config["available_node_types"]["cpu_decode"]["min_wokers"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate_config(config)


def test_node_types_carry_the_resources_specs_ask_for(config):
    types = config["available_node_types"]
    assert types["head"]["resources"]["CPU"] == 0
    assert types["cpu_decode"]["resources"]["decode"] == types["cpu_decode"]["resources"]["CPU"]
    assert types["gpu_annotate"]["resources"]["GPU"] >= 1
    spec = load_spec(REPO / "examples" / "cluster_pipeline.yaml")
    assert set(spec.decode.resources.custom) <= set(types["cpu_decode"]["resources"])


def test_setup_pins_this_relshard_and_keeps_the_dashboard_on_loopback(config):
    setup = " ".join(config["setup_commands"])
    # every node runs pipeline stages; the GPU annotators need hf (which brings torch)
    assert f"relshard[pipeline,hf,s3]=={relshard.__version__}" in setup
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
