"""Does multi-task self-supervision beat its ablations? Methods x seeds, paired per class.

    python benchmarks/ablation_seeds.py --dataset digits --methods ours geometric jigsaw --seeds 0 1 2
    python benchmarks/ablation_seeds.py --dataset glyphs --seeds 0 1 2 --classes DejaVuSans cmr10 ...
    python benchmarks/ablation_seeds.py --dataset digits --report-only      # table from the rows so far

Each (seed, method) is one `mtssad evaluate` run (one-vs-all over the classes, the
default step budget unless --extra says otherwise) into benchmarks/results/work/ablation_<dataset>/;
reruns skip finished rows, so the script resumes. Writes ablation_<dataset>.md / .json:
per method the class-mean AUROC of every seed, mean +- sd over seeds, and the paired
per-class difference `ours - <method>` (mean +- sd over seeds, and in how many of the
(class, seed) pairs ours is higher). The seed changes the split (digits and glyphs have no
official one), the validation split, the initialization, the permutations and the batch order.
Nothing is tuned on the test split: every setting is fixed before the run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mtssad.cli import main as mtssad_main
from mtssad.results import ResultsStore

HERE = Path(__file__).resolve().parent
GLYPH_FONTS = ["DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSerif", "DejaVuSerif-Bold",
               "DejaVuSansMono", "STIXGeneral", "STIXGeneralItalic", "cmr10", "cmss10"]  # 10 of the 22, 4 families


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--methods", nargs="+", default=["ours", "geometric", "jigsaw"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--classes", nargs="+", default=None, help="normal classes (default: all; glyphs: 10 fonts)")
    p.add_argument("--backbone", default="wrn-10-1")
    p.add_argument("--tag", default="", help="suffix of the work folder and result files (e.g. a second backbone)")
    p.add_argument("--report-only", action="store_true", help="only write the table from the rows so far")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `mtssad evaluate` flags")
    return p.parse_args(argv)


def run(args) -> int:
    name = f"ablation_{args.dataset}{'_' + args.tag if args.tag else ''}"
    work = HERE / "results" / "work" / name
    classes = args.classes or (GLYPH_FONTS if args.dataset == "glyphs" else None)
    walls = _load_walls(work)
    if not args.report_only:
        for seed in args.seeds:
            for method in args.methods:
                argv = ["evaluate", "--dataset", args.dataset, "--methods", method, "--seed", str(seed),
                        "--backbone", args.backbone, "--out", str(work), "--quiet", *args.extra]
                if classes:
                    argv += ["--classes", *classes]
                print("mtssad " + " ".join(argv), flush=True)
                t0 = time.perf_counter()
                code = mtssad_main(argv)
                if code != 0:
                    return code
                walls.setdefault(f"{method}/{seed}", time.perf_counter() - t0)  # first (full) run's wall time
                _save_walls(work, walls)
    frame = ResultsStore(work).load()
    md, summary = ablation_table(frame, args.methods, walls, dataset=args.dataset)
    (HERE / "results" / f"{name}.md").write_text(md)
    (HERE / "results" / f"{name}.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    print(md)
    return 0


def _load_walls(work: Path) -> dict:
    path = work / "walls.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _save_walls(work: Path, walls: dict) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / "walls.json").write_text(json.dumps(walls, indent=1, sort_keys=True))


def ablation_table(frame: pd.DataFrame, methods, walls: dict, *, dataset: str) -> tuple[str, dict]:
    """Markdown table + summary dict from result rows (dataset, normal_class, method, seed, auroc)."""
    df = frame[frame["dataset"] == dataset]
    methods = [m for m in methods if m in set(df["method"])]
    # (class, seed) -> AUROC per method, only pairs every listed method has
    wide = df.pivot_table(index=["normal_class", "seed"], columns="method", values="auroc", aggfunc="last")
    wide = wide[methods].dropna()
    seeds = sorted(wide.index.get_level_values("seed").unique())
    per_seed = wide.groupby(level="seed").mean() * 100  # (seeds, methods): class-mean AUROC %
    n_classes = wide.groupby(level="seed").size()
    lines = [f"# {dataset}: ours vs its ablations and baselines, {len(seeds)} seed(s)", "",
             f"Class-mean AUROC % over the {int(n_classes.min()) if len(n_classes) else 0} normal classes that every "
             "listed method finished on every seed; mean +- sd over seeds (sd: sample, ddof=1).", "",
             "| seed | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for s in seeds:
        lines.append(f"| {s} | " + " | ".join(f"{per_seed.loc[s, m]:.1f}" for m in methods) + " |")
    mean, sd = per_seed.mean(), per_seed.std(ddof=1) if len(seeds) > 1 else per_seed.mean() * np.nan
    lines.append("| **mean +- sd** | " + " | ".join(f"**{mean[m]:.1f} +- {sd[m]:.1f}**" for m in methods) + " |")
    summary = {"dataset": dataset, "seeds": [int(s) for s in seeds], "n_classes": int(n_classes.min()) if len(n_classes) else 0,
               "mean": {m: float(mean[m]) for m in methods}, "sd": {m: float(sd[m]) for m in methods},
               "per_seed": {m: [float(per_seed.loc[s, m]) for s in seeds] for m in methods}, "paired": {}}
    if "ours" in methods:
        lines += ["", "Paired per-class difference ours - method (AUROC points): mean over classes per seed, then "
                  "mean +- sd over seeds; `wins` = (class, seed) pairs where ours is higher / all pairs.", "",
                  "| method | per seed | mean +- sd | wins |", "|---|---|---|---|"]
        for m in methods:
            if m == "ours":
                continue
            diff = (wide["ours"] - wide[m]) * 100
            by_seed = diff.groupby(level="seed").mean()
            wins, total = int((diff > 0).sum()), int(len(diff))
            sd_d = by_seed.std(ddof=1) if len(by_seed) > 1 else float("nan")
            lines.append(f"| {m} | {', '.join(f'{v:+.1f}' for v in by_seed)} | {by_seed.mean():+.1f} +- {sd_d:.1f} | "
                         f"{wins}/{total} |")
            summary["paired"][m] = {"per_seed": [float(v) for v in by_seed], "mean": float(by_seed.mean()),
                                    "sd": float(sd_d), "wins": wins, "pairs": total}
    lines += ["", "Per class (mean over seeds, AUROC %):", "",
              "| class | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    per_class = wide.groupby(level="normal_class").mean() * 100
    for c, row in per_class.iterrows():
        lines.append(f"| {c} | " + " | ".join(f"{row[m]:.1f}" for m in methods) + " |")
    if walls:
        lines += ["", "Wall time per `mtssad evaluate` run (all classes of one method and seed, 2 CPUs shared with "
                  "other work, see the closing note):", "",
                  "| method/seed | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in sorted(walls.items())]
        summary["walls"] = walls
    return "\n".join(lines) + "\n", summary


if __name__ == "__main__":
    sys.exit(run(parse_args()))
