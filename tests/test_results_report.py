import json
import os

import numpy as np
import pandas as pd
import pytest

from mtssad.paper import paper_auroc, paper_siwm
from mtssad.report import plot_roc, plot_task_curves, render_report, task_table, task_verdicts
from mtssad.results import RESULT_COLUMNS, ResultsFileError, ResultsStore, row_key, run_name

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_row(normal_class="0", method="ours", auroc=0.9, seed=0, dataset="mnist", **extra):
    config = extra.pop("config", {"method": method, "seed": seed, "grid": [3, 3], "k": 3})
    row = dict(dataset=dataset, normal_class=normal_class, method=method, seed=seed, auroc=auroc, aupr=0.8,
               eer=0.2, apcer_at_5bpcer=0.4, n_train=100, n_test=50, train_seconds=1.0, score_seconds=0.1,
               config=json.dumps(config, sort_keys=True), grid="3x3" if method == "ours" else None,
               k=3 if method == "ours" else None, split="test")
    row.update(extra)
    return row


# ---------------------------------------------------------------- ResultsStore

def test_append_load_roundtrip_schema_order(tmp_path):
    store = ResultsStore(tmp_path / "out")
    assert list(store.load().columns) == list(RESULT_COLUMNS)  # empty frame with the schema
    store.append([make_row(auroc_head_rotation=0.7, val_auroc=0.8), make_row("1", method="ocsvm")])
    df = store.load()
    assert list(df.columns) == [*RESULT_COLUMNS, "val_auroc", "auroc_head_rotation"]
    assert len(df) == 2
    assert df["k"].dtype == "Int64" and pd.isna(df.loc[1, "k"]) and df.loc[0, "k"] == 3
    assert pd.isna(df.loc[1, "auroc_head_rotation"])
    assert store.has(row_key(make_row())) and not store.has(row_key(make_row(seed=5)))


def test_append_replaces_duplicate_keys_with_newest(tmp_path):
    store = ResultsStore(tmp_path)
    store.append([make_row(auroc=0.5), make_row("1", auroc=0.6)])
    store.append([make_row(auroc=0.95)])
    df = store.load()
    assert len(df) == 2
    assert df.set_index("normal_class").loc["0", "auroc"] == 0.95
    assert store.done_keys() == {row_key(make_row()), row_key(make_row("1"))}


def test_append_rejects_rows_without_key(tmp_path):
    row = make_row()
    del row["seed"]
    with pytest.raises(ValueError, match="missing seed"):
        ResultsStore(tmp_path).append([row])


def test_crash_during_write_keeps_previous_file(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path)
    store.append([make_row(auroc=0.5)])
    before = store.path.read_bytes()

    def boom(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="simulated crash"):
        store.append([make_row("1", auroc=0.7)])
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert store.load()["auroc"].tolist() == [0.5]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".results.parquet.lock", "results.parquet"]  # no temp file left


def test_corrupt_results_file_names_the_file(tmp_path):
    store = ResultsStore(tmp_path)
    store.path.write_bytes(b"not parquet at all")
    with pytest.raises(ResultsFileError, match="results.parquet"):
        store.load()
    with pytest.raises(ResultsFileError, match="results.parquet"):
        store.append([make_row()])


def test_unwritable_outdir_fails_at_creation(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")  # tests run as root: chmod would not block, a file as parent does
    with pytest.raises((PermissionError, ValueError), match="a_file"):
        ResultsStore(blocker / "out")
    with pytest.raises((PermissionError, ValueError), match="a_file"):
        ResultsStore(blocker)


def test_side_files(tmp_path):
    store = ResultsStore(tmp_path)
    p = store.write_scores("run1", pd.DataFrame({"index": [0, 1], "is_normal": [True, False], "score": [1.0, 0.0]}))
    assert p == tmp_path / "scores" / "run1.parquet"
    assert pd.read_parquet(p)["score"].tolist() == [1.0, 0.0]
    h = store.write_json("history/run1", [{"epoch": 0, "loss": np.float32(1.5)}])
    assert h == tmp_path / "history" / "run1.json" and store.read_json("history/run1") == [{"epoch": 0, "loss": 1.5}]
    with pytest.raises(ValueError, match=r"\.\."):
        store.write_json("../escape", {})


# ---------------------------------------------------------------- paper numbers

def test_paper_lookup():
    assert paper_auroc("mnist", "ours") == 96.0
    assert paper_auroc("Fashion_MNIST", "iforest") == 84.0
    assert paper_auroc("cifar10", "ours") == 88.2 and paper_auroc("cifar10", "ours", "bird") == 84.8
    assert paper_auroc("cub200", "jigsaw") == 78.5
    assert paper_auroc("cifar10-vs-svhn", "rotnet") == 97.9
    assert paper_auroc("cifar10", "mhrot") is None and paper_auroc("nope", "ours") is None
    assert paper_siwm("ours", "apcer_at_5bpcer") == 39.1


# ---------------------------------------------------------------- report

HISTORY = [
    {"epoch": e, "loss": 1.0 / (e + 1), "num_classes/rotation": 4, "num_classes/jigsaw": 3,
     "acc_train/rotation": 0.5 + 0.2 * e, "acc_val_normal/rotation": 0.5 + 0.2 * e,
     "acc_val_anomaly/rotation": 0.4 + 0.1 * e,
     "acc_train/jigsaw": 0.99, "acc_val_normal/jigsaw": 0.99, "acc_val_anomaly/jigsaw": 0.985,
     "acc_train/vertical": 0.34, "acc_val_normal/vertical": 0.36, "acc_val_anomaly/vertical": 0.33}
    for e in range(3)
]


def test_task_verdicts_and_table():
    v = task_verdicts(HISTORY)
    assert {h: x["verdict"] for h, x in v.items()} == {"rotation": "suited", "jigsaw": "too easy",
                                                       "vertical": "too hard"}
    assert v["vertical"]["chance"] == pytest.approx(1 / 3)  # known head, no num_classes key
    table = task_table(HISTORY)
    assert "| rotation | 4 | 0.250 | 0.900 | 0.900 | 0.600 | suited |" in table


def test_plots_write_png(tmp_path):
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(20, bool), np.zeros(20, bool)]
    p = plot_roc({"ours": (y, y + rng.normal(0, 0.5, 40)), "ocsvm": (y, rng.normal(size=40))},
                 tmp_path / "roc.png", "t")
    assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 1000
    q = plot_task_curves(HISTORY, tmp_path / "sub" / "tasks.png", "t")
    assert q.read_bytes()[:8] == PNG_MAGIC and q.stat().st_size > 1000


def test_render_report_mean_row_and_paper(tmp_path):
    store = ResultsStore(tmp_path)
    rows = [make_row("0", auroc=0.92), make_row("1", auroc=0.88),  # ours mean 90.0 vs paper 96.0 -> flagged
            make_row("0", "ocsvm", 0.85, config={"nu": 0.1}), make_row("1", "ocsvm", 0.85, config={"nu": 0.1})]
    store.append(rows)
    text = render_report(tmp_path, plots=False).read_text()
    assert "## mnist (test)" in text
    assert "| **mean** | **90.0** (paper 96.0) ⚠ −6.0 | **85.0** (paper 84.7) |" in text
    assert "| 0 | 92.0 | 85.0 |" in text


def test_render_report_distinct_labels_for_configs(tmp_path):
    store = ResultsStore(tmp_path)
    store.append([make_row(auroc=0.9), make_row(auroc=0.8, grid="2x2", k=5,
                                                config={"method": "ours", "grid": [2, 2], "k": 5})])
    text = render_report(tmp_path, plots=False).read_text()
    assert "| normal class | ours 3x3 k3 | ours 2x2 k5 |" in text


def test_render_report_sweep_uses_selected_rows(tmp_path):
    store = ResultsStore(tmp_path)
    store.append([make_row(auroc=0.70, selected=False, val_auroc=0.6),
                  make_row(auroc=0.95, selected=True, val_auroc=0.9, grid="2x2", k=5,
                           config={"method": "ours", "grid": [2, 2], "k": 5})])
    text = render_report(tmp_path, plots=False).read_text()
    assert "| 0 | 95.0 |" in text and "ours (val-selected)" in text
    assert "Sweep trials" in text and "| 0 | ours | 2x2 | 5 | 0 | 90.0 | 95.0 | ✔ |" in text


def test_render_report_links_plots_and_task_tables(tmp_path):
    store = ResultsStore(tmp_path)
    row = make_row()
    y = np.r_[np.ones(5, bool), np.zeros(5, bool)]
    store.write_scores(run_name(row), pd.DataFrame({"index": np.arange(10), "is_normal": y,
                                                   "score": np.linspace(1, 0, 10)}))
    store.write_json(f"history/{run_name(row)}", HISTORY)
    store.append([row])
    text = render_report(tmp_path).read_text()
    [roc] = (tmp_path / "plots").glob("roc_mnist_test_0_*.png")  # slugs + a hash of the exact names
    tasks = tmp_path / "plots" / f"tasks_{run_name(row)}.png"
    assert roc.read_bytes()[:8] == PNG_MAGIC and tasks.read_bytes()[:8] == PNG_MAGIC
    assert f"(plots/{roc.name})" in text and f"(plots/tasks_{run_name(row)}.png)" in text
    assert "| jigsaw | 3 | 0.333 | 0.990 | 0.990 | 0.985 | too easy |" in text


def test_render_report_ood_row_gets_table6_figure(tmp_path):
    ResultsStore(tmp_path).append([make_row("all", auroc=0.99, dataset="cifar10-vs-svhn", split="ood")])
    text = render_report(tmp_path, plots=False).read_text()
    assert "## cifar10-vs-svhn (ood)" in text and "**99.0** (paper 98.8)" in text


def test_render_report_empty(tmp_path):
    assert "No results yet." in render_report(tmp_path).read_text()


def test_render_report_shows_the_chosen_config_and_heads_per_class_and_a_selection_plot(tmp_path):
    """A task-search sweep: class 0 kept the jigsaw head (2x2 k3 chosen), class 1 chose the geometric heads alone."""
    store = ResultsStore(tmp_path)
    geo, allh = "vertical,horizontal,rotation", "vertical,horizontal,rotation,jigsaw"
    rows = []
    for c, vals, chosen in (("0", (0.91, 0.85, 0.88), 0), ("1", (0.70, 0.72, 0.80), 2)):
        for i, (grid, k, heads) in enumerate((("2x2", 3, allh), ("3x3", 3, allh), (None, None, geo))):
            rows.append(make_row(normal_class=c, auroc=0.5 + i / 10, val_auroc=vals[i], selected=i == chosen,
                                 grid=grid, k=k, heads=heads, task_search=True,
                                 jigsaw_kept=("jigsaw" in heads) if i == chosen else None,
                                 config={"method": "ours", "grid": grid, "k": k, "tasks": heads.split(",")}))
    store.append(rows)
    text = render_report(tmp_path).read_text()
    assert "Chosen per class on validation data" in text
    assert f"| 0 | ours | 0 | 2x2 k3 | {allh} | yes | 3 | +3.0 | 91.0 | 50.0 |" in text
    assert f"| 1 | ours | 0 | no jigsaw | {geo} | no | 3 | +8.0 | 80.0 | 70.0 |" in text
    assert f"| 1 | ours | – | – | {geo} | 0 | 80.0 | 70.0 | ✔ |" in text  # the trials table names the heads
    pngs = list((tmp_path / "plots").glob("selection_*.png"))
    assert len(pngs) == 1 and pngs[0].read_bytes().startswith(PNG_MAGIC)
    assert f"({pngs[0].relative_to(tmp_path).as_posix()})" in text
