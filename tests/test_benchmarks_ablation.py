"""benchmarks/ablation_seeds.py: the paired per-class table over seeds, partial baselines, score options."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

BENCH = Path(__file__).parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))  # the script imports its neighbours' helpers the way it runs
spec = importlib.util.spec_from_file_location("bench_ablation", BENCH / "ablation_seeds.py")
ablation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablation)


def _rows(method, aurocs, seed, classes="abc"):
    return [{"dataset": "toy", "normal_class": c, "method": method, "seed": seed, "auroc": a, "val_auroc": a,
             "train_seconds": 10.0, "score_seconds": 1.0, "data": "{}"} for c, a in zip(classes, aurocs)]


def test_paired_differences_sign_counts_and_partial_baselines_on_their_own_pairs():
    rows = (_rows("ours", [0.9, 0.8, 0.7], 0) + _rows("ours", [0.9, 0.9, 0.9], 1)
            + _rows("geometric", [0.8, 0.9, 0.6], 0) + _rows("geometric", [0.8, 0.8, 0.8], 1)
            + _rows("mhrot", [0.5], 0, classes="a"))  # a costly baseline run on one (class, seed) pair
    md, summary = ablation.ablation_table(pd.DataFrame(rows), ["ours", "geometric", "mhrot"], dataset="toy")
    assert summary["n_classes"] == 3 and summary["seeds"] == [0, 1]  # mhrot's gap does not shrink the main table
    np.testing.assert_allclose(summary["per_seed"]["ours"], [80.0, 90.0])
    np.testing.assert_allclose(summary["paired"]["geometric"]["per_seed"], [10 / 3, 10.0])
    assert summary["paired"]["geometric"]["wins"] == 5 and summary["paired"]["geometric"]["pairs"] == 6
    assert summary["paired"]["mhrot"] == {"pairs": 1, "ours": 90.0, "method": 50.0, "mean": 40.0, "wins": 1,
                                          "geometric": 80.0}
    assert "| mhrot | 1 (a/s0) |" in md
    assert summary["run_seconds"]["ours/0"] == 33.0


def test_score_options_recombine_the_saved_per_head_scores(tmp_path):
    from mtssad.results import run_name

    row = _rows("ours", [0.0], 0, classes="a")[0] | {"config": json.dumps({"method": "ours"}), "data": None}
    y = np.array([1, 1, 0, 0])
    # head v separates normals perfectly; head j is inverted and its diagnostic says "too easy"
    scores = pd.DataFrame({"is_normal": y.astype(bool), "score": 0.0, "score_v": [3.0, 2.9, 1.0, 1.1],
                           "score_j": [0.1, 0.2, 2.9, 3.0]})
    history = [{"num_classes/v": 3, "num_classes/j": 3, "acc_val_normal/v": 0.9, "acc_val_anomaly/v": 0.4,
                "acc_val_normal/j": 1.0, "acc_val_anomaly/j": 0.99}]
    (tmp_path / "scores").mkdir()
    (tmp_path / "history").mkdir()
    scores.to_parquet(tmp_path / "scores" / f"{run_name(row)}.parquet")
    (tmp_path / "history" / f"{run_name(row)}.json").write_text(json.dumps(history))
    md, summary = ablation.score_option_table(pd.DataFrame([row]), [tmp_path])
    assert summary["mean"]["none/diagnostic"] == 100.0  # only v kept
    assert summary["mean"]["head v"] == 100.0 and summary["mean"]["head j"] == 0.0
    assert summary["verdicts"] == {"v": {"suited": 1}, "j": {"too easy": 1}}
    assert "too easy: 1 (a/s0)" in md


def test_config_chosen_on_validation_never_reads_test_auroc():
    ours = _rows("ours", [0.9, 0.6], 0, classes="ab")
    alt = _rows("ours[k12]", [0.5, 0.8], 0, classes="ab")
    ours[0]["val_auroc"], alt[0]["val_auroc"] = 0.7, 0.8  # class a: the alternative wins on validation (worse on test)
    ours[1]["val_auroc"], alt[1]["val_auroc"] = 0.6848, 0.6848000000000001  # class b: a float-level tie keeps ours
    chosen = ablation.chosen_on_validation(pd.DataFrame(ours + alt), ["ours[k12]"])
    assert list(chosen["chosen"]) == ["ours[k12]", "ours"] and list(chosen["auroc"]) == [0.5, 0.6]
    assert set(chosen["method"]) == {"ours[val]"} and list(chosen["train_seconds"]) == [20.0, 20.0]


def test_tasks_chosen_on_validation_row_from_stored_rows(tmp_path, monkeypatch):
    """--rows: ours[tasks] picks ours or geometric per (class, seed) by val_auroc, never by test; paired
    differences and the jigsaw-kept count follow; nothing is run."""
    def rows(method, val, test, seed):
        return [{"dataset": "toy", "normal_class": c, "method": method, "seed": seed, "auroc": t, "val_auroc": v,
                 "train_seconds": 10.0, "score_seconds": 1.0, "data": "{}", "config": json.dumps({"method": method})}
                for c, v, t in zip("ab", val, test)]
    # class a: ours higher on validation (kept), lower on test; class b: geometric higher on validation
    frame = pd.DataFrame(rows("ours", [0.9, 0.5], [0.6, 0.5], 0) + rows("geometric", [0.8, 0.7], [0.9, 0.8], 0)
                         + rows("ours", [0.9, 0.5], [0.7, 0.5], 1) + rows("geometric", [0.8, 0.7], [0.9, 0.9], 1))
    path = tmp_path / "rows.parquet"
    frame.to_parquet(path)
    monkeypatch.setattr(ablation, "HERE", tmp_path)
    (tmp_path / "results").mkdir()
    args = ablation.parse_args(["--dataset", "toy", "--methods", "ours", "geometric", "--rows", str(path), "--tag", "t"])
    assert ablation.run(args) == 0
    summary = json.loads((tmp_path / "results" / "ablation_toy_t.json").read_text())
    tv = summary["tasks_chosen_on_validation"]
    assert tv["jigsaw_kept"] == 2 and tv["pairs"] == 4 and tv["jigsaw_kept_per_class"] == {"a": 2, "b": 0}
    np.testing.assert_allclose(tv["per_seed"], [(60 + 80) / 2, (70 + 90) / 2])  # test AUROC of the val choice
    np.testing.assert_allclose(tv["minus_ours"]["per_seed"], [15.0, 20.0])
    np.testing.assert_allclose(tv["minus_geometric"]["per_seed"], [-15.0, -10.0])
    assert tv["val_ranks_as_test"] == 2  # class b: validation and test agree; class a: they disagree
    md = (tmp_path / "results" / "ablation_toy_t.md").read_text()
    assert "ours, tasks chosen on validation" in md and "| ours[tasks] |" in md
