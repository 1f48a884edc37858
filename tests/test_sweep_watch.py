"""What a waiting user sees during a sweep (issue 20 item 6, issue 21): the steps of the running configs within
the first minute, a once-a-minute line while trials wait for resources nobody offers, a stop with exit 6 after
the stall timeout, an interrupted sweep naming the trials that never started, and a GPU that cannot be used."""

from __future__ import annotations

import inspect
import logging
import re
import signal
import time
from types import SimpleNamespace

import pytest

from ray_fixtures import TINY_RAY, ray_local  # noqa: F401

PARAMS = dict(backbone="wrn-10-1", epochs=1, min_steps=0, batch_size=16, margin=1)


def test_running_line_shows_each_running_configs_steps_and_drops_stale_ones():
    from mtssad.distributed.progress import running_line

    snap = {"now": 700.0, "entries": {
        "a": {"what": "class 3 / ours 2x2 k=3", "config_i": 1, "configs": 2, "steps_done": 120, "steps_planned": 300,
              "t": 690.0},
        "b": {"what": "class 4 / ours 2x2 k=3", "config_i": 2, "configs": 2, "steps_done": 0, "steps_planned": 0,
              "t": 699.0},
        "c": {"what": "class 5 / ours 2x2 k=3", "config_i": 2, "configs": 2, "steps_done": 300, "steps_planned": 300,
              "t": 10.0}}}
    line = running_line(snap, elapsed=45.0)
    assert line == ("[running] class 3 / ours 2x2 k=3 (config 1/2): 120/300 steps; "
                    "class 4 / ours 2x2 k=3 (config 2/2): starting | elapsed 0:45")
    assert running_line({"now": 5000.0, "entries": snap["entries"]}, elapsed=1.0) is None  # all stale


def test_waiting_line_says_what_is_asked_offered_launching_and_the_autoscalers_error():
    from mtssad.distributed.watch import waiting_line

    line = waiting_line(3, [{"CPU": 1.0, "GPU": 1.0}] * 3, {"CPU": 8.0, "TRAIN_DRIVER": 16.0, "node:1.2.3.4": 1.0},
                        {"launching": {"gpu_worker": 2}, "pending_nodes": 0, "failed_nodes": ["gpu_worker"],
                         "error": "VcpuLimitExceeded: You have requested more vCPU capacity than your current "
                                  "vCPU limit of 0"},
                        waited=125.0, timeout=1800.0)
    assert '3 class trial(s) ask for {"CPU": 1.0, "GPU": 1.0}' in line and "free now: CPU 8, TRAIN_DRIVER 16" in line
    assert "launching 2 x gpu_worker" in line and "failed launches: gpu_worker" in line
    assert "VcpuLimitExceeded" in line and "stops after 30:00 of this (--stall-timeout)" in line and "node:" not in line
    assert "no autoscaler status" in waiting_line(1, [{"GPU": 1.0}], {"CPU": 2.0}, {}, 60.0, 600.0)


def test_an_interrupted_sweep_names_the_trials_that_never_started(tmp_path):
    from mtssad.distributed.tune import SweepIncomplete, collect_rows

    ds = SimpleNamespace(class_names=["zero", "one", "two"])
    tasks = [{"normal_class": c, "method": m, "configs": [{"grid": "2x2", "k": 3}] * 2}
             for c in (0, 1, 2) for m in ("ours",)]
    started = [SimpleNamespace(config={"task": tasks[0]}, error=RuntimeError("boom\nnode died"), checkpoint=None)]
    with pytest.raises(SweepIncomplete) as e:
        collect_rows(started, tasks, ds, n_specs=6, out=str(tmp_path / "out"))
    msg = str(e.value)
    assert "6 of 6 configs did not finish" in msg
    assert "class zero / ours: RuntimeError: node died (0/2 configs done)" in msg
    assert "class one / ours: never started (0/2 configs done)" in msg and "class two / ours: never started" in msg
    assert "None" not in msg and e.value.rows == []


def test_a_trial_given_a_gpu_it_cannot_use_fails_at_once_naming_node_and_fix(monkeypatch):
    import ray
    import torch

    from mtssad.distributed import resources

    ctx = SimpleNamespace(get_assigned_resources=lambda: {"CPU": 2.0, "GPU": 1.0}, get_node_id=lambda: "abc123")
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [0])
    monkeypatch.setattr(ray, "get_runtime_context", lambda: ctx)
    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "10.0.0.7")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(resources.GPUUnusable) as e:
        resources.trial_device()
    msg = str(e.value)
    assert "GPU [0] on node abc123 (10.0.0.7)" in msg and "\n" not in msg
    assert "NVIDIA driver" in msg and "docker info" in msg and "--gpus all" in msg and "--allow-cpu-fallback" in msg
    assert resources.trial_device(allow_cpu_fallback=True) == ("cpu", 2)  # asked for: the CPU, with a warning


def test_recipes_that_would_never_schedule_or_starve_are_refused_or_avoided():
    import numpy as np

    from mtssad.distributed.resources import class_trial_resources, ddp_trial_resources
    from mtssad.distributed.tune import sweep_workers

    with pytest.raises(ValueError, match="--driver-resource TRAIN_DRIVER with in-process GPU class trials"):
        class_trial_resources(num_workers=1, use_gpu=True, cpus_per_trial=1, gpus_per_trial=1, driver_cpus=1.0,
                              driver_resources={"TRAIN_DRIVER": 1}, max_concurrent_trials=None, cluster={"CPU": 8.0})
    ok = class_trial_resources(num_workers=1, use_gpu=False, cpus_per_trial=1, gpus_per_trial=None, driver_cpus=1.0,
                               driver_resources={"TRAIN_DRIVER": 1}, max_concurrent_trials=None, cluster={"CPU": 8.0})
    assert ok["trial_resources"] == {"CPU": 1.0, "TRAIN_DRIVER": 1}  # CPU trials on the head: schedulable
    with pytest.raises(ValueError, match="--max-concurrent-trials"):  # DDP on a 0-GPU head: would run 1 at a time
        ddp_trial_resources(num_workers=2, use_gpu=True, cpus_per_trial=None, gpus_per_trial=None, driver_cpus=1.0,
                            max_concurrent_trials=None, cluster={"CPU": 8.0})
    assert ddp_trial_resources(num_workers=2, use_gpu=True, cpus_per_trial=None, gpus_per_trial=None, driver_cpus=1.0,
                               max_concurrent_trials=8, cluster={"CPU": 8.0})["max_concurrent_trials"] == 8
    cifar = np.repeat(np.arange(10), 5000)  # the one-vs-all recipe: 4,000 fit images a class
    assert sweep_workers(None, cifar, [3], 0.2) == 2  # CPU cluster: DDP from DDP_MIN_FIT_IMAGES, as before
    assert sweep_workers(None, cifar, [3], 0.2, use_gpu=True) == 1  # GPUs: a class trial per GPU, all 10 at once


@pytest.mark.ray
def test_the_board_shows_running_steps_on_the_driver_within_seconds(ray_local, caplog):  # noqa: F811
    """The sweep side of live progress: what a trial's fit pushes reaches the driver's console line."""
    from mtssad.distributed.progress import fit_progress_kwargs, start_board, trial_finished
    from mtssad.distributed.watch import SweepWatch

    class Fits:
        def fit(self, X, *, X_val=None, y_val=None, progress_callback=None):
            return self

    class OldFits:
        def fit(self, X, *, X_val=None, y_val=None):
            return self

    caplog.set_level(logging.INFO, logger="mtssad")
    board = start_board("mtssad-progress-test-board")
    try:
        assert fit_progress_kwargs(Fits(), None, "t1", "x", 1, 1) == {}  # no board: nothing to push to
        # a fit without the keyword: no callback, but the board knows the config started
        assert fit_progress_kwargs(OldFits(), "mtssad-progress-test-board", "t0", "class 2 / ours", 1, 1) == {}
        kw = fit_progress_kwargs(Fits(), "mtssad-progress-test-board", "t1", "class 3 / ours 2x2 k=3", 1, 2)
        kw["progress_callback"](120, 300)
        with SweepWatch(board="mtssad-progress-test-board", first_line_s=1.0, line_every_s=30.0, tick_s=0.2):
            time.sleep(3.0)
        trial_finished("mtssad-progress-test-board", "t1")  # a finished trial leaves the [running] line
        trial_finished(None, "t0")  # no board: nothing to do, no error
        assert set(ray_local.get(board.snapshot.remote())["entries"]) == {"t0"}
    finally:
        ray_local.kill(board)
    assert ("[running] class 2 / ours (config 1/1): starting; class 3 / ours 2x2 k=3 (config 1/2): 120/300 steps | "
            "elapsed 0:0") in caplog.text


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_a_sweep_waiting_for_a_gpu_nobody_offers_says_so_and_stops(ray_local, tmp_path, caplog):  # noqa: F811
    """Class trials ask for a GPU on a cluster without one and without an autoscaler: the sweep says what is
    missing while it waits, then stops with SweepStalled (exit 6 from the commands)."""
    from mtssad.data import load_dataset
    from mtssad.distributed.tune import SweepStalled, run_sweep
    from mtssad.distributed.sweep_config import SweepConfig

    ds = load_dataset("digits", side=16, max_train=300, max_test=60)
    caplog.set_level(logging.INFO, logger="mtssad")
    t0 = time.monotonic()
    with pytest.raises(SweepStalled) as e:
        run_sweep(ds, SweepConfig(classes=[0], grids=["2x2"], ks=[3], params=PARAMS, use_gpu=True,
                                  storage_path=str(tmp_path / "ray"), name="stall", out=str(tmp_path / "out"),
                                  stall_timeout_s=8.0))
    assert time.monotonic() - t0 < 180
    msg = str(e.value)
    assert "stopped waiting for resources" in msg and '"GPU": 1.0' in msg and "--stall-timeout" in msg
    assert "class 0 / ours" in msg and "--resume" in msg
    assert "waiting for resources" in caplog.text  # said while waiting, before the stop


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_a_sweep_shows_its_running_configs_within_its_first_minute(ray_local, tmp_path, caplog):  # noqa: F811
    """A real sweep: while its config trains, the driver logs it (with its steps once `fit` reports them)."""
    from mtssad.data import load_dataset
    from mtssad.detector import MultiTaskDetector
    from mtssad.distributed.tune import run_sweep
    from mtssad.distributed.sweep_config import SweepConfig

    ds = load_dataset("digits", side=16, max_train=300, max_test=60)
    caplog.set_level(logging.INFO, logger="mtssad")
    rows = run_sweep(ds, SweepConfig(classes=[0], grids=["2x2"], ks=[3], params=dict(PARAMS, epochs=120),
                                     storage_path=str(tmp_path / "ray"), name="live", progress_every_s=2.0))
    # 240 steps, ~10 s on a quiet 2-CPU machine (30 epochs took 5 s there: too short for the 2 s watch ticks)
    assert rows[0]["train_seconds"] > 6, "the config trained too briefly to be seen running"
    lines = [ln for ln in caplog.text.splitlines() if "[running] class 0 / ours 2x2 k=3 (config 1/1): " in ln]
    assert lines, caplog.text[-3000:]
    if "progress_callback" in inspect.signature(MultiTaskDetector.fit).parameters:  # issue 20's detector side
        assert any(re.search(r"\d+/\d+ steps", ln) for ln in lines), lines
