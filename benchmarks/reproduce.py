"""The paper's one-vs-all comparison, every method side by side, at the scale this machine allows.

    python benchmarks/reproduce.py                       # digits + glyphs, CPU settings (stated in the output)
    python benchmarks/reproduce.py --datasets mnist --data-root /data   # any paper data set from a local copy
    python benchmarks/reproduce.py --paper-scale --datasets cifar10 --data-root /data   # WRN-16-4, full data, GPU

Writes benchmarks/results/reproduce_<dataset>.md (the report's tables plus the settings
and wall time) and reproduce_<dataset>.parquet (all rows). Runs are resumable: the
working directory keeps finished rows (benchmarks/results/work/<dataset>/).
Nothing here is tuned on the test split: every setting is fixed before the run.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from mtssad.cli import main as mtssad_main

HERE = Path(__file__).resolve().parent
ALL_METHODS = ["ours", "geometric", "jigsaw", "rotnet", "mhrot", "geotrans", "ocsvm", "iforest"]
CPU_SCALE = {"--backbone": "wrn-10-1", "--epochs": "3", "--min-steps": "300"}
PAPER_SCALE = {"--backbone": "wrn-16-4", "--epochs": "15", "--device": "cuda"}
# Per data set: extra flags at CPU scale (subsets keep a 10-class run within minutes per method).
CPU_DATA = {"digits": [], "glyphs": ["--classes", "DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique",
                                     "DejaVuSerif", "cmr10"]}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["digits", "glyphs"], help="registered data sets")
    p.add_argument("--data-root", default=None, help="local copy of the paper data sets")
    p.add_argument("--methods", nargs="+", default=ALL_METHODS)
    p.add_argument("--paper-scale", action="store_true", help="WRN-16-4, 15 epochs, full data, GPU")
    p.add_argument("--max-train", type=int, default=None, help="subset for CPU runs of the large sets")
    p.add_argument("--max-test", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report-only", action="store_true",
                   help="write reproduce_<dataset>.md from the rows already in the working directory (a partial run)")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `mtssad evaluate` flags")
    return p.parse_args(argv)


def run(args) -> int:
    scale = PAPER_SCALE if args.paper_scale else CPU_SCALE
    for ds in args.datasets:
        work = HERE / "results" / "work" / ds
        argv = ["evaluate", "--dataset", ds, "--methods", *args.methods, "--seed", str(args.seed),
                "--out", str(work), "--quiet"]
        for flag, value in scale.items():
            argv += [flag, value]
        if args.data_root:
            argv += ["--data-root", args.data_root]
        for flag, value in (("--max-train", args.max_train), ("--max-test", args.max_test)):
            if value is not None:
                argv += [flag, str(value)]
        if not args.paper_scale:
            argv += CPU_DATA.get(ds, [])
        argv += args.extra
        print("mtssad " + " ".join(argv), flush=True)
        t0 = time.perf_counter()
        code = mtssad_main(["report", str(work)] if args.report_only else argv)
        wall = time.perf_counter() - t0
        if code != 0:
            return code
        settings = (f"Settings: `mtssad {' '.join(argv)}`  \n"
                    f"Scale: {'paper (WRN-16-4, GPU)' if args.paper_scale else 'CPU: WRN-10-1, 3 epochs and at least 300 steps, data subsets as listed'}; "
                    f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
                    f"{'GPU ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}; "
                    f"wall time of this invocation {wall:.0f} s (rows already present were skipped, see train/score seconds)."
                    + (" **Partial run**: classes a method has not reached are missing (see `n/N classes`)." if args.report_only else "")
                    + "\n\n")
        report = (work / "report.md").read_text()
        out_md = HERE / "results" / f"reproduce_{ds}.md"
        out_md.write_text(f"# Reproduction: {ds}\n\n{settings}{report}")
        shutil.copyfile(work / "results.parquet", HERE / "results" / f"reproduce_{ds}.parquet")
        print(f"{out_md} ({wall:.0f} s)")
        print(report.split("### All metrics")[0])
    return 0


if __name__ == "__main__":
    sys.exit(run(parse_args()))
