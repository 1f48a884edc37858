"""Loopback stand-ins for the AWS cluster of cluster.yaml, started and stopped by PID (never `ray stop`).

* `start_head(...)` runs cluster.yaml's own head start commands with a fresh HOME, unique ports and
  a unique temp dir; the token is `ray get-auth-token --generate`'s, as on a user's machine.
* `fake_bootstrap_config(...)` is what `ray up` would write to ~/ray_bootstrap_config.yaml, with
  cluster.yaml's node types on Ray's fake multi-node provider (RAY_FAKE_CLUSTER=1): worker nodes
  are extra raylets on this machine, fake GPUs included, launched and removed by the autoscaler.
* `MotoS3` serves the S3 API on 127.0.0.1 (moto); the env it gives reaches pyarrow's
  S3FileSystem (AWS_ENDPOINT_URL) and therefore Ray Train/Tune/Data `s3://` storage paths.

Other people's Ray instances on the same machine are never touched: every process here is
started in its own process group and stopped by that group; anything that left the group is
found by the unique temp dir in its command line and stopped by PID.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
NODE_HOME = "/home/ray"  # the container user's HOME in cluster.yaml (token path, bootstrap config)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(home: Path, **extra: str) -> dict:
    """The environment of a loopback node/client: fresh HOME, loopback only, no usage stats."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_"))}
    env.update(HOME=str(home), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    # the interpreter running the tests first on PATH: `ray` and job entrypoints use the same env
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


def generate_token(home: Path) -> str:
    """`ray get-auth-token --generate` with HOME=home: the token file docs/aws.md has users make."""
    out = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "get-auth-token", "--generate"],
                         env=base_env(home), capture_output=True, text=True, check=True, timeout=60)
    token = (home / ".ray" / "auth_token").read_text().strip()
    assert token and out.stdout.strip() == token
    return token


def _our_pids(pgid: int, marker: str) -> list[int]:
    """PIDs in the process group we started, plus any process whose command line holds our marker."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            if os.getpgid(pid) == pgid or marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(pid)
        except (OSError, ProcessLookupError):
            pass
    return pids


def _stop_group(pgid: int, marker: str, grace_s: float = 10.0) -> None:
    """SIGTERM what we started (its group, and strays carrying our unique temp dir), SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _our_pids(pgid, marker)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while pids and time.monotonic() < deadline:
            time.sleep(0.25)
            pids = _our_pids(pgid, marker)
        if not pids:
            return


@dataclass
class LoopbackHead:
    """A head started from cluster.yaml's commands; `stop()` ends it and everything it started."""

    home: Path
    temp_dir: Path
    port: int
    dashboard_port: int
    env: dict
    pgid: int
    log: Path
    commands: list = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def stop(self) -> None:
        _stop_group(self.pgid, str(self.temp_dir))


def container_env(raw: dict, kind: str) -> list[str]:
    """The K=V pairs cluster.yaml's docker run options (`-e K=V`, global and per kind) put in a node's container."""
    import re

    opts = raw.get("docker", {}).get("run_options", []) + raw.get("docker", {}).get(f"{kind}_run_options", [])
    return [m.group(1) for o in opts for m in [re.fullmatch(r"-e\s+(\S+=\S+)", o.strip())] if m]


def adapted_start_commands(raw: dict, kind: str, *, home: Path, gcs_port: int, object_manager_port: int,
                           dashboard_port: int | None = None, head_ip: str = "127.0.0.1") -> list[str]:
    """cluster.yaml's `{kind}_start_ray_commands` for this machine: the node's HOME, the head's IP and
    the ports substituted; `ray stop` (which would end every Ray of the user here) left out; first, the
    container's environment from docker run_options (`-e K=V`: the token settings), as the node has it."""
    subs = {NODE_HOME: str(home), "$RAY_HEAD_IP:6379": f"{head_ip}:{gcs_port}", "--port=6379": f"--port={gcs_port}",
            "--object-manager-port=8076": f"--object-manager-port={object_manager_port}"}
    if dashboard_port is not None:
        subs["--dashboard-port=8265"] = f"--dashboard-port={dashboard_port}"
    env = "".join(f"export {kv.replace(NODE_HOME, str(home))}; " for kv in container_env(raw, kind))
    out = []
    for cmd in raw[f"{kind}_start_ray_commands"]:
        if cmd.strip() == "ray stop":
            continue
        for old, new in subs.items():
            cmd = cmd.replace(old, new)
        out.append(env + cmd)
    return out


def start_head(raw: dict, root: Path, *, extra_env: dict | None = None, extra_args: str = "",
               bootstrap: dict | None = None, gcs_port: int | None = None, timeout: float = 120.0) -> LoopbackHead:
    """Run cluster.yaml's head start commands here; return when the dashboard's job API answers."""
    home, temp_dir = root / "home", root / "t"
    home.mkdir(parents=True, exist_ok=True)
    temp_dir.mkdir(parents=True, exist_ok=True)
    port, om_port, dash_port = gcs_port or free_port(), free_port(), free_port()
    if bootstrap is not None:
        (home / "ray_bootstrap_config.yaml").write_text(json.dumps(bootstrap))
    cmds = adapted_start_commands(raw, "head", home=home, gcs_port=port, object_manager_port=om_port,
                                  dashboard_port=dash_port)
    # ports/paths cluster.yaml leaves to Ray's defaults, which other Ray instances here may hold
    local = (f" --temp-dir={temp_dir} --ray-client-server-port={free_port()} --dashboard-agent-listen-port={free_port()}"
             f" --dashboard-agent-grpc-port={free_port()} --metrics-export-port={free_port()}"
             f" --runtime-env-agent-port={free_port()} {extra_args}")
    cmds[-1] = cmds[-1] + local
    env = base_env(home, RAY_TMPDIR=str(temp_dir), **(extra_env or {}))
    log = root / "head.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(["bash", "-c", " && ".join(f"({c})" for c in cmds)], env=env, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=str(home))
    head = LoopbackHead(home=home, temp_dir=temp_dir, port=port, dashboard_port=dash_port, env=env,
                        pgid=proc.pid, log=log, commands=cmds)
    try:
        rc = proc.wait(timeout=timeout)
        if rc != 0:
            raise RuntimeError(f"head start commands exited {rc}:\n{log.read_text()[-4000:]}")
        _wait_http(f"{head.dashboard_url}/api/version", timeout=timeout)
    except BaseException:
        head.stop()
        raise
    return head


def _wait_http(url: str, timeout: float) -> None:
    """Until the URL answers at all (401 counts: the server is up and wants the token)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")
            time.sleep(0.5)


def fake_bootstrap_config(raw: dict, *, gcs_port: int, head_resources: dict, worker_resources: dict,
                          idle_timeout_minutes: float = 0.5, max_workers: int = 2) -> dict:
    """cluster.yaml's autoscaling settings and node types on Ray's fake multi-node provider.

    Worker resources are scaled to this machine (fake GPUs); the head keeps no GPU, as in cluster.yaml.
    """
    cfg = copy.deepcopy(raw)
    head_type, types = cfg["head_node_type"], cfg["available_node_types"]
    workers = {n: t for n, t in types.items() if n != head_type}
    fake_types = {"ray.head.default": {"resources": head_resources, "node_config": {}, "max_workers": 0}}
    for name, t in workers.items():
        fake_types[name] = {"resources": dict(worker_resources), "node_config": {},
                            "min_workers": t.get("min_workers", 0), "max_workers": min(t["max_workers"], max_workers)}
    return {
        "cluster_name": cfg["cluster_name"],
        "max_workers": min(cfg["max_workers"], max_workers),
        "upscaling_speed": cfg.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": idle_timeout_minutes,
        # as Ray's fake_multi_node example: nodes are raylets keyed by node id (all share 127.0.0.1),
        # already "up to date" (no SSH updater, no launch-config hash to compare)
        "provider": {"type": "fake_multinode", "gcs_address": f"127.0.0.1:{gcs_port}", "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True},
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": fake_types,
        "head_node_type": "ray.head.default",
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
        "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def load_cluster_yaml() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def list_nodes(head: LoopbackHead) -> list[dict]:
    """Alive and dead nodes of the cluster, through the state API (the test process holds no Ray)."""
    code = ("import json, ray; from ray.util.state import list_nodes; "
            "print(json.dumps([{'node_id': n.node_id, 'state': n.state, 'resources': n.resources_total, "
            "'is_head': n.is_head_node} for n in list_nodes(address=%r, limit=100)]))" % head.dashboard_url)
    out = subprocess.run([sys.executable, "-c", code], env=head.env | {"RAY_AUTH_MODE": "token"},
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


class MotoS3:
    """An S3 API on 127.0.0.1 (moto's server), one bucket; stopped by its process group."""

    def __init__(self, root: Path, bucket: str = "mtssad-test"):
        self.bucket, self.port = bucket, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "moto.log"
        with open(self.log, "w") as f:
            self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_http(f"{self.url}/moto-api/", timeout=60)
            self.client().create_bucket(Bucket=bucket)
        except BaseException:
            self.stop()
            raise

    @property
    def env(self) -> dict:
        """What a node's instance profile provides on AWS; AWS_ENDPOINT_URL points pyarrow and boto3 here."""
        return {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id="testing",
                            aws_secret_access_key="testing", region_name="us-east-1")

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def short_tmp(prefix: str) -> Path:
    """A short temp dir: Ray's unix socket paths under it must stay below 107 characters."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- fixtures shared by the cluster test files

@pytest.fixture()
def root():
    """A short temporary directory (Unix socket paths under it must stay under 108 bytes), removed after."""
    path = short_tmp("mtssad-cl-")
    try:
        yield path
    finally:
        rmtree(path)


@pytest.fixture()
def moto_s3(root):
    """A moto S3 server on loopback for the s3:// storage tests; skipped where moto or boto3 is missing."""
    pytest.importorskip("moto")
    pytest.importorskip("boto3")
    s3 = MotoS3(root)
    try:
        yield s3
    finally:
        s3.stop()
