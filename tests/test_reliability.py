"""Reliability without Ray: a killed `mtssad evaluate` loses no finished row; bad inputs give one clean error.

Behaviours already covered elsewhere are not repeated here; docs/reliability.md maps every fault and bad
input to its test.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import TINY, make_images
from mtssad import MultiTaskDetector
from mtssad.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY_CLI = ["--epochs", "1", "--min-steps", "0", "--quiet", "--backbone", "wrn-10-1", "--grid", "2", "2", "--margin", "1"]


# ---------------------------------------------------------------- a killed run


def _read_rows(path: Path) -> int | None:
    """Rows in results.parquet, None before it exists; any read failure (a torn file) fails the test."""
    if not path.exists():
        return None
    return len(pd.read_parquet(path))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_evaluate_killed_mid_run_keeps_finished_rows_and_rerun_completes_only_the_rest(tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "mtssad.cli", "evaluate", "--classes", "0", "1", "2", "--max-train", "300",
            "--max-test", "90", "--side", "16", *TINY_CLI, "--out", str(out)]
    results = out / "results.parquet"
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while (n := _read_rows(results)) is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # every poll also reads the file: it is never seen half-written
        os.kill(proc.pid, signal.SIGKILL)  # like an OOM kill or a lost node: no cleanup runs
    finally:
        proc.kill()
        first = proc.communicate()[0]
    assert proc.returncode == -signal.SIGKILL, first
    done_before = _read_rows(results)
    assert n is not None and 1 <= done_before < 3, first  # killed after the first row, before the last
    assert not (out / "report.md").exists()
    rerun = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.count("already in results, skipped") == done_before
    assert len(re.findall(r"/ ours: AUROC", rerun.stdout)) == 3 - done_before
    df = pd.read_parquet(results)
    assert sorted(df["normal_class"]) == ["0", "1", "2"]  # each row exactly once
    assert not df.duplicated(["dataset", "normal_class", "method", "config", "seed"]).any()
    assert len(list((out / "scores").glob("*.parquet"))) == 3


# ---------------------------------------------------------------- bad inputs through the CLI


def _png(path: Path, value, mode="L", size=(12, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def _imagefolder(root: Path, n: int = 8) -> Path:
    for c, name in enumerate(("cat", "dog")):
        for i in range(n):
            _png(root / name / f"{i}.png", 60 * c + 20 * (i % 4) + 10)
    return root


def _empty_class(tmp_path):
    root = _imagefolder(tmp_path / "data")
    (root / "cow").mkdir()
    return ["--dataset", "imagefolder", "--data-root", str(root)], r"no readable training images for class\(es\) \['cow'\]"


def _images_in_root(tmp_path):
    root = tmp_path / "flat"
    for i in range(3):
        _png(root / f"{i}.png", 10)
    return ["--dataset", "imagefolder", "--data-root", str(root)], r"expected ROOT/<class>/<image files>.*no class folders"


def _bad_files(tmp_path):
    root = _imagefolder(tmp_path / "data")
    (root / "cat" / "readme.png").write_text("not an image")
    return ["--dataset", "imagefolder", "--data-root", str(root)], r"cannot read image .*cat/readme.png"


def _truncated_png(tmp_path):
    root = _imagefolder(tmp_path / "data")
    data = (root / "dog" / "0.png").read_bytes()
    (root / "dog" / "0.png").write_bytes(data[: len(data) // 2])
    return ["--dataset", "imagefolder", "--data-root", str(root)], r"cannot read image .*dog/0.png"


BAD_CLI = {
    "grid of zero": (["--grid", "0", "3"], r"grid must have n_h, n_w >= 1 and at least 2 cells; got \(0, 3\)"),
    "k above (2*2)!": (["--grid", "2", "2", "--k", "24"], r"k must satisfy 2 <= k < \(2\*2\)! = 24"),
    "unknown class index": (["--classes", "12"], r"unknown class '12'; valid classes \(index=name\): 0=0, 1=1"),
    "unknown class name": (["--classes", "cat"], r"unknown class 'cat'; valid classes"),
    "images smaller than the grid": (["--side", "8", "--classes", "0", "--grid", "3", "3", "--max-train", "60"],
                                     r"8x8 px are too small for a 3x3 jigsaw grid"),
    "normal class emptied by --max-train": (["--max-train", "5", "--classes", "9"],
                                            r"normal class '9' has no training images"),
    "zero lr": (["--lr", "0"], r"lr must be > 0"),
    "unknown backbone": (["--backbone", "resnet50"], r"backbone must look like 'wrn-<depth>-<width>'"),
    "empty normal class folder": (_empty_class, None),
    "images directly in the root": (_images_in_root, None),
    "non-image file": (_bad_files, None),
    "truncated PNG": (_truncated_png, None),
}


@pytest.mark.parametrize("case", list(BAD_CLI))
def test_bad_input_gives_one_clean_error_line_and_exit_2(case, tmp_path, capsys):
    args, pattern = BAD_CLI[case]
    if callable(args):
        args, pattern = args(tmp_path)
    code = main(["evaluate", "--out", str(tmp_path / "out"), "--epochs", "1", "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mtssad evaluate: error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "out" / "results.parquet").exists()


def test_real_process_prints_no_traceback(tmp_path):
    """The installed entry point (not only main()): one stderr line, exit status 2."""
    r = subprocess.run([sys.executable, "-m", "mtssad.cli", "evaluate", "--grid", "0", "3", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "MTSSAD_DEBUG": ""})
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "mtssad evaluate: error: grid must have n_h, n_w >= 1 and at least 2 cells; got (0, 3) "
        "(MTSSAD_DEBUG=1 shows the traceback)"]


def test_skip_bad_images_counts_and_lists_them_then_evaluates(tmp_path, capsys):
    root = _imagefolder(tmp_path / "data")
    (root / "cat" / "readme.png").write_text("not an image")
    data = (root / "dog" / "0.png").read_bytes()
    (root / "dog" / "0.png").write_bytes(data[: len(data) // 2])
    _png(root / "dog" / "rgb.png", (200, 10, 10), mode="RGB")  # mixed gray/RGB: loads as 3 channels
    out = tmp_path / "out"
    code = main(["evaluate", "--dataset", "imagefolder", "--data-root", str(root), "--skip-bad-images", "--side", "8",
                 "--classes", "cat", "--val-fraction", "0", *TINY_CLI, "--log-level", "info", "--out", str(out)])
    printed = capsys.readouterr().err  # messages (warnings and info) go to stderr through logging
    assert code == 0, printed
    assert re.search(r"skipped 2 unreadable image file\(s\): .*readme.png.*0.png|skipped 2 .*0.png.*readme.png",
                     printed), printed
    assert "(3, 8, 8)" in printed  # the one RGB file makes the whole set RGB (documented in imagefolder.py)
    n_train, n_test = map(int, re.search(r"imagefolder: (\d+) train / (\d+) test", printed).groups())
    assert n_train + n_test == 8 + (8 - 1) + 1  # every readable file (cat, dog less the truncated one, rgb)
    assert len(pd.read_parquet(out / "results.parquet")) == 1


# ---------------------------------------------------------------- bad inputs through the Python API


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_fit_rejects_non_finite_pixels(value):
    X = make_images(6).astype(np.float32) / 255
    X[2, 0, 3, 3] = value
    with pytest.raises(ValueError, match=r"NaN or inf pixels in 1 image"):
        MultiTaskDetector(**TINY).fit(X)


def test_ray_entry_points_reject_bad_images_before_starting_anything(fitted_tiny, tmp_path):
    """Checked on the driver, so a NaN never reaches a Train worker or a Ray Data actor (no Ray is started)."""
    ray = pytest.importorskip("ray")
    ray_was_up = ray.is_initialized()  # the session's Ray fixture may already run (suite order)
    from mtssad.distributed.data import score_with_ray_data
    from mtssad.distributed.train import train_detector_ddp

    X = make_images(6).astype(np.float32) / 255
    X[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="X_train has NaN or inf pixels"):
        train_detector_ddp(X, TINY, storage_path=str(tmp_path), name="x")
    with pytest.raises(ValueError, match="images has NaN or inf pixels"):
        score_with_ray_data(tmp_path / "det.pt", X)
    with pytest.raises(ValueError, match="channels-last"):
        score_with_ray_data(tmp_path / "det.pt", np.zeros((2, 16, 16, 3), np.uint8))
    assert ray.is_initialized() == ray_was_up  # nothing started a Ray


def test_detector_from_another_config_is_refused_naming_the_mismatch(fitted_tiny, tmp_path):
    """A file whose weights were saved for another grid/k (here: its config edited to k=4) is refused."""
    import io
    import json

    import torch

    from mtssad import DetectorFileError

    payload = torch.load(fitted_tiny.save(tmp_path / "det.pt"), weights_only=True)
    payload["config"] = json.dumps({**json.loads(payload["config"]), "k": 4})
    payload["permutations"] = torch.empty(0, dtype=torch.long)  # let the plan draw 4 permutations
    buf = io.BytesIO()
    torch.save(payload, buf)
    (tmp_path / "other.pt").write_bytes(buf.getvalue())
    with pytest.raises(DetectorFileError, match=r"other.pt: weights do not match its config \(backbone wrn-10-1, grid 2x2, k 4, tasks .*\): .*jigsaw.* has shape \(3, .*\) in the file, \(4, .*\) for this config"):
        MultiTaskDetector.load(tmp_path / "other.pt")


# ---------------------------------------------------------------- security


SECRET_PATTERNS = [r"AKIA[0-9A-Z]{16}", r"aws_secret", r"aws_access_key_id", r"(?i)password\s*[:=]",
                   r"(?i)secret(_key)?\s*[:=]", r"(?i)token\s*:\s*(?![~/$])\S{16,}",  # a token value, not a token file's path
                   r"-----BEGIN [A-Z ]*PRIVATE KEY-----"]


@pytest.mark.parametrize("name", ["cluster.yaml", *sorted(p.name for p in (REPO / "ray_jobs").glob("*.py"))])
def test_cluster_config_and_jobs_hold_no_secrets(name):
    path = REPO / name if (REPO / name).exists() else REPO / "ray_jobs" / name
    text = path.read_text()
    found = [p for p in SECRET_PATTERNS if re.search(p, text)]
    assert not found, f"{path} matches secret patterns {found}"
