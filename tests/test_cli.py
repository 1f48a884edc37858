"""The `mtssad` command line end to end on the embedded digits (tiny settings)."""

import pandas as pd
import pytest

from mtssad.cli import main

FAST = ["--max-train", "300", "--max-test", "150", "--epochs", "1", "--min-steps", "0", "--quiet", "--backbone", "wrn-10-1"]


def test_evaluate_writes_results_report_plots_and_resume_skips(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["evaluate", "--classes", "0", "seven", "--methods", "ours", "jigsaw", "--out", str(out), *FAST]
    with pytest.raises(Exception, match="unknown class 'seven'.*0=0, 1=1"):
        raise_for(main(argv), capsys)
    argv[argv.index("seven")] = "7"
    assert main(argv) == 0
    df = pd.read_parquet(out / "results.parquet")
    assert len(df) == 4
    assert set(df["normal_class"]) == {"0", "7"} and set(df["method"]) == {"ours", "jigsaw"}
    assert df[["auroc", "aupr", "eer", "apcer_at_5bpcer"]].apply(lambda c: c.between(0, 1).all()).all()
    ours = df[df.method == "ours"].iloc[0]
    assert ours["grid"] == "3x3" and ours["k"] == 3 and ours["n_test"] == 150
    assert {"auroc_head_jigsaw", "auroc_head_rotation", "val_auroc"} <= set(df.columns)
    report = (out / "report.md").read_text()
    assert "| **mean** |" in report and "Task suitability" in report
    assert len(list((out / "plots").glob("roc_*.png"))) == 2
    assert len(list((out / "plots").glob("tasks_*.png"))) == 4
    scores = list((out / "scores").glob("*.parquet"))
    assert len(scores) == 4
    s = pd.read_parquet(scores[0])
    assert len(s) == 150 and {"index", "label", "is_normal", "score"} <= set(s.columns)
    capsys.readouterr()
    # rerun: all four rows exist, nothing retrained; one more class adds only its rows
    assert main(argv + ["--classes", "0", "7", "3"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("already in results, skipped") == 4
    assert len(pd.read_parquet(out / "results.parquet")) == 6


def raise_for(code, capsys):
    err = capsys.readouterr().err
    if code != 0:
        raise RuntimeError(err)


def test_bad_root_and_bad_flags_give_clear_errors(tmp_path, capsys):
    code = main(["evaluate", "--dataset", "mnist", "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "MNIST" in err and "error:" in err and "Traceback" not in err
    code = main(["evaluate", "--k", "30", "--grid", "2", "2", "--out", str(tmp_path / "o2"), *FAST])
    assert code == 2 and "k must satisfy" in capsys.readouterr().err
    code = main(["evaluate", "--epochs", "-1", "--out", str(tmp_path / "o3"), *FAST[:4]])
    assert code == 2 and "--epochs must be >= 1" in capsys.readouterr().err
    code = main(["evaluate", "--head-selection", "diagnostic", "--val-fraction", "0", "--out", str(tmp_path / "o4"), *FAST])
    assert code == 2 and "--head-selection diagnostic needs a validation split" in capsys.readouterr().err
    code = main(["ood", "--ood-dataset", "glyphs", "--head-selection", "diagnostic", "--out", str(tmp_path / "o5"), *FAST])
    assert code == 2 and "evaluate and sweep only" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    code = main(["evaluate", "--out", str(tmp_path / "file" / "sub"), *FAST])
    assert code == 2 and "file" in capsys.readouterr().err


def test_report_command_rerenders(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["evaluate", "--classes", "1", "--methods", "geometric", "--out", str(out), *FAST]) == 0
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert "geometric" in (out / "report.md").read_text()


def test_help_documents_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    for flag in ("--dataset", "--data-root", "--classes", "--methods", "--epochs", "--backbone", "--max-train",
                 "--max-test", "--seed", "--out", "--grid", "--k", "--tasks", "--overwrite"):
        assert flag in text
    assert "default: digits" in text


def test_glyphs_one_vs_all_two_fonts_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("MTSSAD_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "g"
    argv = ["evaluate", "--dataset", "glyphs", "--classes", "DejaVuSans", "cmr10", "--methods", "ours",
            "--out", str(out), "--max-train", "400", "--max-test", "300", "--epochs", "1", "--min-steps", "0", "--quiet"]
    assert main(argv) == 0
    df = pd.read_parquet(out / "results.parquet")
    assert sorted(df["normal_class"]) == ["DejaVuSans", "cmr10"] and df["dataset"].eq("glyphs").all()
    assert (tmp_path / "cache").is_dir()


def test_evaluate_with_head_selection_records_the_heads_used(tmp_path):
    out = tmp_path / "sel"
    assert main(["evaluate", "--classes", "0", "--head-selection", "diagnostic", "--score-norm", "standardize",
                 "--out", str(out), *FAST]) == 0
    row = pd.read_parquet(out / "results.parquet").iloc[0]
    used = row["selected_heads"].split(",")
    assert used and set(used) <= {"vertical", "horizontal", "rotation", "jigsaw"}
    assert '"head_selection": "diagnostic"' in row["config"] and '"score_norm": "standardize"' in row["config"]
