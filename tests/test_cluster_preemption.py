"""The preemption drill (issue 21): a GPU node of the autoscaling cluster is removed in the middle of a class
trial; the trial restarts on another node at its next config, no finished config is trained again, and the
sweep completes and publishes to s3:// (moto on loopback).

cluster.yaml's head start commands and node types on Ray's fake multi-node provider (cluster_harness.py):
the head has no GPU, GPU nodes (1 fake GPU, 1 CPU) are launched for the class trial's GPU demand. The node is
"preempted" by killing every process of that fake node (its raylet and workers) by PID, found by the node id
Ray's fake provider puts in their environment: what a reclaimed spot instance looks like to Ray.
Set MTSSAD_DRILL_OUTPUT=FILE to keep the drill's account in FILE as well.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
import cluster_harness as ch  # noqa: E402
from cluster_harness import moto_s3, root  # noqa: E402,F401 (fixtures)

SWEEP_CMD = [sys.executable, "-c", "import sys; from mtssad.cli import main; sys.exit(main())"]


def node_pids(node_id: str) -> list[int]:
    """PIDs of a fake node's processes: the provider starts them with RAY_OVERRIDE_NODE_ID_FOR_TESTING=<id>."""
    mark = f"RAY_OVERRIDE_NODE_ID_FOR_TESTING={node_id}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _checkpoint_rows(s3, prefix: str) -> list[dict]:
    """The rows of the newest trial checkpoint in the bucket (rows.json), [] before the first one."""
    keys = [k for k in s3.keys(prefix) if k.endswith("/rows.json")]
    if not keys:
        return []
    best = []
    for k in keys:
        rows = json.loads(s3.client().get_object(Bucket=s3.bucket, Key=k)["Body"].read())
        if len(rows) > len(best):
            best = rows
    return best


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(900)
def test_a_gpu_node_removed_mid_trial_the_trial_resumes_elsewhere_and_the_sweep_publishes(root, moto_s3):
    t_start = time.monotonic()
    raw = ch.load_cluster_yaml()
    ch.generate_token(root / "home")
    gcs_port = ch.free_port()
    boot = ch.fake_bootstrap_config(raw, gcs_port=gcs_port, head_resources={"CPU": 2},
                                    worker_resources={"CPU": 1, "GPU": 1}, idle_timeout_minutes=5, max_workers=2)
    head = ch.start_head(raw, root, extra_env={"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
                                               **moto_s3.env}, bootstrap=boot, gcs_port=gcs_port)
    account = []

    def say(line: str) -> None:
        account.append(line)
        print(line, flush=True)

    prefix, name = "drill/runs", "drill"
    storage = f"s3://{moto_s3.bucket}/{prefix}"
    out = root / "out"
    ks = ["3", "4", "5"]
    cmd = SWEEP_CMD + ["sweep", "--dataset", "digits", "--side", "16", "--classes", "0", "--grid-search", "2x2",
                       "--k-search", *ks, "--no-task-search", "--backbone", "wrn-10-1", "--epochs", "4", "--min-steps", "0",
                       "--batch-size", "16", "--use-gpu", "--gpus-per-trial", "1", "--allow-cpu-fallback",
                       "--max-retries", "3", "--storage-path", storage, "--experiment-name", name, "--out", str(out)]
    env = head.env | {"RAY_ADDRESS": head.address, "RAY_AUTH_MODE": "token"}
    log_path = root / "sweep.log.txt"
    try:
        head_id = ch.list_nodes(head)[0]["node_id"]
        with open(log_path, "w") as log:
            sweep = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 600
            while not (rows := _checkpoint_rows(moto_s3, f"{prefix}/{name}/")) and sweep.poll() is None:
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.5)
            assert rows, f"the sweep ended before its first checkpoint:\n{log_path.read_text()[-3000:]}"
            victim = rows[-1]["node_id"]
            pids = node_pids(victim)
            assert victim != head_id and pids, (victim, head_id, pids)
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            say(f"[{time.monotonic() - t_start:5.1f}s] GPU node {victim} removed (SIGKILL to its {len(pids)} "
                f"processes) after {len(rows)} of {len(ks)} configs of class 0 finished there "
                f"(k={', '.join(str(r['k']) for r in rows)})")
            rc = sweep.wait(timeout=600)
        finally:
            if sweep.poll() is None:
                os.killpg(sweep.pid, signal.SIGKILL)
        text = log_path.read_text()
        assert rc == 0, text[-5000:]
        nodes = ch.list_nodes(head)
    finally:
        head.stop()
    import pandas as pd

    res = pd.read_parquet(out / "results.parquet").sort_values("fit_index")
    cols = ["normal_class", "grid", "k", "node_id", "trial_start", "fit_index", "selected", "val_auroc"]
    say("sweep console (restart lines):\n  " + "\n  ".join(
        ln for ln in text.splitlines() if "restarting" in ln or "failed" in ln.lower() and "class trial" in ln))
    say("nodes: " + "; ".join(f"{n['node_id'][:12]}.. {n['state']} GPU {n['resources'].get('GPU', 0):g}"
                              f"{' (head)' if n['is_head'] else ''}" for n in nodes))
    say("rows per config:\n" + res[cols].to_string(index=False))
    keys = moto_s3.keys(f"{prefix}/")
    published = sorted(k for k in keys if k.startswith(f"{prefix}/{name}-results/"))
    say(f"published to s3://{moto_s3.bucket}/{prefix}/{name}-results/: "
        + ", ".join(k.rsplit("/", 1)[-1] for k in published if k.endswith((".parquet", ".md")) and "/scores/" not in k)
        + f" (+{sum('/scores/' in k for k in published)} score files)")
    say(f"drill wall time {time.monotonic() - t_start:.0f} s")
    if os.environ.get("MTSSAD_DRILL_OUTPUT"):
        Path(os.environ["MTSSAD_DRILL_OUTPUT"]).write_text("\n".join(account) + "\n")

    # every config exactly once, fitted once: the finished ones were not trained again after the restart
    assert sorted(res["k"].tolist()) == [3, 4, 5] and res["fit_index"].tolist() == [0, 1, 2], res[cols]
    before, after = res[res["trial_start"] == 0], res[res["trial_start"] >= 1]
    assert len(before) >= len(rows) and set(before["node_id"]) == {victim}, res[cols]  # done before the loss
    assert len(after) >= 1 and victim not in set(after["node_id"]) and head_id not in set(after["node_id"]), res[cols]
    assert len(set(res["trial_id"])) == 1  # the same class trial, restored from its checkpoint
    assert "restarting it from its last checkpoint" in text, text[-3000:]
    assert res["selected"].sum() == 1
    assert {f"{prefix}/{name}-results/results.parquet", f"{prefix}/{name}-results/report.md"} <= set(published)
