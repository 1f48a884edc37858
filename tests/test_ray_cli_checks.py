"""Sweep flags and storage URIs as the cluster uses them (issue 21.4, 21.8): no Ray is started here."""

from __future__ import annotations

import pytest

from mtssad.cli import build_parser
from mtssad.errors import UsageError


def _args(*extra):
    return build_parser().parse_args(["sweep", "--out", "/tmp/x", *extra])


def test_use_gpu_is_accepted_when_the_session_will_join_a_ray_start_cluster(monkeypatch):
    """On the head, `ray start` left a cluster and RAY_ADDRESS is unset: the session joins it (connection_plan),
    so --use-gpu must not be judged by this (GPU-less) machine's CUDA."""
    import torch

    from mtssad.distributed import preflight, session

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(session, "_running_cluster_address", lambda: "10.0.0.1:6379")
    preflight._check_ray_session(_args("--use-gpu"), use_gpu=True)  # joins: the cluster's GPU nodes train
    monkeypatch.setattr(session, "_running_cluster_address", lambda: None)
    with pytest.raises(UsageError, match="no CUDA GPU for the local Ray"):
        preflight._check_ray_session(_args("--use-gpu"), use_gpu=True)  # nothing to join: a local Ray without GPUs


def test_retry_and_stall_flags_reach_the_sweep_and_are_checked(monkeypatch):
    from mtssad.distributed.cli import sweep_config_from_args

    a = _args("--max-retries", "5", "--stall-timeout", "2.5", "--allow-cpu-fallback")
    assert (a.max_retries, a.stall_timeout, a.allow_cpu_fallback) == (5, 2.5, True)
    assert (_args().max_retries, _args().stall_timeout, _args().allow_cpu_fallback) == (3, 30.0, False)
    config = sweep_config_from_args(a)
    assert (config.trial_max_failures, config.stall_timeout_s, config.cpu_fallback) == (5, 150.0, True)
    with pytest.raises(UsageError, match="--max-retries must be >= 0; got -1"):
        sweep_config_from_args(_args("--max-retries", "-1"))
    with pytest.raises(UsageError, match="--stall-timeout must be > 0 minutes; got 0.0"):
        sweep_config_from_args(_args("--stall-timeout", "0"))


@pytest.mark.parametrize("job", ["cub200_sweep", "one_vs_all"])
def test_jobs_resume_by_themselves_a_bounded_number_of_times(job):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "ray_jobs" / f"{job}.py"
    spec = importlib.util.spec_from_file_location(job, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.parse_args(["--out", "/tmp/x"]).auto_resume == 2
    assert mod.parse_args(["--out", "/tmp/x", "--auto-resume", "0"]).auto_resume == 0
    with pytest.raises(UsageError, match="--auto-resume must be >= 0; got -1"):
        mod.parse_args(["--out", "/tmp/x", "--auto-resume", "-1"])


def test_auto_resume_resumes_then_publishes_what_finished_marked_incomplete(monkeypatch, tmp_path, capsys):
    """run_sweep_resuming: an incomplete sweep is resumed `resumes` times, then its report is marked and
    published, exit 6; a stall is never resumed."""
    from types import SimpleNamespace

    from mtssad.distributed import cli
    from mtssad.distributed.sweep_config import SweepConfig
    from mtssad.distributed.tune import SweepIncomplete, SweepStalled
    from mtssad.results import ResultsStore

    ResultsStore(tmp_path).append([{"dataset": "digits", "normal_class": "0", "method": "ours", "grid": "2x2", "k": 3,
                                    "seed": 0, "auroc": 0.9, "config": {"k": 3}, "data": "{}", "selected": True,
                                    "sweep_incomplete": True, "val_auroc": 0.9}])
    calls, published = [], []
    monkeypatch.setattr(cli, "publish_results", lambda args, name=None: published.append(args.out))

    def incomplete(args, config):
        calls.append(config.resume)
        raise SweepIncomplete("1 of 2 configs did not finish: class 1 / ours: never started (0/1 configs done)")

    monkeypatch.setattr(cli, "run_sweep_from_args", incomplete)
    args = SimpleNamespace(out=str(tmp_path), resume=False)
    assert cli.run_sweep_resuming(args, SweepConfig(out=str(tmp_path)), resumes=2) == 6
    assert calls == [False, True, True] and published == [str(tmp_path)]
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("> **INCOMPLETE SWEEP**") and "class 1 / ours: never started" in report
    assert "class 1 / ours: never started" in capsys.readouterr().err

    def stalled(args, config):
        calls.append(config.resume)
        raise SweepStalled("stopped waiting for resources (...)")

    calls.clear()
    monkeypatch.setattr(cli, "run_sweep_from_args", stalled)
    assert cli.run_sweep_resuming(SimpleNamespace(out=str(tmp_path)), SweepConfig(out=str(tmp_path)), resumes=2) == 6
    assert calls == [False]  # the missing resources would still be missing


def test_storage_uris_with_a_query_keep_it_at_the_end():
    import inspect
    from types import SimpleNamespace

    from mtssad.distributed import preflight, tune
    from mtssad.distributed.cli import experiment_dir

    args = SimpleNamespace(storage_path="s3://b/runs?region=us-west-2", out="/tmp/x", experiment_name="cub200")
    assert experiment_dir(args) == "s3://b/runs/cub200?region=us-west-2"
    for mod in (tune, preflight):  # every experiment / train path is built with join_uri, none by f-string
        src = inspect.getsource(mod)
        assert 'f"{storage}/' not in src and "join_uri(storage" in src, mod.__name__
