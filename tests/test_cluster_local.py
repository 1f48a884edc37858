"""cluster.yaml's start commands, token, autoscaling and S3 storage, proven on loopback.

Nothing here runs `ray stop`: each test ends exactly the processes it started (by process group,
see cluster_harness.py), on unique ports and temp dirs, so other Ray instances on the machine are
not touched. The short test is in the default run; the others are `-m slow`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("ray")
import cluster_harness as ch  # noqa: E402
from cluster_harness import moto_s3, root  # noqa: E402,F401 (fixtures)

SCRIPT_DIR = ch.ROOT / "tests"


def _run(cmd, env, timeout=300, check=True):
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"{cmd} exited {out.returncode}:\n{out.stdout[-12000:]}\n{out.stderr[-3000:]}")
    return out


# ---------------------------------------------------------------- start commands and token (default run)

@pytest.mark.ray
def test_start_commands_refuse_to_start_without_the_provisioned_token(root):
    """The commands read the token at RAY_AUTH_TOKEN_PATH: with none there, head and worker stop at once
    (Ray's ensure_token_if_auth_enabled) instead of starting an unauthenticated node."""
    raw = ch.load_cluster_yaml()
    home = root / "home"
    home.mkdir()
    for kind in ("head", "worker"):
        cmds = ch.adapted_start_commands(raw, kind, home=home, gcs_port=ch.free_port(),
                                         object_manager_port=ch.free_port(), dashboard_port=ch.free_port())
        # a head that did start would be ours to stop: its own process group, marked by its temp dir
        cmd = " && ".join(f"({c} --temp-dir={root / kind})" if kind == "head" else f"({c})" for c in cmds)
        # Ray refuses `ray start --address` in loopback mode before it looks for the token; the worker
        # check needs multi-node mode, and fails before it binds anything (no token, no node started)
        env = ch.base_env(home) | ({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"} if kind == "worker" else {})
        proc = subprocess.Popen(["bash", "-c", cmd], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            log, _ = proc.communicate(timeout=120)
        finally:
            ch._stop_group(proc.pid, str(root / kind), grace_s=5)
        assert proc.returncode != 0, f"{kind} started without a token:\n{log[-2000:]}"
        assert "token" in log.lower() and "auth" in log.lower(), f"{kind}: unexpected failure:\n{log[-2000:]}"


@pytest.mark.slow
@pytest.mark.ray
def test_head_from_start_commands_takes_jobs_only_with_the_token(root):
    raw = ch.load_cluster_yaml()
    token = ch.generate_token(root / "home")  # what a user runs before `ray up`; file_mounts copies the file
    head = ch.start_head(raw, root)
    try:
        submit = ["ray", "job", "submit", "--address", head.dashboard_url, "--submission-id", "with-token", "--",
                  sys.executable, "-c", "import ray; ray.init(); print('nodes', len(ray.nodes()))"]
        ok = _run(submit, head.env | {"RAY_AUTH_MODE": "token"}, timeout=180)
        assert "nodes 1" in ok.stdout and "succeeded" in ok.stdout.lower(), ok.stdout[-2000:]

        (root / "stranger").mkdir()
        no_token = _run(submit[:6] + ["nope"] + submit[7:], ch.base_env(root / "stranger", RAY_AUTH_MODE="token"),
                        check=False)
        assert no_token.returncode != 0 and "token" in (no_token.stdout + no_token.stderr).lower()
        (root / "stranger" / ".ray").mkdir()
        (root / "stranger" / ".ray" / "auth_token").write_text("x" * len(token))
        wrong = _run(submit[:6] + ["wrong"] + submit[7:], ch.base_env(root / "stranger", RAY_AUTH_MODE="token"),
                     check=False)
        assert wrong.returncode != 0 and ("403" in wrong.stderr or "invalid" in wrong.stderr.lower()), wrong.stderr[-2000:]

    finally:
        head.stop()
    assert not ch._our_pids(head.pgid, str(root)), "processes of this test outlived it"


# ---------------------------------------------------------------- S3 storage

@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("uri_form", ["env", "query"])
def test_tune_and_train_keep_their_state_in_s3(root, moto_s3, uri_form):
    """Plain s3:// with the endpoint in the environment (as on AWS, where it is S3's own), or pyarrow's
    query parameters in the URI: either way the runs' files land in the bucket."""
    prefix = f"runs-{uri_form}"
    uri = f"s3://{moto_s3.bucket}/{prefix}"
    if uri_form == "query":
        uri += f"?endpoint_override=127.0.0.1:{moto_s3.port}&scheme=http&region=us-east-1"
    (root / "home").mkdir()
    out = _run([sys.executable, str(SCRIPT_DIR / "s3_storage_run.py"), uri],
               ch.base_env(root / "home", **moto_s3.env), timeout=400)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    keys = moto_s3.keys(prefix + "/")
    print(f"\nS3 listing of s3://{moto_s3.bucket}/{prefix}/ ({len(keys)} objects):\n  " + "\n  ".join(keys))
    assert result["tune_errors"] == 0 and result["tune_scores"] == [1.0, 2.0]
    assert result["train_checkpoint"] and result["train_checkpoint"].startswith(f"{moto_s3.bucket}/{prefix}/train_s3/")
    tune_ckpts = {k.split("/checkpoint_")[0] for k in keys if k.startswith(f"{prefix}/tune_s3/") and "/checkpoint_" in k}
    assert len(tune_ckpts) == 2, keys  # one checkpoint per trial
    assert any(k.startswith(f"{prefix}/tune_s3/") and k.endswith("tuner.pkl") for k in keys), keys
    assert any(k.startswith(f"{prefix}/train_s3/checkpoint_") and k.endswith("model.txt") for k in keys), keys


SWEEP_CMD = [sys.executable, "-c", "import sys; from mtssad.cli import main; sys.exit(main())"]


def _local_files(root, names=("tuner.pkl", "rows.json", "state.json", "c0.pt")) -> list[str]:
    """Files under the test's root that belong in the storage (experiment state, trial checkpoints, detectors)."""
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and (p.name in names or "checkpoint_" in str(p)))


@pytest.mark.slow
@pytest.mark.ray
def test_interrupted_sweep_resumes_from_s3_and_ray_data_scores_there(root, moto_s3):
    """`mtssad sweep --storage-path s3://...`: the fault drill stops every class trial after its first config,
    `--resume` finishes only the rest (rows' trial_start / fit_index), the results are published to the bucket;
    Ray Data reads a detector from the bucket and writes its scores there; nothing of it lands on local disk."""
    import pandas as pd

    prefix = "mtssad/runs"
    storage = f"s3://{moto_s3.bucket}/{prefix}"
    (root / "home").mkdir()
    out = root / "out"
    env = ch.base_env(root / "home", **moto_s3.env)
    sweep = ["sweep", "--dataset", "digits", "--side", "16", "--classes", "0", "1", "--grid-search", "2x2",
             "--k-search", "3", "4", "--backbone", "wrn-10-1", "--epochs", "1", "--min-steps", "0",
             "--batch-size", "16", "--num-workers", "1", "--local", "--num-cpus", "2", "--storage-path", storage,
             "--experiment-name", "s3sweep", "--out", str(out), "--no-task-search"]  # grid x k only: 2 configs a class
    first = _run([sys.executable, str(SCRIPT_DIR / "s3_sweep_run.py"), "crash", "1", "--", *sweep], env, timeout=900)
    assert json.loads(first.stdout.strip().splitlines()[-1])["exit"] == 6, first.stdout[-3000:]  # EXIT_INCOMPLETE
    # what finished is published, its report marked incomplete, and each unfinished class trial named
    assert "class 0 / ours: TrialDrill" in first.stderr and "class 1 / ours: TrialDrill" in first.stderr, first.stderr[-3000:]
    partial = moto_s3.client().get_object(Bucket=moto_s3.bucket, Key=f"{prefix}/s3sweep-results/report.md")
    assert partial["Body"].read().decode().startswith("> **INCOMPLETE SWEEP**")
    assert len(pd.read_parquet(out / "results.parquet")) == 2  # each class trial's first config
    interrupted = moto_s3.keys(f"{prefix}/s3sweep/")
    print(f"\nS3 after the interrupted sweep ({len(interrupted)} objects):\n  " + "\n  ".join(interrupted))
    assert sum(k.endswith("/rows.json") for k in interrupted) >= 2, interrupted  # each class trial's first config

    resumed = _run(SWEEP_CMD + sweep + ["--resume"], env, timeout=900)
    assert f"copied to {storage}/s3sweep-results" in resumed.stdout, resumed.stdout[-3000:]
    rows = pd.read_parquet(out / "results.parquet")
    cols = ["normal_class", "k", "trial_id", "trial_start", "fit_index", "selected", "val_auroc"]
    print("rows after --resume:\n" + rows[cols].sort_values(["normal_class", "k"]).to_string(index=False))
    assert len(rows) == 4 and not rows.duplicated(["normal_class", "k"]).any(), rows[cols]
    for _, trial in rows.groupby("trial_id"):  # first config from the first start, the second after the restore
        trial = trial.sort_values("fit_index")
        assert list(trial["k"]) == [3, 4] and list(trial["trial_start"]) == [0, 1] and list(trial["fit_index"]) == [0, 1], trial[cols]
    assert rows.groupby("normal_class")["selected"].sum().tolist() == [1, 1]

    scored = _run([sys.executable, str(SCRIPT_DIR / "s3_sweep_run.py"), "score", storage], env, timeout=600)
    score = json.loads(scored.stdout.strip().splitlines()[-1])
    keys = moto_s3.keys(prefix + "/")
    print(f"S3 listing of {storage}/ ({len(keys)} objects):\n  " + "\n  ".join(keys) + f"\nRay Data scoring: {score}")
    results = f"{prefix}/s3sweep-results/"
    assert {results + "results.parquet", results + "report.md"} <= set(keys), keys
    assert not any(k.endswith(".lock") for k in keys), keys  # the results' writers' lock stays on the driver
    # the 2 selected configs' per-image scores (pyarrow also leaves "dir/" marker objects: count the files)
    assert sum(k.startswith(results + "scores/") and k.endswith(".parquet") for k in keys) == 2, keys
    assert any(k.startswith(f"{prefix}/s3sweep/") and k.endswith("tuner.pkl") for k in keys), keys
    assert score["detector"] == f"{storage}/detectors/c0.pt" and f"{prefix}/detectors/c0.pt" in keys
    assert any(k.startswith(f"{prefix}/scores/c0/") and k.endswith(".parquet") for k in keys), keys
    assert score["rows"] == score["written_rows"] == 40
    assert score["max_abs_diff"] < 1e-4 and score["written_max_abs_diff"] < 1e-4, score
    # nothing that belongs in the storage is on this machine: no OUTDIR/ray default, no ~/ray_results
    assert not (out / "ray").exists() and not (root / "home" / "ray_results").exists()
    assert _local_files(root) == [], _local_files(root)


# ---------------------------------------------------------------- autoscaling on the fake multi-node provider

def _autoscaling_head(root, moto_s3, *, idle_timeout_minutes=0.5):
    raw = ch.load_cluster_yaml()
    ch.generate_token(root / "home")
    gcs_port = ch.free_port()
    # head: no GPU, as in cluster.yaml; workers: cluster.yaml's gpu_worker type (min 0), 1 fake GPU each
    boot = ch.fake_bootstrap_config(raw, gcs_port=gcs_port, head_resources={"CPU": 2},
                                    worker_resources={"CPU": 1, "GPU": 1},
                                    idle_timeout_minutes=idle_timeout_minutes, max_workers=2)
    env = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", **moto_s3.env}
    head = ch.start_head(raw, root, extra_env=env, bootstrap=boot, gcs_port=gcs_port)
    return raw, head


def _monitor_events(head) -> list[str]:
    logs = sorted(head.temp_dir.glob("session_*/logs/monitor.log"))
    lines = logs[-1].read_text(errors="replace").splitlines() if logs else []
    return [ln for ln in lines if "Adding" in ln or "Removing" in ln or "Launching" in ln or "Terminating" in ln]


def _wait_for(pred, timeout, every=2.0):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


# ---------------------------------------------------------------- the CUB-200 job

def make_cub_layout(root, n_classes=200, n_train=4, n_test=2, side=12, seed=0):
    """CUB_200_2011's official layout (mtssad/data/cub.py), tiny JPEGs: ROOT/CUB_200_2011/..."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    d = root / "CUB_200_2011"
    images, labels, split, boxes, classes = [], [], [], [], []
    img_id = 0
    for c in range(1, n_classes + 1):
        cname = f"{c:03d}.Bird_{c}"
        classes.append(f"{c} {cname}")
        (d / "images" / cname).mkdir(parents=True)
        base = rng.integers(0, 256, size=3)
        for j in range(n_train + n_test):
            img_id += 1
            rel = f"{cname}/Bird_{c}_{j:04d}_{img_id}.jpg"
            px = np.clip(base + rng.integers(-30, 30, size=(side, side, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(d / "images" / rel, quality=90)
            images.append(f"{img_id} {rel}")
            labels.append(f"{img_id} {c}")
            split.append(f"{img_id} {1 if j < n_train else 0}")
            boxes.append(f"{img_id} 0.0 0.0 {side}.0 {side}.0")
    for name, lines in (("images.txt", images), ("image_class_labels.txt", labels), ("train_test_split.txt", split),
                        ("bounding_boxes.txt", boxes), ("classes.txt", classes)):
        (d / name).write_text("\n".join(lines) + "\n")
    return root


def test_generated_cub_layout_loads_with_the_real_loader(tmp_path):
    from mtssad.data import load_dataset

    make_cub_layout(tmp_path, n_classes=3, n_train=2, n_test=1, side=8)
    ds = load_dataset("cub200", root=str(tmp_path), side=8)
    assert len(ds.class_names) == 3 and ds.train_images.shape[0] == 6 and ds.test_images.shape[0] == 3


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(3600)
def test_cub200_sweep_job_on_the_simulated_cluster(root, moto_s3):
    """`ray job submit` of ray_jobs/cub200_sweep.py as docs/aws.md shows it, on the autoscaling cluster,
    200 generated classes: one selected row per class, the results in the (S3) storage. The autoscaler adds GPU
    nodes for the class trials' GPU demand (the head has none), every trial runs on them, and once idle they are
    removed while the head stays."""
    import pandas as pd
    import yaml

    n_classes = int(os.environ.get("MTSSAD_CUB_TEST_CLASSES", "200"))  # fewer for a quick look; 200 is the claim
    # 4 training images and 1 test image a class: every class trial scores the whole test split, so this halves
    # that work (200 images x 11 passes instead of 400)
    data = make_cub_layout(root / "data", n_classes=n_classes, n_test=1)
    raw, head = _autoscaling_head(root, moto_s3, idle_timeout_minutes=0.5)
    out_dir = root / "results" / "cub200"
    storage = f"s3://{moto_s3.bucket}/mtssad/runs"
    try:
        # docs/aws.md's recipe, but the code comes from PYTHONPATH instead of --working-dir: the fake provider's
        # nodes share one session dir, and a node's runtime-env agent deletes the shared working_dir copy
        # (the driver's cwd) when its trials end, which real nodes (own disks) never do
        env_vars = yaml.safe_load((ch.ROOT / "ray_jobs" / "runtime_env.yaml").read_text())["env_vars"]
        cmd = ["ray", "job", "submit", "--address", head.dashboard_url,
               "--runtime-env-json", json.dumps({"env_vars": env_vars}), "--",
               sys.executable, str(ch.ROOT / "ray_jobs" / "cub200_sweep.py"), "--data-root", str(data), "--storage-path", storage,
               "--out", str(out_dir), "--use-gpu", "--gpus-per-trial", "0.25", "--cpus-per-trial", "0.25", "--backbone", "wrn-10-1", "--side", "16",
               "--epochs", "1", "--min-steps", "1", "--batch-size", "8", "--grid-search", "2x2", "--k-search", "3",
               "--device", "cpu", "--allow-cpu-fallback", "--quiet", "--no-task-search"]  # one config a class
        head_id = ch.list_nodes(head)[0]["node_id"]
        job = _run(cmd, head.env | {"RAY_AUTH_MODE": "token"}, timeout=3300)
        print(job.stdout[-3000:])
        gpu_nodes = [n["node_id"] for n in ch.list_nodes(head) if n["resources"].get("GPU", 0) >= 1]
        print("GPU nodes the autoscaler added for the class trials:", gpu_nodes)
        assert gpu_nodes  # the head has none: the class trials' GPU requests started them

        def removed():
            now = {n["node_id"]: n["state"] for n in ch.list_nodes(head)}
            return all(now.get(n) in (None, "DEAD") for n in gpu_nodes) and now

        final = _wait_for(removed, timeout=180)  # idle_timeout_minutes 0.5, autoscaler update every 1 s
        print("after the idle timeout:", final, "\nautoscaler events:\n  " + "\n  ".join(_monitor_events(head)))
        assert final, f"idle GPU nodes were not removed: {ch.list_nodes(head)}"
        assert final[head_id] == "ALIVE"
    finally:
        head.stop()
    rows = pd.read_parquet(out_dir / "results.parquet")
    selected = rows[rows["selected"]]
    by_node = rows["node_id"].value_counts().to_dict()
    print(f"class-trial rows per node (head {head_id}): {by_node}")
    assert head_id not in by_node and set(by_node) <= set(gpu_nodes), (by_node, gpu_nodes)  # all on the GPU nodes
    assert (rows["trial_start"] == 0).all() and (rows["fit_index"] == 0).all()  # 1 config per class, fitted once
    assert selected["normal_class"].nunique() == n_classes and len(selected) == n_classes, selected["normal_class"].value_counts()
    keys = moto_s3.keys("mtssad/runs/")
    print(f"S3 listing of s3://{moto_s3.bucket}/mtssad/runs/ ({len(keys)} objects), results:\n  "
          + "\n  ".join(k for k in keys if "-results/" in k))
    # issue 13: the job's results reach the storage path (STORAGE/<experiment>-results)
    assert "mtssad/runs/cub200-results/results.parquet" in keys, keys
