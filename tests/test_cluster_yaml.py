"""cluster.yaml passes the autoscaler's own offline checks (no AWS credentials, no network), and the
token, IAM, image and data/storage layout it relies on agree with docs/, the README and ray_jobs/."""

import copy
import json
import re
import shlex
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")
from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402  (private API, RAY_NOTES §5)

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
IAM = ROOT / "docs" / "iam"
# Every place that shows a user how to submit the jobs.
RECIPE_FILES = [ROOT / "README.md", ROOT / "docs" / "aws.md", CLUSTER_YAML, *sorted((ROOT / "ray_jobs").glob("*.py"))]


@pytest.fixture()
def raw():
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _validate(cfg):
    validate_config(prepare_config(copy.deepcopy(cfg)))


def _start_commands(raw, kind):
    return " ".join(raw[f"{kind}_start_ray_commands"])


def _token_path(raw):
    """The absolute token path on the nodes: the file_mounts target that receives ~/.ray/auth_token."""
    targets = [remote for remote, local in raw["file_mounts"].items() if local.rstrip("/") == "~/.ray/auth_token"]
    assert len(targets) == 1, f"expected one file_mounts entry copying ~/.ray/auth_token to the nodes; got {raw['file_mounts']}"
    return targets[0]


def _synced_data_root(raw):
    """The node-local directory that setup_commands fills from s3://<bucket>/data."""
    for cmd in raw["setup_commands"]:
        m = re.search(r"aws s3 sync .*?s3://\S+/data\s+(\S+)", cmd)
        if m:
            return m.group(1)
    raise AssertionError(f"no `aws s3 sync s3://.../data DIR` in setup_commands: {raw['setup_commands']}")


def job_recipes():
    """(file, argv) of every `ray job submit ...` shown in the docs, README, cluster.yaml and job docstrings."""
    out = []
    for path in RECIPE_FILES:
        if not path.exists():
            continue
        text = path.read_text()
        # join shell continuations, including the ones inside '#' comment blocks of cluster.yaml
        text = re.sub(r"\\\n[#\s]*", " ", text)
        for m in re.finditer(r"ray job submit --[^\n`]*", text):  # a command, not a mention
            out.append((path.name, shlex.split(m.group(0))))
    return out


def _flag(argv, name):
    return argv[argv.index(name) + 1] if name in argv else None


def test_cluster_yaml_is_valid(raw):
    _validate(raw)


def test_cluster_yaml_has_cpu_head_and_autoscaling_gpu_workers(raw):
    types = raw["available_node_types"]
    head = types[raw["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu = [t for name, t in types.items() if t["resources"].get("GPU", 0) > 0]
    assert gpu and all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in gpu)
    assert raw["idle_timeout_minutes"] > 0


def test_nodes_run_a_pinned_image_and_install_nothing_at_start(raw):
    image = raw["docker"]["image"]
    assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"unpinned image {image!r}"
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "FROM rayproject/ray:2.60.0-" in dockerfile  # the pyproject pin: head, workers, clients on one Ray
    assert 'ray[default,tune,train,data]==2.60.0' in (ROOT / "pyproject.toml").read_text()
    node_cmds = raw["setup_commands"] + raw["head_setup_commands"] + raw["worker_setup_commands"]
    assert not [c for c in node_cmds if "pip install" in c], f"node start pip-installs: {node_cmds}"


def test_cluster_yaml_holds_no_credentials():
    text = CLUSTER_YAML.read_text()
    for secret in ("aws_access_key_id", "aws_secret_access_key", "AKIA", "ssh_private_key:"):
        assert secret not in text


def test_token_reaches_head_workers_and_clients(raw):
    path = _token_path(raw)
    assert path.startswith("/"), f"token path on the nodes must be absolute; got {path!r}"
    for kind in ("head", "worker"):
        cmds = _start_commands(raw, kind)
        assert "RAY_AUTH_MODE=token" in cmds and f"RAY_AUTH_TOKEN_PATH={path}" in cmds, (kind, cmds)
    docs = (ROOT / "docs" / "aws.md").read_text()
    assert "ray get-auth-token --generate" in docs and "export RAY_AUTH_MODE=token" in docs


def test_dashboard_listens_on_loopback_only(raw):
    assert "--dashboard-host=127.0.0.1" in _start_commands(raw, "head")


def test_head_role_can_launch_tag_terminate_and_pass_the_worker_role(raw):
    types = raw["available_node_types"]
    profile = {name: t["node_config"]["IamInstanceProfile"]["Arn"].rsplit("/", 1)[-1] for name, t in types.items()}
    head, workers = profile.pop(raw["head_node_type"]), set(profile.values())
    assert workers == {"mtssad-worker"} and head == "mtssad-head", (head, workers)
    policy = json.loads((IAM / f"{head}-policy.json").read_text())
    allowed = {a for s in policy["Statement"] if s["Effect"] == "Allow"
               for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    # the boto3 calls of ray/autoscaler/_private/aws/node_provider.py
    assert {"ec2:RunInstances", "ec2:CreateTags", "ec2:TerminateInstances", "ec2:DescribeInstances"} <= allowed
    pass_role = [s for s in policy["Statement"] if "iam:PassRole" in s["Action"]]
    assert pass_role and "arn:aws:iam::<account-id>:role/mtssad-worker" in pass_role[0]["Resource"]
    for name in ("ec2-trust-policy", "mtssad-worker-policy", "launcher-policy"):
        json.loads((IAM / f"{name}.json").read_text())


def test_job_recipes_agree_with_the_synced_layout(raw):
    recipes = job_recipes()
    names = {f for f, _ in recipes}
    assert {"README.md", "aws.md", "cluster.yaml", "cub200_sweep.py", "one_vs_all.py"} <= names, names
    data_root = _synced_data_root(raw)
    assert data_root.startswith("/")
    for where, argv in recipes:
        assert not [a for a in argv if "~" in a], f"{where}: `~` is expanded by the client's shell: {argv}"
        assert _flag(argv, "--data-root") == data_root, f"{where}: --data-root must be {data_root}: {argv}"
        out = _flag(argv, "--out")
        assert out and out.startswith("/mnt/mtssad/results/"), f"{where}: --out must be absolute on the head: {argv}"
        storage = _flag(argv, "--storage-path")
        assert storage and storage.startswith("s3://"), f"{where}: --storage-path must be shared (s3://): {argv}"
        assert _flag(argv, "--runtime-env") == "ray_jobs/runtime_env.yaml", f"{where}: {argv}"
        assert _flag(argv, "--address") == "http://127.0.0.1:8265", f"{where}: {argv}"


def test_job_runtime_env_waits_for_cold_gpu_nodes():
    env = yaml.safe_load((ROOT / "ray_jobs" / "runtime_env.yaml").read_text())
    assert float(env["env_vars"]["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"]) >= 600  # Ray's default is 60 s


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
