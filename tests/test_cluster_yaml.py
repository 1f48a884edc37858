"""cluster.yaml passes the autoscaler's own offline checks (no AWS credentials, no network)."""

import copy
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")
from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402  (private API, RAY_NOTES §5)

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture()
def raw():
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _validate(cfg):
    validate_config(prepare_config(copy.deepcopy(cfg)))


def test_cluster_yaml_is_valid(raw):
    _validate(raw)


def test_cluster_yaml_has_cpu_head_and_autoscaling_gpu_workers(raw):
    types = raw["available_node_types"]
    head = types[raw["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu = [t for name, t in types.items() if t["resources"].get("GPU", 0) > 0]
    assert gpu and all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in gpu)
    assert raw["idle_timeout_minutes"] > 0


def test_cluster_yaml_installs_this_project_and_holds_no_credentials(raw):
    assert any("pip install" in c and "mtssad" in c for c in raw["setup_commands"])
    assert "~/mtssad" in raw["file_mounts"]
    text = CLUSTER_YAML.read_text()
    for secret in ("aws_access_key_id", "aws_secret_access_key", "AKIA", "ssh_private_key:"):
        assert secret not in text


def test_fractional_gpu_resource_is_rejected(raw):
    raw["available_node_types"]["gpu_worker"]["resources"]["GPU"] = 0.5
    with pytest.raises(jsonschema.ValidationError, match="not of type 'integer'"):
        _validate(raw)


def test_unknown_top_level_key_is_rejected(raw):
    raw["max_worker"] = 3  # typo of max_workers
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        _validate(raw)


def test_unknown_head_node_type_is_rejected(raw):
    raw["head_node_type"] = "no-such-type"
    with pytest.raises(ValueError, match="head_node_type"):
        _validate(raw)
