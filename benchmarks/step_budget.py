"""How many optimizer steps does a small class need? Validation AUROC against the step budget.

    python benchmarks/step_budget.py --dataset digits --classes 1 2 5 8 --steps 12 50 150 300 600

One `mtssad evaluate` run per budget (`--epochs 1 --min-steps S`, so the fit takes
about S steps) into benchmarks/results/work/step_budget_<dataset>/. The budget is
judged on the VALIDATION AUROC (held-out normals of the training split against
other classes' training images, `val_auroc` in the rows): that is what chooses
the default. The test AUROC is printed beside it for information only.
Writes step_budget_<dataset>.md / .json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mtssad.cli import main as mtssad_main
from mtssad.results import ResultsStore

HERE = Path(__file__).resolve().parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--classes", nargs="+", default=["1", "2", "5", "8"], help="normal classes (the hard digits)")
    p.add_argument("--steps", nargs="+", type=int, default=[12, 50, 150, 300, 600])
    p.add_argument("--methods", nargs="+", default=["ours"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbone", default="wrn-10-1")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    work = HERE / "results" / "work" / f"step_budget_{args.dataset}"
    walls = {}
    rows = []
    for steps in args.steps:
        out = work / f"steps{steps}"
        argv = ["evaluate", "--dataset", args.dataset, "--methods", *args.methods, "--classes", *args.classes,
                "--epochs", "1", "--min-steps", str(steps), "--seed", str(args.seed), "--backbone", args.backbone,
                "--out", str(out), "--quiet"]
        print("mtssad " + " ".join(argv), flush=True)
        t0 = time.perf_counter()
        if mtssad_main(argv) != 0:
            return 1
        walls[steps] = time.perf_counter() - t0
        df = ResultsStore(out).load()
        for method, g in df.groupby("method"):
            rows.append({"steps": steps, "method": method, "val_auroc": 100 * g["val_auroc"].mean(),
                         "test_auroc": 100 * g["auroc"].mean(), "train_s_per_class": g["train_seconds"].mean(),
                         "n_classes": len(g), "wall_s": walls[steps]})
    lines = [f"# Step budget on {args.dataset} (classes {' '.join(args.classes)}, seed {args.seed}, {args.backbone})", "",
             "Mean over the classes. The default budget is chosen on the validation AUROC; test AUROC for information.", "",
             "| method | min_steps | val AUROC % | test AUROC % | train s / class |", "|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['steps']} | {r['val_auroc']:.1f} | {r['test_auroc']:.1f} | "
              f"{r['train_s_per_class']:.0f} |" for r in rows]
    md = "\n".join(lines) + "\n"
    (HERE / "results" / f"step_budget_{args.dataset}.md").write_text(md)
    (HERE / "results" / f"step_budget_{args.dataset}.json").write_text(json.dumps(rows, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
