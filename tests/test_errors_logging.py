"""Errors a person can act on (one line, a documented exit status) and messages through `logging`.

Disk full and out of memory are simulated (monkeypatch), never produced: the checks are on what the user
sees. docs/reliability.md lists each case with its message and exit status.
"""

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mtssad.cli import main
from mtssad.errors import (EXIT_BAD_FILE, EXIT_CODES, EXIT_DISK_FULL, EXIT_INTERRUPTED, EXIT_OUT_OF_MEMORY,
                           EXIT_USAGE)

REPO = Path(__file__).resolve().parents[1]
FAST = ["--methods", "iforest", "--max-train", "200", "--max-test", "100", "--side", "16", "-q"]  # no training: < 1 s


def _one_line(capsys, command="evaluate") -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"mtssad {command}: "), err
    assert "Traceback" not in err[0]
    return err[0]


def _no_tmp_files(out: Path) -> bool:
    return not [p for p in out.rglob("*.tmp")]


# ---------------------------------------------------------------- --help, --version, imports


def _run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)


def test_help_imports_neither_torch_nor_ray():
    code = ("import sys\n"
            "import mtssad.cli as cli\n"
            "for argv in (['--help'], ['evaluate', '--help'], ['sweep', '--help']):\n"
            "    try:\n"
            "        cli.main(argv)\n"
            "    except SystemExit as e:\n"
            "        assert e.code == 0, e.code\n"
            "assert 'torch' not in sys.modules and 'ray' not in sys.modules, [m for m in ('torch', 'ray') if m in sys.modules]\n"
            "print('ok')")
    r = _run(code)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr
    assert "exit status:" in r.stdout and "130" in r.stdout and "--log-level" in r.stdout


def test_help_lists_every_method_without_loading_them():
    from mtssad.methods import METHODS, _load_builtin, method_names

    listed = method_names(load=False)
    _load_builtin()
    assert listed == list(METHODS)  # the static table of baseline names is true


def test_import_mtssad_is_lazy_but_the_detector_is_still_there():
    r = _run("import sys, mtssad; assert 'torch' not in sys.modules and 'ray' not in sys.modules\n"
             "from mtssad import MultiTaskDetector, DetectorFileError\n"
             "assert 'torch' in sys.modules and 'ray' not in sys.modules\n"
             "print(MultiTaskDetector.__name__, issubclass(DetectorFileError, ValueError))")
    assert r.returncode == 0 and r.stdout.split() == ["MultiTaskDetector", "True"], r.stderr


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == "mtssad 0.1.0"


def test_exit_codes_are_documented():
    doc = (REPO / "docs" / "reliability.md").read_text()
    for code in EXIT_CODES:
        assert re.search(rf"^\| {code} \|", doc, re.M), f"exit status {code} missing from docs/reliability.md"


# ---------------------------------------------------------------- logging and progress bars


def test_messages_go_to_stderr_results_to_stdout_and_levels_apply(tmp_path, capsys):
    argv = ["evaluate", "--classes", "0", *FAST[:-1], "--out", str(tmp_path / "o")]  # without FAST's -q
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "0 / iforest: AUROC" in out and "report:" in out  # the results
    assert re.search(r"digits: \d+ train / \d+ test images", err) and "digits" not in out  # the messages
    assert main([*argv, "-q"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "already in results, skipped" in out
    assert main(["-v", *argv]) == 0  # before the command works too
    err = capsys.readouterr().err
    assert re.search(r"^\d{4}-\d\d-\d\d [\d:,]+ INFO mtssad\.cli: digits", err, re.M), err
    assert main([*argv, "-v", "--log-level", "error"]) == 0 and capsys.readouterr().err == ""  # the last one wins


def test_progress_bars_only_on_a_terminal(monkeypatch):
    import io

    from mtssad import logs

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    logs.configure("INFO")
    with logs.progress_bar(total=3, desc="x") as bar:
        assert bar.disable  # a log file or a pipe: no bar
    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    logs.configure("INFO")
    with logs.progress_bar(total=3, desc="scoring") as bar:
        assert not bar.disable
        bar.update(3)
    assert "scoring" in tty.getvalue()
    logs.configure("WARNING")  # -q: no bars even on a terminal
    with logs.progress_bar(total=3, desc="x") as bar:
        assert bar.disable
    logs.configure("INFO")


def test_data_loading_writes_no_bar_into_a_non_terminal_log(tmp_path):
    from PIL import Image

    for c, name in enumerate(("cat", "dog")):
        for i in range(6):
            p = tmp_path / "data" / name / f"{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (12, 12), 40 * c + 10 * i).save(p)
    r = subprocess.run([sys.executable, "-m", "mtssad.cli", "evaluate", "--dataset", "imagefolder", "--data-root",
                        str(tmp_path / "data"), "--classes", "cat", "--methods", "iforest", "--side", "8",
                        "--val-fraction", "0", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr and "reading images" not in r.stderr and "img/s" not in r.stderr
    assert "imagefolder: " in r.stderr


# ---------------------------------------------------------------- device


@pytest.mark.parametrize("device, pattern", [
    ("mps", r"--device mps: MPS \(Apple GPUs\) is not available on this machine"),
    ("cuda", r"--device cuda: CUDA is not available here"),
])
def test_unavailable_device_is_refused_before_anything_runs(device, pattern, tmp_path, capsys):
    import torch

    if (device == "mps" and torch.backends.mps.is_available()) or (device == "cuda" and torch.cuda.is_available()):
        pytest.skip(f"this machine has {device}")
    code = main(["evaluate", "--device", device, *FAST, "--out", str(tmp_path / "o")])
    line = _one_line(capsys)
    assert code == EXIT_USAGE and re.search(pattern, line) and "use --device cpu" in line
    assert not (tmp_path / "o").exists()  # refused before the output directory or the data


def test_python_api_names_the_missing_device():
    import torch

    from mtssad import MultiTaskDetector
    from mtssad.errors import DeviceError

    if torch.backends.mps.is_available():
        pytest.skip("this machine has mps")
    with pytest.raises(DeviceError, match="device 'mps': MPS"):
        MultiTaskDetector(device="mps", backbone="wrn-10-1", grid=(2, 2)).fit(
            __import__("numpy").zeros((4, 1, 16, 16), "uint8"))


# ---------------------------------------------------------------- disk full


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_writing_keeps_old_file_and_says_what_to_do(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["evaluate", "--classes", "0", *FAST, "--out", str(out)]) == 0
    before = (out / "results.parquet").read_bytes()
    capsys.readouterr()
    mp = pytest.MonkeyPatch()
    mp.setattr(os, "fsync", _enospc)  # where a full disk shows up on a buffered write: flush/fsync
    try:
        code = main(["evaluate", "--classes", "0", "1", *FAST, "--out", str(out)])
    finally:
        mp.undo()
    line = _one_line(capsys)
    assert code == EXIT_DISK_FULL
    assert re.search(r"error: disk full while writing .*/scores/digits_1_iforest_.*\.parquet \(.*No space left on "
                     r"device\); the file was not written; free space on that disk or pass --out on another disk \(1 "
                     r"finished row\(s\) are saved in .*results.parquet\)", line), line
    assert (out / "results.parquet").read_bytes() == before and _no_tmp_files(out)


def test_disk_full_is_an_oserror_for_python_callers(tmp_path, monkeypatch):
    from mtssad.errors import DiskFullError
    from mtssad.results import atomic_write_bytes

    atomic_write_bytes(tmp_path / "f", b"old")
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(DiskFullError, match=r"disk full while writing .*f \(.*\); the previous version of the file "
                                            r"is kept") as e:
        atomic_write_bytes(tmp_path / "f", b"new")
    assert isinstance(e.value, OSError) and e.value.exit_code == EXIT_DISK_FULL
    assert (tmp_path / "f").read_bytes() == b"old" and _no_tmp_files(tmp_path)


# ---------------------------------------------------------------- out of memory


def _oom_errors():
    import torch

    return {
        "torch.OutOfMemoryError (CUDA)": torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 61.04 GiB"),
        "CPU allocator": RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough "
                                      "memory: you tried to allocate 65536000000 bytes."),
        "MemoryError": MemoryError(),
    }


@pytest.mark.parametrize("kind", ["torch.OutOfMemoryError (CUDA)", "CPU allocator", "MemoryError"])
def test_out_of_memory_names_the_settings_to_lower(kind, tmp_path, capsys, monkeypatch):
    import mtssad.protocols

    err = _oom_errors()[kind]

    def boom(*a, **k):
        raise err

    monkeypatch.setattr(mtssad.protocols, "one_vs_all", boom)
    code = main(["evaluate", "--classes", "0", "--methods", "ours", "--grid", "4", "4", "--k", "5000",
                 "--max-train", "200", "--max-test", "100", "-q", "--out", str(tmp_path / "o")])
    line = _one_line(capsys)
    assert code == EXIT_OUT_OF_MEMORY
    assert line.startswith("mtssad evaluate: error: out of memory (")
    assert ("--batch-size 32" in line and "--k 5000" in line and "--grid 4x4" in line
            and "lower --k (or --grid), --batch-size or the --backbone width" in line), line


def test_a_bug_is_not_mistaken_for_out_of_memory(tmp_path, monkeypatch):
    import mtssad.protocols

    def bug(*a, **k):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(mtssad.protocols, "one_vs_all", bug)
    with pytest.raises(RuntimeError, match="shape mismatch"):  # a bug keeps its traceback (exit status 1)
        main(["evaluate", "--classes", "0", "--methods", "ours", "--max-train", "200", "--out", str(tmp_path / "o")])


# ---------------------------------------------------------------- Ctrl-C


def test_ctrl_c_says_what_was_saved_and_how_to_resume(tmp_path, capsys, monkeypatch):
    import mtssad.protocols

    real, calls = mtssad.protocols.one_vs_all, []

    def second_run_interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(mtssad.protocols, "one_vs_all", second_run_interrupted)
    out = tmp_path / "o"
    argv = ["evaluate", "--classes", "0", "1", *FAST, "--out", str(out)]
    code = main(argv)
    line = _one_line(capsys)
    assert code == EXIT_INTERRUPTED == 130
    assert line == (f"mtssad evaluate: interrupted (Ctrl-C): 1 finished row(s) are saved in {out}/results.parquet "
                    "(the run in progress is lost); rerun the same command to run only the missing rows")
    monkeypatch.setattr(mtssad.protocols, "one_vs_all", real)
    assert main(argv) == 0
    assert capsys.readouterr().out.count("already in results, skipped") == 1
    assert len(pd.read_parquet(out / "results.parquet")) == 2


# ---------------------------------------------------------------- damaged files


def _evaluated(tmp_path, capsys) -> tuple[Path, str]:
    from mtssad.results import ResultsStore, run_name

    out = tmp_path / "o"
    assert main(["evaluate", "--classes", "0", *FAST, "--out", str(out)]) == 0
    capsys.readouterr()
    return out, run_name(ResultsStore(out).load().iloc[0].to_dict())


def test_corrupt_history_file_is_named_with_the_fix(tmp_path, capsys):
    out, name = _evaluated(tmp_path, capsys)
    bad = out / "history" / f"{name}.json"
    bad.parent.mkdir(exist_ok=True)
    bad.write_text('[{"epoch": 0, "loss": 1.')  # cut mid-write by another tool
    code = main(["report", str(out)])
    line = _one_line(capsys, "report")
    assert code == EXIT_BAD_FILE
    assert f"error: {bad} is not a readable JSON side file" in line
    assert f"delete it and run `mtssad report {out}` again" in line and "--overwrite" in line


def test_corrupt_scores_file_is_named_with_the_fix(tmp_path, capsys):
    out, name = _evaluated(tmp_path, capsys)
    bad = out / "scores" / f"{name}.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    code = main(["report", str(out)])
    line = _one_line(capsys, "report")
    assert code == EXIT_BAD_FILE
    assert f"error: {bad} is not a readable scores file" in line and f"mtssad report {out}" in line


def test_corrupt_results_file_is_named_with_the_fix(tmp_path, capsys):
    out, _ = _evaluated(tmp_path, capsys)
    (out / "results.parquet").write_bytes(b"garbage")
    for argv in (["report", str(out)], ["evaluate", "--classes", "0", *FAST, "--out", str(out)]):
        code = main(argv)
        line = _one_line(capsys, argv[0])
        assert code == EXIT_BAD_FILE and "results.parquet is not a readable Parquet results file" in line
        assert "move it aside or delete it" in line


# ---------------------------------------------------------------- sweep: everything checked before Ray


def _sweep_case(tmp_path, case):
    base = ["sweep", "--classes", "0", "--max-train", "200", "--max-test", "100", "--side", "16", "--margin", "1",
            "--grid-search", "2x2", "--k-search", "3", "--local", "--log-level", "error", "--out", str(tmp_path / "sw")]
    if case == "existing sweep without --resume":
        (tmp_path / "sw" / "ray" / "sweep").mkdir(parents=True)
        (tmp_path / "sw" / "ray" / "sweep" / "tuner.pkl").write_bytes(b"")  # what Tuner.can_restore looks for
        return base, r"a sweep named 'sweep' already exists at .*/sw/ray/sweep: pass --resume to finish it"
    (tmp_path / "file").write_text("x")
    return {
        "no valid (grid, k)": (base + ["--k-search", "30"], r"no valid trial: every --grid-search x --k-search pair"),
        "bad backbone": (base + ["--backbone", "resnet"], r"backbone must look like 'wrn-<depth>-<width>'"),
        "class too small": (base + ["--max-train", "20", "--classes", "3"],
                            r"normal class '3' has 2 training image\(s\); one-vs-all needs 3 .*: raise --max-train, "
                            r"or choose other --classes"),
        "unknown class": (base + ["--classes", "12"], r"unknown class '12'"),
        "no validation": (base + ["--val-fraction", "0"], r"--val-fraction must be in \(0, 1\)"),
        "storage not a dir": (base + ["--storage-path", str(tmp_path / "file" / "x")], r"--storage-path .*file/x"),
        "gpus without --use-gpu": (base + ["--gpus-per-trial", "1"], r"--gpus-per-trial needs --use-gpu"),
        "zero workers": (base + ["--num-workers", "0"], r"--num-workers must be >= 1; got 0"),
        "mps": (base + ["--device", "mps"], r"--device mps: MPS"),
    }[case]


@pytest.mark.parametrize("case", ["existing sweep without --resume", "no valid (grid, k)", "bad backbone",
                                  "class too small", "unknown class", "no validation", "storage not a dir",
                                  "gpus without --use-gpu", "zero workers", "mps"])
def test_sweep_validates_everything_before_starting_ray(case, tmp_path, capsys, monkeypatch):
    import mtssad.distributed.cli as dcli

    entered = []  # a session fixture's Ray may be up already: check that this sweep never asked for one
    monkeypatch.setattr(dcli, "ray_session", lambda *a, **k: entered.append(1) or pytest.fail("Ray was started"))
    argv, pattern = _sweep_case(tmp_path, case)
    code = main(argv)
    line = _one_line(capsys, "sweep")
    assert code == EXIT_USAGE and re.search(pattern, line), line
    assert not entered  # nothing was started


def test_ray_console_keeps_ray_messages_in_the_log_file(tmp_path, capsys):
    import logging

    from mtssad.distributed.raylog import ray_console
    from mtssad.logs import configure

    configure("INFO")
    with ray_console(str(tmp_path / "sweep.log"), verbose=False):
        assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"
        logging.getLogger("ray.tune").info("Wrote the latest version of all result files")
        logging.getLogger("ray").warning("Token authentication is enabled")
        logging.getLogger("mtssad.distributed.tune").info("trial 1/1 done")
    err = capsys.readouterr().err
    assert "Wrote the latest" not in err and "Token" not in err and "trial 1/1 done" in err
    text = (tmp_path / "sweep.log").read_text()
    assert "Wrote the latest" in text and "Token authentication" in text and "trial 1/1 done" in text
    assert "RAY_AIR_NEW_OUTPUT" not in os.environ or os.environ["RAY_AIR_NEW_OUTPUT"] != "0"
    assert all(h.level < logging.ERROR for h in logging.getLogger("ray").handlers)  # restored


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(600)
def test_sweep_console_shows_no_ray_noise_and_a_second_sweep_names_resume(tmp_path):
    """A real 1-trial sweep in its own process: the console has mtssad's lines only; Ray's go to files."""
    argv = [sys.executable, "-m", "mtssad.cli", "sweep", "--classes", "0", "--max-train", "200", "--max-test", "100",
            "--epochs", "1", "--backbone", "wrn-10-1", "--side", "16", "--margin", "1", "--grid-search", "2x2",
            "--k-search", "3", "--no-task-search", "--local", "--num-cpus", "2", "--out", str(tmp_path / "sw")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(argv, capture_output=True, text=True, timeout=580, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    console = r.stdout + r.stderr
    for noise in ("TrainingReport(", "PlacementGroupCleaner", "PreemptionWatcher", "Configuration for experiment",
                  "View detailed results", "Started a local Ray instance", "Wrote the latest version"):
        assert noise not in console, noise
    assert "[1/1 configs] class 0 / ours 2x2 k=3" in r.stderr and "test AUROC" in r.stdout
    log = (tmp_path / "sw" / "sweep.log").read_text()
    assert "Started a local Ray instance" in log
    again = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert again.returncode == EXIT_USAGE and "pass --resume to finish it" in again.stderr


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_real_sigint_during_evaluate_exits_130_with_one_line(tmp_path):
    """Ctrl-C for real (SIGINT to the process) after the first row: status 130, one line, rows kept."""
    import signal
    import time

    out = tmp_path / "o"
    argv = [sys.executable, "-m", "mtssad.cli", "evaluate", "--classes", "0", "1", "2", "--max-train", "300",
            "--max-test", "90", "--side", "16", "--epochs", "1", "--backbone", "wrn-10-1", "--grid", "2", "2",
            "--margin", "1", "-q", "--out", str(out)]
    # SIGINT's default action in the child, as in a terminal: a test run started in the background (`cmd &` in a
    # script) ignores SIGINT, its children inherit that, and Python then installs no KeyboardInterrupt handler
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), "MTSSAD_DEBUG": ""},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300
        while not (out / "results.parquet").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(
        r"mtssad evaluate: interrupted \(Ctrl-C\): [12] finished row\(s\) are saved in .*results.parquet \(the run "
        r"in progress is lost\); rerun the same command to run only the missing rows", lines[0]), stderr
    assert 1 <= len(pd.read_parquet(out / "results.parquet")) <= 2
