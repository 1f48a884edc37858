"""Ray Tune sweeps: trial specs, resources on small clusters, validation selection, a real sweep, resume."""

import json
import math
import time

import numpy as np
import pytest

from mtssad.distributed.tune import plan_resources, select_by_validation, sweep_trials
from ray_fixtures import TINY_RAY, ray_local  # noqa: F401

PARAMS = {k: v for k, v in TINY_RAY.items() if k not in ("grid", "k")} | {"epochs": 1, "min_steps": 0}


def test_sweep_trials_skip_invalid_grid_k_and_give_non_jigsaw_methods_one_trial():
    specs, skipped = sweep_trials([0, 1], ["ours", "geometric"], ["2x2", "3x3", "9x9"], [3, 30],
                                  image_side=(16, 16), margin=1)
    ours = [s for s in specs if s["method"] == "ours"]
    assert {(s["grid"], s["k"]) for s in ours} == {("2x2", 3), ("3x3", 3), ("3x3", 30)}  # 30 >= 4! on 2x2
    assert len(ours) == 2 * 3
    assert [s for s in specs if s["method"] == "geometric"] == [
        {"normal_class": c, "method": "geometric", "grid": None, "k": None} for c in (0, 1)]
    reasons = {(g, k): why for _, g, k, why in skipped}
    assert "(2*2)! = 24" in reasons[("2x2", 30)] and "too small" in reasons[("9x9", 3)]


def test_select_by_validation_marks_the_best_config_per_class_and_method():
    rows = [dict(dataset="d", normal_class=c, method="ours", grid=g, val_auroc=v)
            for c, g, v in [("a", "2x2", 0.7), ("a", "3x3", 0.9), ("b", "2x2", 0.6), ("b", "3x3", float("nan"))]]
    out = select_by_validation(rows)
    assert [r["selected"] for r in out] == [False, True, True, False]


def test_plan_resources_fit_drivers_and_workers_on_two_cpus():
    p = plan_resources(num_workers=2, use_gpu=False, cpus_per_trial=None, gpus_per_trial=None, driver_cpus=1.0,
                       max_concurrent_trials=None, cluster={"CPU": 2.0})
    assert p["resources_per_worker"] == {"CPU": 0.5} and p["max_concurrent_trials"] == 1  # 1 + 2 x 0.5 = 2
    g = plan_resources(num_workers=2, use_gpu=True, cpus_per_trial=4, gpus_per_trial=1, driver_cpus=1.0,
                       max_concurrent_trials=None, cluster={"CPU": 64.0, "GPU": 4.0})
    assert g["resources_per_worker"] == {"CPU": 2.0, "GPU": 0.5} and g["max_concurrent_trials"] == 4
    a = plan_resources(num_workers=1, use_gpu=True, cpus_per_trial=None, gpus_per_trial=None, driver_cpus=1.0,
                       max_concurrent_trials=None, cluster={"CPU": 8.0})  # autoscaling from 0 GPUs
    assert a["max_concurrent_trials"] == 1 and "no GPU" in a["note"]


@pytest.fixture(scope="module")
def digits16():
    from mtssad.data import load_dataset

    return load_dataset("digits", side=16, max_train=300, max_test=120)


def _check_rows(rows, ds, classes, n_configs):
    assert len(rows) == len(classes) * n_configs
    for c in classes:
        mine = [r for r in rows if r["normal_class"] == ds.class_names[c]]
        assert sum(r["selected"] for r in mine) == 1
        best = max(mine, key=lambda r: r["val_auroc"])
        assert best["selected"] and best["val_auroc"] == max(r["val_auroc"] for r in mine)
    for r in rows:
        assert r["dataset"] == "digits" and r["method"] == "ours" and r["grid"] == "2x2" and r["split"] == "test"
        for m in ("auroc", "aupr", "eer", "apcer_at_5bpcer", "val_auroc", "auroc_head_jigsaw", "auroc_head_rotation"):
            assert 0 <= r[m] <= 1, (m, r[m])
        assert json.loads(r["config"])["k"] == r["k"] and r["n_test"] == len(ds.test_images)
        assert r["n_train"] < 30 and r["train_seconds"] > 0  # the normal class's training images minus validation
        data = json.loads(r["data"])  # the data selection is part of the row key
        assert data["max_train"] == 300 and data["side"] == 16 and data["val_fraction"] == 0.2


@pytest.mark.ray
@pytest.mark.timeout(420)
def test_sweep_two_classes_two_configs_selects_by_validation(ray_local, digits16, tmp_path, capsys, caplog):
    from mtssad.distributed import run_sweep
    from mtssad.results import ResultsStore

    caplog.set_level("INFO", logger="mtssad")
    t0 = time.perf_counter()
    rows = run_sweep(digits16, classes=[0, 1], methods=["ours"], grids=["2x2"], ks=[2, 3, 30], params=PARAMS,
                     num_workers=2, storage_path=str(tmp_path / "ray"), name="sweep", controller_failure_limit=0,
                     out=str(tmp_path / "out"))
    wall = time.perf_counter() - t0
    printed = caplog.text  # progress and skip messages go through logging (mtssad.distributed.tune)
    with capsys.disabled():
        print(f"\nsweep of 4 trials (2 DDP workers x 0.5 CPU each): {wall:.0f}s, "
              f"{wall / 4:.0f}s per trial; train_seconds {[round(r['train_seconds']) for r in rows]}")
    _check_rows(rows, digits16, [0, 1], 2)
    assert "skipping ours grid 2x2 k 30" in printed and "trial 4/4 done" in printed
    stored = ResultsStore(tmp_path / "out").load()
    assert len(stored) == 4 and stored["selected"].sum() == 2
    assert (tmp_path / "ray" / "sweep-train").is_dir()  # inner Train runs: train-{trial_id}
    assert len(list((tmp_path / "ray" / "sweep-train").iterdir())) == 4


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_resumed_sweep_reruns_only_unfinished_trials(ray_local, digits16, tmp_path):
    """Class 1 is broken in the first run (1 training image: its trials error); the resumed run gets the full
    data set and reruns only those trials. Class 0's rows come back unchanged (same trial ids and timings)."""
    import dataclasses

    from mtssad.distributed import run_sweep
    from mtssad.distributed.tune import SweepIncomplete

    keep = (digits16.train_labels != 1) | (np.cumsum(digits16.train_labels == 1) <= 1)
    broken = dataclasses.replace(digits16, train_images=digits16.train_images[keep],
                                 train_labels=digits16.train_labels[keep])
    kw = dict(classes=[0, 1], methods=["ours"], grids=["2x2"], ks=[2, 3], params=PARAMS, num_workers=1,
              storage_path=str(tmp_path / "ray"), name="sweep", controller_failure_limit=0, trial_max_failures=0,
              driver_resources={"TRAIN_DRIVER": 1})  # restored trials ignore max_concurrent_trials: cap drivers
    with pytest.raises(SweepIncomplete, match="2 of 4 trials"):
        run_sweep(broken, **kw)
    with pytest.raises(ValueError, match="resume=True"):
        run_sweep(digits16, **kw)
    t0 = time.perf_counter()
    rows = run_sweep(digits16, resume=True, **kw)
    print(f"resume of 2 unfinished trials: {time.perf_counter() - t0:.0f}s")
    _check_rows(rows, digits16, [0, 1], 2)
    runs = sorted(p.name for p in (tmp_path / "ray" / "sweep-train").iterdir())
    assert len(runs) == 4  # class 0's 2 runs from the first sweep + class 1's 2 from the resume, none twice
    first_ids = {r["trial_id"] for r in rows if r["normal_class"] == "0"}
    assert {f"train-{t}" for t in first_ids} <= set(runs)
    assert not math.isnan(sum(r["val_auroc"] for r in rows))
