"""The ray_jobs/ scripts: they parse without Ray, and one_vs_all.py runs as a real `ray job submit`."""

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from ray_fixtures import no_ray_in_this_process  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
JOBS = sorted((REPO / "ray_jobs").glob("*.py"))


def test_importing_mtssad_and_its_distributed_package_imports_no_ray():
    code = "import sys, mtssad, mtssad.distributed, mtssad.distributed.cli; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("job", JOBS, ids=[p.name for p in JOBS])
def test_job_scripts_show_help(job):
    out = subprocess.run([sys.executable, str(job), "--help"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0 and "--storage-path" in out.stdout and "--local" in out.stdout


# Run in a child process: it needs its own Ray WITH a dashboard (the job server), and a process holds one Ray.
SUBMIT = textwrap.dedent('''
    import json, sys, time
    import ray
    from ray.job_submission import JobSubmissionClient, JobStatus
    ctx = ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1")
    try:
        url = "http://" + ctx.dashboard_url
        client = JobSubmissionClient(url)
        entry = " ".join([sys.executable, "ray_jobs/one_vs_all.py", *sys.argv[2:]])
        for attempt in range(5):  # the head's job agent can lag its dashboard: "No available agent ..." (HTTP 500)
            try:
                job = client.submit_job(entrypoint=entry, runtime_env={"working_dir": sys.argv[1],
                                        "excludes": [".git", "runs", "__pycache__", "*.egg-info"]})
                break
            except RuntimeError as e:
                if "No available agent" not in str(e) or attempt == 4:
                    raise
                time.sleep(2)
        t0 = time.time()
        while client.get_job_status(job) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
            if time.time() - t0 > 400:
                client.stop_job(job)
                break
            time.sleep(2)
        print(json.dumps({"status": str(client.get_job_status(job)), "seconds": time.time() - t0,
                          "logs": client.get_job_logs(job)[-4000:]}))
    finally:
        ray.shutdown()
''')


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(560)
def test_one_vs_all_runs_as_a_submitted_ray_job(tmp_path, no_ray_in_this_process):
    """`ray job submit` equivalent (JobSubmissionClient) against a local head started by ray.init with a dashboard.
    Token auth (Ray 2.60 default): the client runs in the process that started the head, so it shares its token;
    a separate `ray job submit` CLI needs RAY_AUTH_MODE=token and the token in ~/.ray/auth_token."""
    args = ["--dataset", "digits", "--side", "16", "--classes", "0", "--max-train", "200", "--max-test", "60",
            "--backbone", "wrn-10-1", "--epochs", "1", "--batch-size", "8", "--grid", "2", "2", "--margin", "1",
            "--quiet", "--out", str(tmp_path / "out"), "--storage-path", str(tmp_path / "ray")]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", SUBMIT, str(REPO), *args], capture_output=True, text=True,
                          timeout=540, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"job submit round trip: {time.perf_counter() - t0:.0f}s (job {report['seconds']:.0f}s)")
    assert report["status"] == "SUCCEEDED", report["logs"]
    # --quiet keeps the job's log to warnings and its last line: where the results were published
    assert f"copied to {tmp_path / 'ray' / 'one_vs_all-results'}" in report["logs"], report["logs"]
    assert (tmp_path / "ray" / "one_vs_all-results" / "results.parquet").is_file()
    from mtssad.results import ResultsStore

    rows = ResultsStore(tmp_path / "out").load()
    # the 2x2 config and, with the default task search, the geometric heads alone: one of them chosen
    assert len(rows) == 2 and rows["selected"].sum() == 1 and rows["normal_class"].tolist() == ["0", "0"]
