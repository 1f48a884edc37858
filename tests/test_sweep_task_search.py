"""The sweep searches the task set (issue 23) and scores the test split once per class trial (issue 20 item 4)."""

import json

import numpy as np
import pytest

from mtssad.distributed.sweep_config import SweepConfig
from mtssad.distributed.selection import mark_jigsaw_kept, select_by_validation, tasks_chosen_on_validation
from mtssad.distributed.sweep_space import class_trials, config_label, sweep_trials
from ray_fixtures import TINY_RAY, ray_local  # noqa: F401

PARAMS = {k: v for k, v in TINY_RAY.items() if k not in ("grid", "k")} | {"epochs": 1, "min_steps": 0}
GEO = ["vertical", "horizontal", "rotation"]


@pytest.fixture(scope="module")
def digits16():
    from mtssad.data import load_dataset

    return load_dataset("digits", side=16, max_train=300, max_test=120)


def test_task_search_adds_the_geometric_heads_alone_to_ours_trials_only():
    specs, _ = sweep_trials([3, 1], ["ours", "geometric", "jigsaw", "ocsvm"], ["2x2"], [2, 3], image_side=(16, 16),
                            margin=1, task_search=True)
    tasks = {(t["normal_class"], t["method"]): t["configs"] for t in class_trials(specs)}
    assert tasks[(3, "ours")] == [{"grid": "2x2", "k": 2}, {"grid": "2x2", "k": 3},
                                  {"grid": None, "k": None, "tasks": GEO}]  # last: ties keep the jigsaw configs
    assert tasks[(1, "ours")][-1] == {"grid": None, "k": None, "tasks": GEO}
    for m in ("geometric", "jigsaw", "ocsvm"):  # fixed heads: nothing to search
        assert all("tasks" not in c for c in tasks[(3, m)])
    assert config_label(tasks[(3, "ours")][-1]) == "no jigsaw (vertical,horizontal,rotation)"
    off, _ = sweep_trials([3], ["ours"], ["2x2"], [2, 3], image_side=(16, 16), margin=1)
    assert [s for s in off if "tasks" in s] == []  # --no-task-search: today's configs, today's identity
    # ours --tasks rotation jigsaw: the alternative is its heads without jigsaw; --tasks geometric: none
    rot, _ = sweep_trials([0], ["ours"], ["2x2"], [3], image_side=(16, 16), margin=1,
                          params={"tasks": ("rotation", "jigsaw")}, task_search=True)
    assert rot[-1]["tasks"] == ["rotation"]
    geo, _ = sweep_trials([0], ["ours"], ["2x2"], [3], image_side=(16, 16), margin=1, params={"tasks": "geometric"},
                          task_search=True)
    assert geo == [{"normal_class": 0, "method": "ours", "grid": None, "k": None}]


def _row(c, grid, heads, val, seed=0):
    return dict(dataset="d", normal_class=c, method="ours", grid=grid, k=3 if grid else None, seed=seed, data="x",
                heads=",".join(heads), task_search=True, val_auroc=val, auroc=0.5, train_seconds=1.0,
                score_seconds=0.5)


def test_selection_keeps_the_geometric_config_when_its_validation_auroc_is_higher_and_says_so():
    rows = [_row("a", "2x2", GEO + ["jigsaw"], 0.80), _row("a", "3x3", GEO + ["jigsaw"], 0.82),
            _row("a", None, GEO, 0.90),
            _row("b", "2x2", GEO + ["jigsaw"], 0.95), _row("b", "3x3", GEO + ["jigsaw"], 0.93),
            _row("b", None, GEO, 0.90),
            _row("c", "2x2", GEO + ["jigsaw"], 0.90), _row("c", None, GEO, 0.90 + 1e-12)]  # a tie keeps jigsaw
    out = mark_jigsaw_kept(select_by_validation(rows))
    sel = {r["normal_class"]: r for r in out if r["selected"]}
    assert sel["a"]["grid"] is None and sel["a"]["jigsaw_kept"] is False
    assert sel["b"]["grid"] == "2x2" and sel["b"]["jigsaw_kept"] is True
    assert sel["c"]["grid"] == "2x2" and sel["c"]["jigsaw_kept"] is True
    assert all("jigsaw_kept" not in r for r in out if not r["selected"])


def test_tasks_chosen_on_validation_from_evaluate_rows_and_from_sweep_rows():
    import pandas as pd

    ev = pd.DataFrame([dict(dataset="d", normal_class=c, method=m, seed=s, data="x", val_auroc=v, auroc=t,
                            train_seconds=2.0, score_seconds=1.0)
                       for c, s, m, v, t in [("a", 0, "ours", 0.9, 0.70), ("a", 0, "geometric", 0.8, 0.99),
                                             ("b", 0, "ours", 0.6, 0.10), ("b", 0, "geometric", 0.7, 0.20),
                                             ("c", 0, "ours", 0.7, 0.3)]])  # c: no geometric row -> skipped
    ch = tasks_chosen_on_validation(ev).set_index("normal_class")
    assert list(ch.index) == ["a", "b"] and set(ch["method"]) == {"ours[tasks]"}
    assert ch.at["a", "chosen"] == "ours" and ch.at["a", "auroc"] == 0.70  # chosen on validation, never on test
    assert ch.at["b", "chosen"] == "geometric" and not ch.at["b", "jigsaw_kept"] and ch.at["b", "auroc"] == 0.20
    assert ch.at["a", "val_auroc_jigsaw_minus_geometric"] == pytest.approx(0.1) and ch.at["a", "train_seconds"] == 4.0
    sw = pd.DataFrame([_row("a", "2x2", GEO + ["jigsaw"], 0.80), _row("a", None, GEO, 0.85)])
    assert tasks_chosen_on_validation(sw).iloc[0]["chosen"] == "geometric"
    with pytest.raises(ValueError, match="no val_auroc"):
        tasks_chosen_on_validation(ev.drop(columns="val_auroc"))


def _trial(task, ds, settings, state, report=lambda row, st: None):
    from mtssad.distributed.sweep_trial import run_class_configs

    return run_class_configs(task, ds, settings, state, device="cpu", trial_id="t0", report=report)


def test_a_task_search_trial_records_the_heads_of_each_config(digits16):
    from mtssad.distributed.sweep_trial import TrialSettings
    from mtssad.distributed.trial_state import TrialState

    task = {"normal_class": 4, "method": "ours", "configs": [{"grid": "2x2", "k": 3},
                                                             {"grid": None, "k": None, "tasks": GEO}]}
    state = _trial(task, digits16, TrialSettings(SweepConfig(params=PARAMS)), TrialState())
    jig, geo = state.rows
    assert jig["heads"] == "vertical,horizontal,rotation,jigsaw" and "task_config" not in jig
    assert geo["heads"] == "vertical,horizontal,rotation" and geo["task_config"] == "vertical,horizontal,rotation"
    assert geo["grid"] is None and geo["k"] is None and json.loads(geo["config"])["tasks"] == GEO
    assert jig["task_search"] and geo["task_search"] and jig["config"] != geo["config"]
    rows = mark_jigsaw_kept(select_by_validation(state.rows))
    sel = next(r for r in rows if r["selected"])
    assert sel["jigsaw_kept"] == (jig["val_auroc"] >= geo["val_auroc"] - 1e-9)
    assert sel["test_scored"] and sum(r["test_scored"] for r in rows) == 1  # test scored once, for the chosen one
    assert "score_jigsaw" in state.best_scores or not sel["jigsaw_kept"]


@pytest.mark.timeout(300)
def test_test_split_is_scored_once_and_a_restarted_trial_scores_the_best_from_its_checkpoint(digits16, tmp_path,
                                                                                            monkeypatch):
    """Two configs, crash after the first, restore from the saved checkpoint. In one of the two orders the best
    config was trained before the crash: its test row must come from the checkpointed weights, with no
    refit, and equal the test row of an uninterrupted --test-all-configs trial."""
    from mtssad.detector import MultiTaskDetector
    from mtssad.distributed.sweep_trial import TrialSettings, TrialDrill
    from mtssad.distributed.trial_state import TrialState

    fits = []
    real_fit = MultiTaskDetector.fit
    monkeypatch.setattr(MultiTaskDetector, "fit", lambda self, X, **kw: fits.append(self.config.tasks) or
                        real_fit(self, X, **kw))
    configs = [{"grid": "2x2", "k": 3}, {"grid": None, "k": None, "tasks": GEO}]
    ref = _trial({"normal_class": 1, "method": "ours", "configs": configs}, digits16,
                 TrialSettings(SweepConfig(params=PARAMS, score_all_test=True)), TrialState())
    assert [r["test_scored_from"] for r in ref.rows] == ["each config"] * 2
    ref_by_heads = {r["heads"]: r for r in ref.rows}
    assert ref_by_heads["vertical,horizontal,rotation"]["val_auroc"] != ref_by_heads[
        "vertical,horizontal,rotation,jigsaw"]["val_auroc"]  # a real choice
    sources = []
    for order in (configs, configs[::-1]):
        task = {"normal_class": 1, "method": "ours", "configs": order}
        saved = tmp_path / f"ck{len(sources)}"
        saved.mkdir()
        fits.clear()
        with pytest.raises(TrialDrill):
            _trial(task, digits16, TrialSettings(SweepConfig(params=PARAMS, crash_after_configs=1)), TrialState(),
                   report=lambda row, st: st.save(str(saved)))
        state = TrialState.load(str(saved))
        assert len(state.rows) == 1 and state.best_detector is not None and state.best_model is None
        reports = []
        state = _trial(task, digits16, TrialSettings(SweepConfig(params=PARAMS, crash_after_configs=1)), state,
                       report=lambda row, st: reports.append(row))
        assert len(fits) == 2 and len(reports) == 1  # each config fitted once over both starts
        assert [r["trial_start"] for r in state.rows] == [0, 1]
        best = [r for r in state.rows if r["test_scored"]]
        assert len(best) == 1  # the test split scored once
        b = best[0]
        want = ref_by_heads[b["heads"]]
        assert b["val_auroc"] == pytest.approx(want["val_auroc"], abs=1e-9)
        assert b["val_auroc"] == max(r["val_auroc"] for r in ref.rows)  # the best on validation
        for key in ("auroc", "aupr", "eer", "n_test", "auroc_head_rotation"):
            assert b[key] == pytest.approx(want[key], abs=1e-6), key
        assert len(state.best_scores) == len(digits16.test_images)
        sources.append(b["test_scored_from"])
    assert sorted(sources) == ["checkpoint", "memory"]


def test_a_trial_restored_with_every_config_done_but_no_test_row_scores_it_without_training(digits16, tmp_path,
                                                                                          monkeypatch):
    from mtssad.detector import MultiTaskDetector
    from mtssad.distributed.sweep_trial import TrialSettings
    from mtssad.distributed.trial_state import TrialState

    task = {"normal_class": 2, "method": "ours", "configs": [{"grid": "2x2", "k": 3}]}
    saved = tmp_path / "ck"
    saved.mkdir()
    states = []

    def save_before_test(row, st):  # the checkpoint as it was before the test pass (a crash in between)
        row_copy = {k: v for k, v in row.items() if k not in ("auroc", "test_scored_from")} | {"test_scored": False}
        TrialState([row_copy], st.starts, st.fits, st.best_name, None, st.best_history,
                   st.best_detector).save(str(saved))
        states.append(row)

    done = _trial(task, digits16, TrialSettings(SweepConfig(params=PARAMS)), TrialState(), report=save_before_test)
    monkeypatch.setattr(MultiTaskDetector, "fit", lambda *a, **kw: pytest.fail("a finished config was retrained"))
    reports = []
    state = _trial(task, digits16, TrialSettings(SweepConfig(params=PARAMS)), TrialState.load(str(saved)),
                   report=lambda row, st: reports.append(row))
    r = state.rows[0]
    assert r["test_scored"] and r["test_scored_from"] == "checkpoint" and len(reports) == 1
    assert r["auroc"] == pytest.approx(done.rows[0]["auroc"], abs=1e-9)
    np.testing.assert_allclose(state.best_scores["score"], done.best_scores["score"], rtol=1e-6)


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_a_task_search_sweep_through_tune_restores_and_reports_the_choice(ray_local, digits16, tmp_path):
    """run_sweep with the task search: each class trial crashes after its first config and Tune restores it;
    the selected row says whether the jigsaw head was kept, only it has a test row, and the report shows it."""
    from mtssad.distributed import run_sweep
    from mtssad.report import render_report
    from mtssad.results import ResultsStore, run_name

    rows = run_sweep(digits16, SweepConfig(classes=[0, 3], methods=["ours"], grids=["2x2"], ks=[3], params=PARAMS,
                                           storage_path=str(tmp_path / "ray"), name="sweep", out=str(tmp_path / "out"),
                                           crash_after_configs=1, trial_max_failures=1, task_search=True))
    assert len(rows) == 4
    for c in ("0", "3"):
        mine = sorted((r for r in rows if r["normal_class"] == c), key=lambda r: r["fit_index"])
        assert [r["heads"] for r in mine] == ["vertical,horizontal,rotation,jigsaw", "vertical,horizontal,rotation"]
        assert [r["trial_start"] for r in mine] == [0, 1]  # the first config was not retrained after the crash
        sel = [r for r in mine if r["selected"]]
        assert len(sel) == 1 and [r["test_scored"] for r in mine] == [r["selected"] for r in mine]
        s_ = sel[0]
        assert s_["jigsaw_kept"] == (s_["grid"] is not None) == (mine[0]["val_auroc"] >= mine[1]["val_auroc"] - 1e-9)
        assert s_["test_scored_from"] == ("memory" if s_["fit_index"] == 1 else "checkpoint")
        assert all(r.get("jigsaw_kept") is None for r in mine if not r["selected"])
    stored = ResultsStore(tmp_path / "out").load()
    assert len(stored) == 4 and set(stored["heads"]) == {"vertical,horizontal,rotation,jigsaw",
                                                         "vertical,horizontal,rotation"}
    for r in (r for r in rows if r["selected"]):
        scores = ResultsStore(tmp_path / "out").read_scores(run_name(r))
        assert len(scores) == len(digits16.test_images)
    text = render_report(tmp_path / "out").read_text()
    assert "Chosen per class on validation data" in text and "selection_" in text
