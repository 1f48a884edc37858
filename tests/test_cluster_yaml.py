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
    assert len(targets) == 1, ("expected one file_mounts entry copying ~/.ray/auth_token to the nodes; "
                               f"got {raw['file_mounts']}")
    return targets[0]


def _container_env(raw, kind="head"):
    """KEY=VALUE pairs the docker run options put in the container's environment (`-e K=V`)."""
    opts = raw["docker"].get("run_options", []) + raw["docker"].get(f"{kind}_run_options", [])
    return dict(m.group(1).split("=", 1) for o in opts for m in [re.fullmatch(r"-e\s+(\S+=\S+)", o.strip())] if m)


def _synced_data_root(raw):
    """The node-local directory that head_setup_commands fills from s3://<bucket>/data."""
    for cmd in raw["head_setup_commands"]:
        m = re.search(r"aws s3 sync .*?s3://\S+/data\s+(\S+)", cmd)
        if m:
            return m.group(1)
    raise AssertionError(f"no `aws s3 sync s3://.../data DIR` in head_setup_commands: {raw['head_setup_commands']}")


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
    """In the container's environment, so `ray exec cluster.yaml "ray status"` authenticates too (issue 21.6),
    and readable by its owner only (Ray writes it 0644; issue 21.8)."""
    path = _token_path(raw)
    assert path.startswith("/"), f"token path on the nodes must be absolute; got {path!r}"
    for kind in ("head", "worker"):
        env = _container_env(raw, kind)
        assert env.get("RAY_AUTH_MODE") == "token" and env.get("RAY_AUTH_TOKEN_PATH") == path, (kind, env)
    chmod = " && ".join(raw["setup_commands"])  # every node, in the container, after file_mounts
    assert f"chmod 600 {path}" in chmod and "chmod 700 " + path.rsplit("/", 1)[0] in chmod, raw["setup_commands"]
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


def test_gpu_workers_get_the_gpus_and_only_the_head_syncs_the_data(raw):
    """Issue 21.1: `--gpus all` on the GPU workers' containers, whatever `docker info` lists (not on the
    GPU-less head, where docker would refuse it). 21.7: the data is synced where it is read: the head."""
    assert "--gpus all" in raw["docker"]["worker_run_options"]
    head_options = raw["docker"].get("run_options", []) + raw["docker"].get("head_run_options", [])
    assert not any("--gpus" in o for o in head_options)
    assert all(t["resources"].get("GPU", 0) >= 1 for n, t in raw["available_node_types"].items()
               if n != raw["head_node_type"]), "worker_run_options' --gpus all needs a GPU on every worker type"
    for key in ("setup_commands", "worker_setup_commands"):
        assert not any("s3 sync" in c for c in raw.get(key) or []), (key, raw.get(key))
    assert _synced_data_root(raw) == "/mnt/mtssad/data"


def test_an_on_demand_gpu_type_backs_the_spot_one(raw):
    """Issue 21.4: when spot launches fail, the autoscaler can launch the same GPU on demand; with both
    available it picks spot (equal scores: the type name sorting last wins, resource_demand_scheduler)."""
    types = raw["available_node_types"]
    gpu = {n: t for n, t in types.items() if t["resources"].get("GPU", 0) > 0}
    spot = [n for n, t in gpu.items() if t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"]
    ondemand = [n for n, t in gpu.items() if "InstanceMarketOptions" not in t["node_config"]]
    assert spot and ondemand, gpu.keys()
    assert gpu[ondemand[0]]["resources"] == gpu[spot[0]]["resources"]
    assert sorted([spot[0], ondemand[0]], reverse=True)[0] == spot[0]  # ties: spot first
    assert gpu[ondemand[0]]["max_workers"] <= gpu[spot[0]]["max_workers"]


def test_head_role_acts_only_on_this_clusters_instances(raw):
    """Issue 21.8: launching, tagging, stopping and terminating are scoped by the cluster's tag."""
    policy = json.loads((IAM / "mtssad-head-policy.json").read_text())
    name = raw["cluster_name"]
    for s in policy["Statement"]:
        acts = [s["Action"]] if isinstance(s["Action"], str) else s["Action"]
        mutating = {"ec2:TerminateInstances", "ec2:StopInstances", "ec2:StartInstances", "ec2:CreateTags"} & set(acts)
        if mutating:
            assert s["Resource"] != "*" and s.get("Condition"), s
            cond = json.dumps(s["Condition"])
            assert (f'"ec2:ResourceTag/ray-cluster-name": "{name}"' in cond
                    or '"ec2:CreateAction": "RunInstances"' in cond), s
        arns = [s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"]
        if "ec2:RunInstances" in acts and any("instance/" in r for r in arns):
            assert s["Condition"]["StringEquals"]["aws:RequestTag/ray-cluster-name"] == name, s


def test_job_recipes_schedule_on_the_shipped_node_types(raw):
    """Issue 21.3/21.5: what every recipe's class trials ask for fits one of cluster.yaml's node types, and a
    GPU recipe never leaves the sweep one trial at a time on the 0-GPU head."""
    import importlib.util

    from mtssad.distributed.resources import class_trial_resources

    types = raw["available_node_types"]
    head = types[raw["head_node_type"]]["resources"]
    for where, argv in job_recipes():
        script = next(a for a in argv if a.endswith(".py"))
        if script.endswith("ood.py"):  # one TorchTrainer run, no class trials: its workers take 1 GPU node each
            continue
        spec = importlib.util.spec_from_file_location("job", ROOT / script)
        job = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(job)
        args = job.parse_args([a.replace("$BUCKET", "b") for a in argv[argv.index(script) + 1:]])
        workers = args.num_workers or 1  # left open with --use-gpu: 1 (tune.sweep_workers)
        resources = class_trial_resources(num_workers=workers, use_gpu=args.use_gpu,
                                          cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                                          driver_cpus=1.0,
                                          driver_resources={args.driver_resource: 1} if args.driver_resource else None,
                                          max_concurrent_trials=args.max_concurrent_trials, cluster=dict(head))
        need = resources["trial_resources"]
        fits = [n for n, t in types.items() if all(t["resources"].get(k, 0) >= v for k, v in need.items())]
        assert fits, f"{where}: class trials ask for {need}; no node type offers it: {argv}"
        capped = resources["max_concurrent_trials"]
        assert capped is None, f"{where}: capped at {capped}: {argv}"


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
