"""Ray Tune sweeps: the search space, class trials, validation selection, resources, a real sweep, resume."""

import json
import logging

import numpy as np
import pandas as pd
import pytest

from mtssad.distributed.resources import class_trial_resources, ddp_trial_resources
from mtssad.distributed.selection import select_by_validation, selection_set
from mtssad.distributed.sweep_config import SweepConfig
from mtssad.distributed.sweep_space import class_trials, sweep_trials
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


def test_class_trials_put_each_class_and_methods_configs_in_one_trial_in_order():
    specs, _ = sweep_trials([3, 1], ["ours", "geometric"], ["3x3", "2x2"], [2, 3], image_side=(32, 32))
    tasks = class_trials(specs)
    assert [(t["normal_class"], t["method"]) for t in tasks] == [(3, "ours"), (3, "geometric"), (1, "ours"),
                                                                 (1, "geometric")]
    assert tasks[0]["configs"] == [{"grid": "3x3", "k": 2}, {"grid": "3x3", "k": 3}, {"grid": "2x2", "k": 2},
                                   {"grid": "2x2", "k": 3}]
    assert tasks[1]["configs"] == [{"grid": None, "k": None}]
    assert sum(len(t["configs"]) for t in tasks) == len(specs)


def test_select_by_validation_marks_the_best_config_per_class_and_method():
    rows = [dict(dataset="d", normal_class=c, method="ours", grid=g, val_auroc=v)
            for c, g, v in [("a", "2x2", 0.7), ("a", "3x3", 0.9), ("b", "2x2", 0.6), ("b", "3x3", float("nan"))]]
    out = select_by_validation(rows)
    assert [r["selected"] for r in out] == [False, True, True, False]
    # the same AUROC summed in another order (0.6848 vs 0.6848000000000001, seen in the glyphs ablation) is a tie
    tie = [dict(dataset="d", normal_class="a", method="ours", k=k, val_auroc=v) for k, v in [(3, 0.6848),
                                                                                        (12, 0.6848000000000001)]]
    assert [r["selected"] for r in select_by_validation(tie)] == [True, False]


def test_selection_set_takes_more_anomalies_from_other_classes_training_images():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)  # 50 training images per class
    images = rng.integers(0, 256, size=(200, 1, 4, 4)).astype(np.uint8)
    images[:, 0, 0, 0] = labels  # each image says its class
    X_val, y_val = images[np.r_[0:6, 60:66]], np.r_[np.ones(6, int), np.zeros(6, int)]  # 6 normals of class 0
    X, y = selection_set(images, labels, 0, X_val, y_val, seed=1, ratio=5, max_anomalies=1000)
    assert X.shape == (36, 1, 4, 4) and y.tolist() == [1] * 6 + [0] * 30
    assert (X[:6] == X_val[:6]).all()  # the held-out normals themselves
    cls = X[6:, 0, 0, 0]
    assert set(cls) == {1, 2, 3} and np.bincount(cls)[1:].tolist() == [10, 10, 10]  # stratified, never class 0
    assert all(any((a == b).all() for b in images) for a in X[6:])  # training images only
    X2, y2 = selection_set(images, labels, 0, X_val, y_val, seed=1, ratio=5, max_anomalies=20)
    assert (y2 == 0).sum() == 20  # capped
    X3, _ = selection_set(images, labels, 0, X_val, y_val, seed=1, ratio=5, max_anomalies=1000)
    assert (X3 == X).all()  # seeded
    with pytest.raises(ValueError, match="no held-out normal"):
        selection_set(images, labels, 0, X_val[6:], y_val[6:])


def test_class_trial_resources_ask_tune_for_what_the_trial_uses():
    p = class_trial_resources(num_workers=1, use_gpu=False, cpus_per_trial=None, gpus_per_trial=None, driver_cpus=1.0,
                          driver_resources=None, max_concurrent_trials=None, cluster={"CPU": 2.0})
    assert p["mode"] == "in_process" and p["trial_resources"] == {"CPU": 1.0}
    assert p["max_concurrent_trials"] is None  # Tune places trials by resources: 2 at once on 2 CPUs
    g = class_trial_resources(num_workers=1, use_gpu=True, cpus_per_trial=2, gpus_per_trial=0.25, driver_cpus=1.0,
                          driver_resources=None, max_concurrent_trials=None, cluster={"CPU": 8.0})
    assert g["trial_resources"] == {"CPU": 2.0, "GPU": 0.25}  # demand the autoscaler sees
    assert g["max_concurrent_trials"] is None and "no GPU" in g["note"]
    d = class_trial_resources(num_workers=2, use_gpu=False, cpus_per_trial=None, gpus_per_trial=None, driver_cpus=1.0,
                          driver_resources=None, max_concurrent_trials=None, cluster={"CPU": 2.0})
    assert d["mode"] == "ddp" and d["trial_resources"] == {"CPU": 1.0} and d["max_concurrent_trials"] == 1
    with pytest.raises(ValueError, match="whole number"):
        class_trial_resources(num_workers=1, use_gpu=True, cpus_per_trial=1, gpus_per_trial=1.5, driver_cpus=1.0,
                          driver_resources=None, max_concurrent_trials=None, cluster={"CPU": 8.0, "GPU": 2.0})
    with pytest.raises(ValueError, match="needs use_gpu"):
        class_trial_resources(num_workers=1, use_gpu=False, cpus_per_trial=1, gpus_per_trial=0.5, driver_cpus=1.0,
                          driver_resources=None, max_concurrent_trials=None, cluster={"CPU": 8.0})


def test_ddp_trial_resources_fit_ddp_drivers_and_workers_on_two_cpus():
    p = ddp_trial_resources(num_workers=2, use_gpu=False, cpus_per_trial=None, gpus_per_trial=None, driver_cpus=1.0,
                       max_concurrent_trials=None, cluster={"CPU": 2.0})
    assert p["resources_per_worker"] == {"CPU": 0.5} and p["max_concurrent_trials"] == 1  # 1 + 2 x 0.5 = 2
    g = ddp_trial_resources(num_workers=2, use_gpu=True, cpus_per_trial=4, gpus_per_trial=1, driver_cpus=1.0,
                       max_concurrent_trials=None, cluster={"CPU": 64.0, "GPU": 4.0})
    assert g["resources_per_worker"] == {"CPU": 2.0, "GPU": 0.5} and g["max_concurrent_trials"] == 4
    with pytest.raises(ValueError, match="no GPU right now.*--max-concurrent-trials"):  # autoscaling from 0 GPUs
        ddp_trial_resources(num_workers=1, use_gpu=True, cpus_per_trial=None, gpus_per_trial=None, driver_cpus=1.0,
                       max_concurrent_trials=None, cluster={"CPU": 8.0})


@pytest.fixture(scope="module")
def digits16():
    from mtssad.data import load_dataset

    return load_dataset("digits", side=16, max_train=300, max_test=120)


class _Stop(Exception):
    pass


def test_class_trial_resumed_from_its_checkpoint_retrains_no_finished_config(digits16, tmp_path, monkeypatch):
    """The trial body without Ray: 3 configs, interrupted after the 2nd report, restored from the saved
    checkpoint files: only the 3rd config is fitted; the test split is scored once, for the best config."""
    from mtssad.detector import MultiTaskDetector
    from mtssad.distributed.sweep_trial import TrialSettings, run_class_configs
    from mtssad.distributed.trial_state import TrialState

    fits = []
    real_fit = MultiTaskDetector.fit
    monkeypatch.setattr(MultiTaskDetector, "fit", lambda self, X, **kw: fits.append(self.config.k) or
                        real_fit(self, X, **kw))
    task = {"normal_class": 2, "method": "ours", "configs": [{"grid": "2x2", "k": k} for k in (2, 3, 4)]}
    s = TrialSettings(SweepConfig(params=PARAMS))
    saved = tmp_path / "ck"

    def report_then_stop(row, state):
        saved.mkdir(exist_ok=True)
        state.save(str(saved))
        if len(state.rows) == 2:
            raise _Stop  # the process dies after its 2nd checkpoint

    with pytest.raises(_Stop):
        run_class_configs(task, digits16, s, TrialState(), device="cpu", trial_id="t0", report=report_then_stop)
    assert fits == [2, 3]
    state = TrialState.load(str(saved))
    assert [r["k"] for r in state.rows] == [2, 3] and state.starts == 1 and state.fits == 2
    assert len(json.dumps(state.rows)) < 20_000  # rows are a few KB
    assert not any(r["test_scored"] for r in state.rows)  # not the last config yet: no test pass
    assert (saved / "best_detector.pt").stat().st_size < 2_000_000  # the best's WRN-10-1 detector file
    reports = []
    state = run_class_configs(task, digits16, s, state, device="cpu", trial_id="t0",
                              report=lambda row, st: reports.append(row))
    assert fits == [2, 3, 4]  # k=2 and k=3 were not fitted again
    assert [r["k"] for r in state.rows] == [2, 3, 4] and [r["k"] for r in reports] == [4]
    assert [r["trial_start"] for r in state.rows] == [0, 0, 1] and [r["fit_index"] for r in state.rows] == [0, 1, 2]
    vals = [r["val_auroc"] for r in state.rows]
    best = max(range(3), key=lambda i: (vals[i], -i))
    assert [r["test_scored"] for r in state.rows] == [i == best for i in range(3)]  # test scored once: the best
    assert state.rows[best]["test_scored_from"] == ("memory" if best == 2 else "checkpoint")
    assert json.loads(state.best_name)[3] == state.rows[best]["config"]
    assert len(state.best_scores) == len(digits16.test_images) and state.best_history
    for r in state.rows:
        assert r["n_val_anomalies"] == 5 * (r["n_val"] - r["n_val_anomalies"])  # the enlarged selection set
        assert r["config_seconds"] >= r["train_seconds"] + r["val_seconds"] > 0


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_sweep_of_class_trials_survives_a_trial_crash_and_writes_evaluates_outputs(ray_local, digits16, tmp_path,
                                                                                  caplog):
    """2 classes x 2 configs, in-process class trials (1 CPU each, 2 at once); each trial crashes after its first
    config (a fault drill) and Tune restarts it from its checkpoint: the first config is not trained again."""
    from mtssad.distributed import run_sweep
    from mtssad.report import render_report
    from mtssad.results import ResultsStore, run_name

    caplog.set_level(logging.INFO, logger="mtssad")
    rows = run_sweep(digits16, SweepConfig(classes=[0, 1], methods=["ours"], grids=["2x2"], ks=[2, 3, 30],
                                           params=PARAMS, storage_path=str(tmp_path / "ray"), name="sweep",
                                           out=str(tmp_path / "out"), crash_after_configs=1, trial_max_failures=1))
    assert len(rows) == 4
    for c in ("0", "1"):
        mine = sorted((r for r in rows if r["normal_class"] == c), key=lambda r: r["fit_index"])
        assert [r["k"] for r in mine] == [2, 3] and [r["fit_index"] for r in mine] == [0, 1]  # 2 fits, 2 configs
        assert [r["trial_start"] for r in mine] == [0, 1]  # k=3 after the restart; k=2 not redone
        assert sum(r["selected"] for r in mine) == 1
        sel = next(r for r in mine if r["selected"])
        assert sel["val_auroc"] == max(r["val_auroc"] for r in mine) and sel["test_scored"]
        assert 0 <= sel["auroc"] <= 1 and sel["n_test"] == len(digits16.test_images) and sel["device"] == "cpu"
    import ray

    assert {r["node_id"] for r in rows} == {ray.get_runtime_context().get_node_id()}  # the one local node
    log = caplog.text
    assert "skipping ours grid 2x2 k 30" in log and "[4/4 configs]" in log and "ETA" in log
    store = ResultsStore(tmp_path / "out")
    stored = store.load()
    assert len(stored) == 4 and stored["selected"].sum() == 2
    for r in (r for r in rows if r["selected"]):  # what `mtssad evaluate` writes, for the selected configs
        scores = store.read_scores(run_name(r))
        assert len(scores) == len(digits16.test_images) and {"score", "is_normal", "score_jigsaw"} <= set(scores)
        assert store.read_json(f"history/{run_name(r)}")
    report = render_report(tmp_path / "out").read_text()
    assert "ROC curves" in report and "Task suitability" in report
    assert len(list((tmp_path / "out" / "plots").glob("roc_*.png"))) == 2
    assert len(list((tmp_path / "out" / "plots").glob("tasks_*.png"))) == 2
    with pytest.raises(ValueError, match=r"would mix two sweeps.*params\.epochs: 1 -> 2"):  # before Tune restores
        run_sweep(digits16, SweepConfig(classes=[0, 1], methods=["ours"], grids=["2x2"], ks=[2, 3, 30],
                                        params=PARAMS | {"epochs": 2}, storage_path=str(tmp_path / "ray"), name="sweep",
                                        resume=True))


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_resumed_sweep_continues_each_class_at_its_next_config(ray_local, digits16, tmp_path, caplog):
    """The first run's trials stop after one config each (no retries): SweepIncomplete. A rerun without
    resume is refused; the resumed sweep trains only the configs not done, in the restored trials."""
    from mtssad.distributed import run_sweep
    from mtssad.distributed.tune import SweepIncomplete

    caplog.set_level(logging.INFO, logger="mtssad")
    kw = dict(classes=[0, 1], methods=["ours"], grids=["2x2"], ks=[2, 3], params=PARAMS,
              storage_path=str(tmp_path / "ray"), name="sweep", trial_max_failures=0)
    with pytest.raises(SweepIncomplete, match="2 of 4 configs") as e:
        run_sweep(digits16, SweepConfig(crash_after_configs=1, out=str(tmp_path / "out"), **kw))
    assert "class 0 / ours: TrialDrill: fault drill" in str(e.value) and "class 1 / ours" in str(e.value)
    partial = pd.read_parquet(tmp_path / "out" / "results.parquet")  # the finished configs, marked incomplete
    # Unselected: test is scored once a class trial has finished choosing, so an unfinished trial's rows carry no
    # test figure and nothing is chosen from them (tune.collect_rows).
    assert len(partial) == 2 and partial["sweep_incomplete"].all() and partial["selected"].sum() == 0
    assert sorted(partial["k"]) == [2, 2] and len(e.value.rows) == 2
    with pytest.raises(ValueError, match="resume=True"):
        run_sweep(digits16, SweepConfig(**kw))
    caplog.clear()
    rows = run_sweep(digits16, SweepConfig(resume=True, out=str(tmp_path / "out"), **kw))
    assert "resumed: 2 of 4 configs were done before" in caplog.text and "[4/4 configs]" in caplog.text
    assert len(rows) == 4
    final = pd.read_parquet(tmp_path / "out" / "results.parquet")  # the partial rows replaced, one choice a class
    assert len(final) == 4 and not final["sweep_incomplete"].any()
    assert final.groupby("normal_class")["selected"].sum().tolist() == [1, 1]
    assert {(r["normal_class"], r["k"]) for r in rows if r["selected"]} == {
        (c, int(k)) for c, k in final[final["selected"]][["normal_class", "k"]].itertuples(index=False)}
    for c in ("0", "1"):
        mine = sorted((r for r in rows if r["normal_class"] == c), key=lambda r: r["fit_index"])
        assert [(r["k"], r["trial_start"], r["fit_index"]) for r in mine] == [(2, 0, 0), (3, 1, 1)]
        assert len({r["trial_id"] for r in mine}) == 1  # the same (restored) trial


def test_progress_line_says_configs_done_class_elapsed_and_eta():
    from mtssad.distributed.progress import progress_line

    row = dict(normal_class="3", method="ours", grid="2x2", k=3, val_auroc=0.9812, config_seconds=12.4,
               test_scored=True, auroc=0.99)
    line = progress_line(7, 20, row, elapsed=70.0, done_here=7)  # 10 s a config here: 13 left -> 2:10
    assert line.startswith("[7/20 configs] class 3 / ours 2x2 k=3: val AUROC 0.981 (12.4s; test AUROC 0.990)")
    assert line.endswith("elapsed 1:10, ETA 2:10")
    assert "test AUROC" not in progress_line(1, 2, {**row, "test_scored": False}, 5.0, 1)


def test_sweep_cli_defaults_train_with_the_step_budget_and_offer_test_all_configs():
    from mtssad.cli import build_parser
    from mtssad.flags import method_params
    from mtssad.config import DetectorConfig
    from mtssad.data import default_min_steps

    args = build_parser().parse_args(["sweep"])
    for dataset in ("digits", "glyphs"):  # the sweep trains with evaluate's budget: the data set's (digits 50,
        # else 300)
        sweep = method_params(build_parser().parse_args(["sweep", "--dataset", dataset]))["min_steps"]
        evaluate = method_params(build_parser().parse_args(["evaluate", "--dataset", dataset]))["min_steps"]
        assert sweep == evaluate == default_min_steps(dataset)
    assert default_min_steps("glyphs") == DetectorConfig().min_steps == 300 and default_min_steps("digits") == 50
    assert args.test_all_configs is False and args.epochs == 10
    assert build_parser().parse_args(["sweep", "--test-all-configs"]).test_all_configs
    assert args.task_search is True and build_parser().parse_args(["sweep", "--no-task-search"]).task_search is False


def test_score_all_test_gives_every_config_a_test_row(digits16):
    from mtssad.distributed.sweep_trial import TrialSettings, run_class_configs
    from mtssad.distributed.trial_state import TrialState

    task = {"normal_class": 0, "method": "ours", "configs": [{"grid": "2x2", "k": 2}, {"grid": "2x2", "k": 3}]}
    state = run_class_configs(task, digits16, TrialSettings(SweepConfig(params=PARAMS, score_all_test=True)),
                              TrialState(), device="cpu", trial_id="t", report=lambda row, st: None)
    assert [r["test_scored"] for r in state.rows] == [True, True]
    assert all(0 <= r["auroc"] <= 1 and r["n_test"] == len(digits16.test_images) for r in state.rows)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_num_workers_two_trains_each_config_with_ddp_inside_the_class_trial(ray_local, digits16, tmp_path):
    from mtssad.distributed import run_sweep

    rows = run_sweep(digits16, SweepConfig(classes=[0], methods=["ours"], grids=["2x2"], ks=[2, 3], params=PARAMS,
                                           num_workers=2, storage_path=str(tmp_path / "ray"), name="sweep",
                                           controller_failure_limit=0))
    assert len(rows) == 2 and sum(r["selected"] for r in rows) == 1
    runs = sorted(p.name for p in (tmp_path / "ray" / "sweep-train").iterdir())  # one TorchTrainer run per config
    assert len(runs) == 2 and all(r.endswith(("k2", "k3")) for r in runs)
    assert {r["scored_on"] for r in rows} == {"ddp rank 0"}
    sel = next(r for r in rows if r["selected"])  # test once: rank 0's test scores of the best, attached at the end
    assert [r["test_scored"] for r in rows] == [r["selected"] for r in rows]
    assert sel["test_scored_from"] == "ddp rank 0" and 0 <= sel["auroc"] <= 1


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_ddp_class_trial_scores_selection_and_test_on_rank0_not_in_the_trial(ray_local, digits16, tmp_path,
                                                                            monkeypatch):
    """With DDP the trial's process (driver CPUs only) never scores: scoring there raises, yet the
    trial finishes, and rank 0's test scores are the returned detector's own scores."""
    import mtssad.distributed.train as dtrain
    from mtssad.detector import MultiTaskDetector
    from mtssad.distributed.sweep_trial import TrialSettings, run_class_configs
    from mtssad.distributed.trial_state import TrialState
    from mtssad.protocols import one_vs_all_data

    fitted = []
    real_fit_ddp = dtrain.fit_ddp
    monkeypatch.setattr(dtrain, "fit_ddp", lambda *a, **kw: fitted.append(real_fit_ddp(*a, **kw)) or fitted[-1])
    real_score = MultiTaskDetector.score_samples_and_tasks

    def no_scoring_here(self, X):
        raise AssertionError("the class trial scored in its own process")

    monkeypatch.setattr(MultiTaskDetector, "score_samples_and_tasks", no_scoring_here)
    task = {"normal_class": 1, "method": "ours", "configs": [{"grid": "2x2", "k": k} for k in (2, 3)]}
    s = TrialSettings(SweepConfig(params=PARAMS, controller_failure_limit=0, score_all_test=True), mode="ddp",
                      num_workers=2, train_storage=str(tmp_path / "ray"))
    state = run_class_configs(task, digits16, s, TrialState(), device="cpu", trial_id="t0", report=lambda r, st: None)
    assert [r["scored_on"] for r in state.rows] == ["ddp rank 0"] * 2 and all(r["test_scored"] for r in state.rows)
    assert len(fitted) == 2 and all(set(f.scores) == {"selection", "test"} for f in fitted)
    monkeypatch.setattr(MultiTaskDetector, "score_samples_and_tasks", real_score)
    from mtssad.distributed.selection import selection_set
    from mtssad.metrics import auroc

    c = s.config
    d = one_vs_all_data(digits16, 1, seed=c.seed, val_fraction=c.val_fraction)
    _, y_sel = selection_set(digits16.train_images, digits16.train_labels, 1, d.X_val, d.y_val, seed=c.seed,
                             ratio=c.val_anomaly_ratio, max_anomalies=c.val_max_anomalies)
    for f, row in zip(fitted, state.rows):
        local = f.detector.score_samples_and_tasks(d.X_test)[0]
        np.testing.assert_allclose(f.scores["test"], local, rtol=1e-4, atol=1e-5)
        assert row["val_auroc"] == auroc(y_sel, f.scores["selection"])  # each set paired with its own labels
        assert row["auroc"] == auroc(d.is_normal_test, f.scores["test"])
        assert len(f.scores["selection"]) == row["n_val"] and row["score_seconds"] > 0 and row["val_seconds"] > 0


def test_resume_with_other_data_or_settings_is_refused_naming_the_differences(digits16, tmp_path):
    """--resume hands the new command's data/settings to unfinished trials: a changed --max-train or
    --epochs would mix two sweeps' rows silently, so the stored identity must match."""
    from mtssad.data import load_dataset
    from mtssad.distributed.sweep_identity import check_resume_identity, save_identity, sweep_identity
    from mtssad.distributed.sweep_config import SweepConfig

    tasks = [{"normal_class": 0, "method": "ours", "configs": [{"grid": "2x2", "k": 3}]}]
    ident = sweep_identity(digits16, tasks, SweepConfig(params=PARAMS))
    storage = str(tmp_path)
    assert check_resume_identity(storage, "sweep", ident) is False  # nothing stored: an older sweep
    save_identity(storage, "sweep", ident)
    same = sweep_identity(digits16, tasks, SweepConfig(params=PARAMS | {"device": "cuda"}))
    assert check_resume_identity(storage, "sweep", same) is True  # where it runs may change
    other_data = load_dataset("digits", side=16, max_train=200, max_test=120)
    changed = sweep_identity(other_data, tasks, SweepConfig(params=PARAMS | {"epochs": 5}))
    with pytest.raises(ValueError, match=r"would mix two sweeps.*data.max_train: 300 -> 200.*params.epochs: 1 -> 5"):
        check_resume_identity(storage, "sweep", changed)
    reordered = [{"normal_class": 1, "method": "ours", "configs": [{"grid": "3x3", "k": 3}, {"grid": "2x2", "k": 3}]},
                 *tasks]
    save_identity(storage, "two", sweep_identity(digits16, reordered, SweepConfig(params=PARAMS)))
    reordered[0]["configs"].reverse()  # --grid-search 2x2 3x3 instead of 3x3 2x2: the same sweep
    assert check_resume_identity(storage, "two",
                                 sweep_identity(digits16, reordered[::-1], SweepConfig(params=PARAMS)))
    reordered[0]["configs"][1]["k"] = 6  # a different config deep in a list is named, not cut off
    with pytest.raises(ValueError, match=r"tasks\.1\.configs\.1\.k: 3 -> 6"):
        check_resume_identity(storage, "two", sweep_identity(digits16, reordered, SweepConfig(params=PARAMS)))
