"""Results you can trust (issue 16): row identity, --tasks, side-file names, concurrent writers, flag semantics.

Every case here is listed in docs/reliability.md with the message a user gets.
"""

import json
import multiprocessing as mp
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mtssad.cli import build_parser, main
from mtssad.flags import load_from_args
from mtssad.protocols import data_identity
from mtssad.results import ResultsFileError, ResultsStore, row_key, run_name

# digits at 16 px, a 2x2 jigsaw, one short epoch: a run takes a second or two
TINY = ["--max-test", "60", "--side", "16", "--grid", "2", "2", "--margin", "1", "--epochs", "1", "--min-steps", "0",
        "--batch-size", "16", "--backbone", "wrn-10-1", "--quiet"]


# ---------------------------------------------------------------- 1. row identity covers the data selection


def test_rerun_with_other_data_flags_adds_a_row_and_the_same_flags_skip(tmp_path, capsys):
    out = tmp_path / "run"
    smoke = ["evaluate", "--classes", "0", "--methods", "ours", "--max-train", "150", *TINY, "--out", str(out)]
    real = [*smoke[:-2], "--max-train", "300", "--out", str(out)]  # the later --max-train wins
    assert main(smoke) == 0
    capsys.readouterr()
    assert main(real) == 0
    printed = capsys.readouterr().out
    assert "skipped" not in printed, printed  # another data selection is a new result, not the smoke run's
    df = pd.read_parquet(out / "results.parquet")
    assert len(df) == 2
    assert sorted(json.loads(d)["max_train"] for d in df["data"]) == [150, 300]
    assert sorted(df["n_train"]) == [12, 24]  # what each row was fitted on (class 0's share, minus validation)
    assert len(list((out / "scores").glob("*.parquet"))) == 2  # each row kept its own scores file
    assert main(real) == 0  # the same flags again: nothing retrained
    assert capsys.readouterr().out.count("already in results, skipped") == 1
    assert len(pd.read_parquet(out / "results.parquet")) == 2
    report = (out / "report.md").read_text()
    assert "## digits (test, max_train=150)" in report and "## digits (test, max_train=300)" in report


DATA_FLAGS = {
    "--max-train": ["--max-train", "300"],
    "--max-train-per-class": ["--max-train-per-class", "20"],
    "--max-test": ["--max-test", "100"],
    "--side": ["--side", "20"],
    "--channels": ["--channels", "3"],
    "--test-fraction": ["--test-fraction", "0.4"],
    "--val-fraction": ["--val-fraction", "0.3"],
    "--crop-bbox": ["--crop-bbox"],
    "--seed": ["--seed", "1"],
}


def _identity(argv: list[str]) -> dict:
    args = build_parser().parse_args(["evaluate", *argv])
    return data_identity(load_from_args(args), val_fraction=args.val_fraction)


@pytest.mark.parametrize("flag", list(DATA_FLAGS))
def test_every_data_flag_is_in_the_row_identity(flag):
    base = ["--max-train", "200", "--max-test", "120", "--side", "16"]
    assert _identity(base) == _identity(base)
    assert _identity(base) != _identity([*base, *DATA_FLAGS[flag]])


def test_data_root_is_resolved_in_the_identity(tmp_path, monkeypatch):
    for name in ("a", "b"):
        for i in range(4):
            _png(tmp_path / "root" / name / f"{i}.png", 40 * i + (100 if name == "b" else 0))
    shutil.copytree(tmp_path / "root", tmp_path / "copy")
    monkeypatch.chdir(tmp_path)
    flags = ["--dataset", "imagefolder", "--side", "8"]
    here = _identity([*flags, "--data-root", "root"])
    assert here == _identity([*flags, "--data-root", str(tmp_path / "root")])  # the same folder, spelt two ways
    assert here["root"] == str((tmp_path / "root").resolve())
    assert here != _identity([*flags, "--data-root", "copy"])  # another folder: another result


def test_legacy_rows_without_data_never_match_new_ones():
    row = dict(dataset="digits", normal_class="0", method="ours", config="{}", seed=0)
    assert row_key(row) != row_key({**row, "data": {"max_train": 5}})  # a row without data is never a new row's
    assert row_key({**row, "data": {"a": 1, "b": 2}}) == row_key({**row, "data": '{"a": 1, "b": 2}'})


# ---------------------------------------------------------------- 2. --tasks


def test_tasks_rotation_trains_one_head_and_is_its_own_row(tmp_path, capsys):
    out = tmp_path / "t"
    argv = ["evaluate", "--classes", "0", "--methods", "ours", "--max-train", "150", *TINY, "--out", str(out)]
    assert main([*argv, "--tasks", "rotation"]) == 0
    row = pd.read_parquet(out / "results.parquet").iloc[0]
    assert json.loads(row["config"])["tasks"] == ["rotation"]
    assert pd.isna(row["grid"]) and pd.isna(row["k"])  # no jigsaw head: grid and k do not apply
    heads = [c for c in row.index if c.startswith("auroc_head_") and pd.notna(row[c])]
    assert heads == ["auroc_head_rotation"]
    [history] = (out / "history").glob("*.json")
    trained = {k.split("/", 1)[1] for e in json.loads(history.read_text()) for k in e if k.startswith("acc_train/")}
    assert trained == {"rotation"}
    capsys.readouterr()
    assert main(argv) == 0  # the default heads: a second row, not "already in results"
    assert "skipped" not in capsys.readouterr().out
    df = pd.read_parquet(out / "results.parquet")
    assert len(df) == 2 and sorted(len(json.loads(c)["tasks"]) for c in df["config"]) == [1, 4]


# ---------------------------------------------------------------- 3. side-file names

ODD_NAMES = ["猫", "犬", "cat dog", "cat_dog", "cat-dog"]


def test_run_names_of_names_that_slug_alike_never_collide():
    rows = [dict(dataset="glyphs", normal_class=c, method="ours", config="{}", seed=0, data="{}") for c in ODD_NAMES]
    names = [run_name(r) for r in rows]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", n) for n in names)
    assert names[2].startswith("glyphs_cat-dog_ours_s0_") and names[3].startswith("glyphs_cat_dog_ours_s0_")


def test_class_names_differing_in_non_ascii_or_spaces_keep_their_own_files_and_plots(tmp_path, capsys):
    root = tmp_path / "data"
    for c, name in enumerate(ODD_NAMES[:4]):
        for i in range(10):
            _png(root / name / f"{i}.png", 50 * c + 3 * i)
    out = tmp_path / "out"
    argv = ["evaluate", "--dataset", "imagefolder", "--data-root", str(root), "--side", "8", "--methods", "iforest",
            "--out", str(out), "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    df = pd.read_parquet(out / "results.parquet")
    assert sorted(df["normal_class"]) == sorted(ODD_NAMES[:4])
    scores = sorted((out / "scores").glob("*.parquet"))
    assert len(scores) == 4  # nothing overwritten
    store = ResultsStore(out)
    class_index = {n: i for i, n in enumerate(sorted(ODD_NAMES[:4]))}  # imagefolder sorts its class folders
    for r in df.to_dict("records"):  # each row's scores file is that class's run
        s = store.read_scores(run_name(r))
        assert (s["is_normal"] == (s["label"] == class_index[r["normal_class"]])).all()
    report = (out / "report.md").read_text()
    links = dict(re.findall(r"\[([^\]]+)\]\((plots/roc_[^)]+\.png)\)", report))
    assert sorted(links) == sorted(ODD_NAMES[:4]) and len(set(links.values())) == 4
    assert all((out / p).is_file() for p in links.values())
    assert len(list((out / "plots").glob("roc_*.png"))) == 4


# ---------------------------------------------------------------- 4. concurrent writers


def _writer(out: str, who: str, n: int) -> None:
    store = ResultsStore(out)
    for i in range(n):
        store.append([dict(dataset="d", normal_class=f"{who}{i}", method="m", config="{}", seed=0, data="{}",
                           auroc=0.5, n_train=1)])


def _reader(out: str, stop, results) -> None:
    store = ResultsStore(out)
    errors, counts = [], []
    while not stop.is_set():
        try:
            counts.append(len(store.load()))
        except Exception as e:  # a good file called corrupt
            errors.append(f"{type(e).__name__}: {e}")
    results.put((errors, counts))


@pytest.mark.timeout(120)
def test_two_writers_and_a_reader_lose_nothing_and_never_see_a_corrupt_file(tmp_path):
    ctx = mp.get_context("fork")  # the children use only pyarrow/pandas/filelock; fork spares them re-importing torch
    out = str(tmp_path / "shared")
    ResultsStore(out)
    stop, results = ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=_reader, args=(out, stop, results))
    reader.start()
    writers = [ctx.Process(target=_writer, args=(out, who, 20)) for who in ("a", "b")]
    for w in writers:
        w.start()
    for w in writers:
        w.join(90)
    stop.set()
    errors, counts = results.get(timeout=30)
    reader.join(30)
    assert [w.exitcode for w in writers] == [0, 0] and reader.exitcode == 0
    df = ResultsStore(out).load()
    assert len(df) == 40 and sorted(df["normal_class"]) == sorted(f"{w}{i}" for w in "ab" for i in range(20))
    assert errors == []
    assert len(counts) > 5 and counts == sorted(counts)  # it read while the writers wrote, never going back


def test_reader_reads_one_file_even_when_it_is_replaced_mid_read(tmp_path, monkeypatch):
    """The reader reads the file's bytes through one handle: a rewrite between open and parse cannot mix files."""
    store = ResultsStore(tmp_path)
    store.append([dict(dataset="d", normal_class="0", method="m", config="{}", seed=0, data="{}", auroc=0.5)])
    other = ResultsStore(tmp_path / "other")
    other.append([dict(dataset="d", normal_class=str(i), method="m", config="{}", seed=0, data="{}")
                  for i in range(50)])
    real_open = open

    def open_then_replace(path, *a, **k):
        f = real_open(path, *a, **k)
        if Path(path) == store.path:
            shutil.copyfile(other.path, tmp_path / "new.parquet")
            (tmp_path / "new.parquet").replace(store.path)  # the atomic replace lands after our open
        return f

    monkeypatch.setattr("builtins.open", open_then_replace)
    assert len(store.load()) == 1  # the file as opened; the next read sees the new one
    monkeypatch.undo()
    assert len(store.load()) == 50


# ---------------------------------------------------------------- 6. flags that mislead


def test_help_says_max_train_caps_the_whole_split_and_offers_a_per_class_cap(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--max-train MAX_TRAIN cap on the WHOLE training split, all classes together, before one-vs-all" in text
    assert "--max-train-per-class" in text and "--min-steps" in text


def test_max_train_per_class_caps_each_class(tmp_path):
    args = build_parser().parse_args(["evaluate", "--max-train-per-class", "20", "--side", "16"])
    ds = load_from_args(args)
    assert np.bincount(ds.train_labels).tolist() == [20] * 10
    out = tmp_path / "pc"
    assert main(["evaluate", "--classes", "3", "--methods", "iforest", "--max-train-per-class", "20", "--side", "16",
                 "--out", str(out), "--quiet"]) == 0
    row = pd.read_parquet(out / "results.parquet").iloc[0]
    assert row["n_train"] == 16 and json.loads(row["data"])["max_train_per_class"] == 20  # 20 minus 20% held out


def test_report_of_a_typo_exits_non_zero_and_creates_nothing(tmp_path, capsys):
    assert main(["report", str(tmp_path / "runz")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"mtssad report: error: {tmp_path / 'runz'}: no such directory; expected an output "
                           "directory of mtssad evaluate, ood or sweep (MTSSAD_DEBUG=1 shows the traceback)")
    assert not (tmp_path / "runz").exists()
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no results.parquet in it" in capsys.readouterr().err
    assert list((tmp_path / "empty").iterdir()) == []


def test_an_unrelated_report_md_is_never_overwritten(tmp_path, capsys, caplog):
    ResultsStore(tmp_path).append([dict(dataset="d", normal_class="0", method="m", config="{}", seed=0, data="{}",
                                        auroc=0.7, split="test")])
    mine = "# My notes\n\nkeep me\n"
    (tmp_path / "report.md").write_text(mine)
    assert main(["report", str(tmp_path)]) == 0
    assert (tmp_path / "report.md").read_text() == mine
    assert f"report: {tmp_path / 'mtssad-report.md'}" in capsys.readouterr().out
    assert "report.md was not written by mtssad" in caplog.text
    assert "| 0 | 70.0 |" in (tmp_path / "mtssad-report.md").read_text()
    assert main(["report", str(tmp_path)]) == 0  # ours (marker line) is rewritten, the user's still kept
    assert (tmp_path / "report.md").read_text() == mine
    (tmp_path / "mtssad-report.md").write_text("also mine\n")
    assert main(["report", str(tmp_path)]) == 2
    assert "move one aside" in capsys.readouterr().err
    (tmp_path / "report.md").unlink()
    assert main(["report", str(tmp_path)]) == 0  # a free report.md is taken again
    assert (tmp_path / "report.md").read_text().startswith("<!-- written by mtssad")


@pytest.mark.timeout(60)
def test_huge_grid_fails_fast_naming_the_side(tmp_path, capsys):
    t0 = time.perf_counter()
    assert main(["evaluate", "--grid", "3000", "3000", "--out", str(tmp_path / "o")]) == 2
    assert time.perf_counter() - t0 < 20
    err = capsys.readouterr().err
    assert ("--grid 3000 3000 does not fit --side 32: images of 32x32 px are too small for a 3000x3000 jigsaw "
            "grid") in err
    assert not (tmp_path / "o").exists()  # refused before the output folder or the data


def test_bad_flag_combinations_are_refused_before_anything_runs(tmp_path, capsys):
    cases = [
        (["--epochs", "0"], "--epochs must be >= 1: with 0 epochs the network is never trained and its scores would "
                            "be stored as a result; got 0"),
        (["--methods", "jigsaw", "--tasks", "rotation"],
         "--tasks chooses the heads of --methods ours only; jigsaw train(s) fixed heads: drop --tasks, or run jigsaw "
         "in a separate command"),
        (["--tasks", "color"], "unknown task 'color'"),
    ]
    for flags, message in cases:
        assert main(["evaluate", *flags, "--out", str(tmp_path / "o")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _png(path: Path, value, size=(12, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, int(value) % 256).save(path)


def test_sweep_gives_ours_without_a_jigsaw_head_one_trial_per_class():
    from mtssad.distributed.tune import sweep_trials

    specs, skipped = sweep_trials([0, 1], ["ours"], ["2x2", "3x3", "3000x3000"], [3], image_side=(16, 16), margin=1,
                                  params={"tasks": ("rotation",)})
    assert specs == [{"normal_class": c, "method": "ours", "grid": None, "k": None} for c in (0, 1)] and not skipped
    specs, skipped = sweep_trials([0], ["ours"], ["2x2", "3000x3000"], [3], image_side=(16, 16), margin=1)
    assert [s["grid"] for s in specs] == ["2x2"] and "too small for a 3000x3000 jigsaw grid" in skipped[0][3]
