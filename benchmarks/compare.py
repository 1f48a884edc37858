"""Do the committed benchmark results match a rerun? Key figures side by side, with a verdict.

    MTSSAD_BENCH_RESULTS=/tmp/rerun python benchmarks/scoring.py --quick   # rerun into another folder
    python benchmarks/compare.py benchmarks/results /tmp/rerun             # committed vs rerun

Only the figures the benchmarks make claims with are compared: ratios taken within
one run (speedups, overheads, memory growth), because absolute seconds move with the
machine's load. A figure matches when rerun/committed is within --tolerance
(relative); a target-style figure also reports whether both runs meet the target.
Writes OUT/compare.md (OUT = the rerun folder) and prints it; exit status 1 when a
figure does not match or a result file is missing on one side.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _rows(d: dict, **match) -> list[dict]:
    return [r for r in d["rows"] if all(r.get(k) == v for k, v in match.items())]


def figures(name: str, d: dict) -> dict[str, float]:
    """Benchmark file -> {figure name: value} for the figures its claims rest on."""
    out: dict[str, float] = {}
    if name == "scoring":
        for r in _rows(d, method="ours"):
            out[f"speedup_vs_mhrot {r['backbone']}"] = r["speedup_vs_mhrot"]
    elif name == "transforms":
        for r in d["rows"]:
            if r["what"].startswith("ours plan.make"):
                out[f"pct_of_forward: {r['what']}"] = r["pct_of_forward"]
    elif name.startswith("profile_hot_paths"):
        for r in d["rows"]:
            out[f"channels_last speedup {r['backbone']} {r['path']}"] = r["speedup"]
    elif name == "training":
        for r in d["rows"]:
            if r["way"] != "local":
                out[f"epoch_vs_local {r['way']}"] = r["epoch_vs_local"]
    elif name == "ray_scoring":
        for r in d["rows"]:
            if r["way"] != "local":
                out[f"wall_vs_local {r['way']}"] = r["wall_vs_local"]
    elif name == "scoring_memory":
        out["peak_rss 20k vs 2k"] = d["rows"][-1]["peak_vs_2k"]
    elif name == "sweep_overhead":
        for design, summ in d.get("settings", {}).get("summary", {}).items():
            out[f"sweep fixed_s_per_config {design}"] = summ["fixed_s_per_config"]
            if summ.get("compute_share_of_class_trials") is not None:
                out[f"sweep compute_share_of_class_trials {design}"] = summ["compute_share_of_class_trials"]
    elif name.startswith("score_options"):
        for r in d["rows"]:
            if r["class"] == "**mean**":
                for k, v in r.items():
                    if "/" in k:
                        out[f"{r['dataset']} mean AUROC {k}"] = v
    return out


# Figures with a target: (name prefix, test on the value)
TARGETS = {
    "speedup_vs_mhrot": lambda v: v >= 3.0,
    "pct_of_forward": lambda v: v <= 10.0,
    "epoch_vs_local ray-1w": lambda v: v <= 1.10,
    "wall_vs_local ray-1a": lambda v: v <= 1.15,
    "peak_rss": lambda v: v <= 1.25,
    "sweep fixed_s_per_config new": lambda v: v <= 1.0,
    "sweep compute_share_of_class_trials new": lambda v: v >= 0.8,
}


def target_of(figure: str):
    return next((test for prefix, test in TARGETS.items() if figure.startswith(prefix)), None)


def compare(committed: Path, rerun: Path, tolerance: float) -> tuple[list[str], bool]:
    lines = ["| benchmark | figure | committed | rerun | rerun/committed | match | target met (committed, rerun) |",
             "|---|---|---|---|---|---|---|"]
    ok = True
    for path in sorted(rerun.glob("*.json")):
        name = path.stem
        old = committed / path.name
        if not old.is_file():
            lines.append(f"| {name} | (no committed result) | | | | no | |")
            ok = False
            continue
        da, db = json.loads(old.read_text()), json.loads(path.read_text())
        a, b = figures(name, da), figures(name, db)
        if da["settings"].get("quick") != db["settings"].get("quick"):
            lines.append(f"| {name} | (committed and rerun differ in --quick: not comparable) | | | | no | |")
            ok = False
            continue
        for fig in sorted(a.keys() | b.keys()):
            va, vb = a.get(fig), b.get(fig)
            if va is None or vb is None:
                lines.append(f"| {name} | {fig} | {va} | {vb} | | no | |")
                ok = False
                continue
            ratio = vb / va if va else float("inf")
            match = abs(ratio - 1) <= tolerance
            test = target_of(fig)
            met = f"{'yes' if test(va) else 'NO'}, {'yes' if test(vb) else 'NO'}" if test else ""
            if test and test(va) and test(vb):
                match = True  # a target figure matches when both runs meet the target, however far apart
            ok &= match
            lines.append(f"| {name} | {fig} | {va:.4g} | {vb:.4g} | {ratio:.3f} | {'yes' if match else 'NO'} | {met} |")
    return lines, ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("committed", type=Path, help="folder of committed results (benchmarks/results)")
    p.add_argument("rerun", type=Path, help="folder a rerun wrote (MTSSAD_BENCH_RESULTS)")
    p.add_argument("--tolerance", type=float, default=0.25, help="allowed |rerun/committed - 1| (default: %(default)s)")
    args = p.parse_args(argv)
    lines, ok = compare(args.committed, args.rerun, args.tolerance)
    text = "\n".join([f"# Committed results vs a rerun (tolerance {args.tolerance:.0%} relative)", "", *lines, "",
                      "Target figures match when both runs meet the target; others when within the tolerance.", ""])
    print(text)
    (args.rerun / "compare.md").write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
