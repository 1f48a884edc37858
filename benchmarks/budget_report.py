"""The budget table from benchmarks/budget.py's trajectories: every fixed budget and stopping rule, replayed.

    python benchmarks/budget_report.py OUTDIR/budget_trajectories.json [--cpu-costs benchmarks/results/cpu_step_costs.json]

A rule is replayed on one trajectory (one fit, measured every eval_every steps):
  fixed-H            the last point of the horizon-H fit (cosine learning rate over H steps);
  <monitor>-p<P>-H   early stopping on val_auroc (higher is better) or val_loss (lower is better) over
                     the horizon-H fit: stop after P measurements without improvement, keep the best
                     measurement's weights (what `DetectorConfig(early_stopping=..., patience=P)` does).
Each rule is judged on the selection AUROC (the sweep's validation set) and the steps it trains; test
AUROC is printed beside, never used. Per data set and method: class-mean per seed, then mean +- sd over
seeds. "ours, tasks chosen on validation" takes, per (class, seed), ours or geometric, whichever has the
higher selection AUROC under the same rule (ties: ours). CPU seconds per fit, when --cpu-costs is given,
are estimated from measured per-step and per-measurement CPU costs (benchmarks/cpu_step_costs.py) times
the steps and measurements of the rule; the trajectories themselves may come from a GPU.
Writes budget_<datasets>.md / .json beside the input, or to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

TIE = 1e-9
LOWER = {"val_loss"}


def replay(traj: list[dict], monitor: str | None, patience: float) -> dict:
    """(kept point, steps trained, measurements) of a rule on one trajectory; monitor None = the last point."""
    if monitor is None:
        return {"kept": traj[-1], "steps_trained": traj[-1]["steps"], "measurements": 0}
    best, bad = None, 0
    for i, p in enumerate(traj):
        v = p.get(monitor, math.nan)
        better = v == v and (best is None or (v < best[monitor] - TIE if monitor in LOWER else v > best[monitor] + TIE))
        if better:
            best, bad = p, 0
        else:
            bad += 1
        if bad >= patience:
            return {"kept": best or p, "steps_trained": p["steps"], "measurements": i + 1}
    return {"kept": best or traj[-1], "steps_trained": traj[-1]["steps"], "measurements": len(traj)}


def rules_of(horizons: list[int], patiences=(1, 2, 4)) -> dict[str, tuple]:
    """name -> (horizon, monitor, patience)."""
    rules = {f"fixed-{h}": (h, None, math.inf) for h in sorted(horizons)}
    top = max(horizons)
    for monitor in ("val_auroc", "val_loss"):
        for p in patiences:
            rules[f"{monitor}-p{p}-{top}"] = (top, monitor, p)
    return rules


def mean_sd(values) -> tuple[float, float]:
    v = np.asarray(values, float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def fmt(ms: tuple[float, float], scale: float = 100.0) -> str:
    return f"{scale * ms[0]:.1f} +- {scale * ms[1]:.1f}"


def build(results: list[dict], cpu_costs: dict | None) -> tuple[list[dict], list[dict]]:
    """(per rule rows, per (rule, dataset, class, seed) choices of the task set)."""
    runs = {(r["dataset"], r["normal_class"], r["method"], r["seed"], r["horizon"]): r for r in results}
    horizons = sorted({r["horizon"] for r in results})
    table, picks = [], []
    for name, (h, monitor, patience) in rules_of(horizons).items():
        cells = defaultdict(dict)  # (dataset, method) -> {(class, seed): outcome}
        for (ds, c, method, seed, hh), r in runs.items():
            if hh != h:
                continue
            out = replay(r["trajectory"], monitor, patience)
            cost = (cpu_costs or {}).get(f"{ds}/{method}")
            cpu_s = None
            if cost:
                cpu_s = out["steps_trained"] * cost["seconds_per_step"] + out["measurements"] * cost["seconds_per_measurement"]
            cells[(ds, method)][(c, seed)] = {"val": out["kept"]["selection_auroc"], "test": out["kept"]["test_auroc"],
                                               "steps": out["steps_trained"], "kept_step": out["kept"]["steps"],
                                               "cpu_s": cpu_s}
        for ds in sorted({k[0] for k in cells}):
            ours, geo = cells.get((ds, "ours"), {}), cells.get((ds, "geometric"), {})
            both = sorted(set(ours) & set(geo))
            if both:
                chosen = {}
                for key in both:
                    keep_jigsaw = not geo[key]["val"] > ours[key]["val"] + TIE
                    both_cpu = (None if ours[key]["cpu_s"] is None or geo[key]["cpu_s"] is None
                                else ours[key]["cpu_s"] + geo[key]["cpu_s"])  # the choice needs both fits
                    chosen[key] = dict(ours[key] if keep_jigsaw else geo[key], jigsaw=keep_jigsaw, cpu_s=both_cpu)
                    picks.append({"rule": name, "dataset": ds, "normal_class": key[0], "seed": key[1],
                                  "jigsaw_kept": keep_jigsaw, "ours_val": ours[key]["val"], "geometric_val": geo[key]["val"]})
                cells[(ds, "ours[tasks on val]")] = chosen
            for (d2, method), cell in sorted(cells.items()):
                if d2 != ds:
                    continue
                seeds = sorted({s for _, s in cell})
                per_seed = {s: [v for (c, ss), v in cell.items() if ss == s] for s in seeds}
                row = {"rule": name, "dataset": ds, "method": method, "n": len(cell), "seeds": seeds,
                       "val": mean_sd([np.mean([v["val"] for v in vs]) for vs in per_seed.values()]),
                       "test": mean_sd([np.mean([v["test"] for v in vs]) for vs in per_seed.values()]),
                       "steps": float(np.mean([v["steps"] for v in cell.values()])),
                       "kept_step": float(np.mean([v["kept_step"] for v in cell.values()])),
                       "cpu_s": float(np.mean([v["cpu_s"] for v in cell.values()])) if all(
                           v["cpu_s"] is not None for v in cell.values()) else None}
                if method == "ours[tasks on val]":
                    row["jigsaw_kept"] = int(sum(v["jigsaw"] for v in cell.values()))
                for ref in ("ours", "geometric"):
                    other = cells.get((ds, ref), {})
                    common = sorted(set(other) & set(cell))
                    if method != ref and common:
                        diffs = [np.mean([cell[k]["test"] - other[k]["test"] for k in common if k[1] == s]) for s in seeds]
                        row[f"test_minus_{ref}"] = mean_sd(diffs)
                        row[f"wins_vs_{ref}"] = (sum(cell[k]["test"] > other[k]["test"] + TIE for k in common), len(common))
                table.append(row)
    return table, picks


def render(table: list[dict], meta: dict) -> str:
    lines = [f"# Training budget: fixed budgets and stopping rules ({', '.join(meta['datasets'])})", "",
             f"`python benchmarks/budget.py {meta['argv']}` then `python benchmarks/budget_report.py ...`. "
             f"{meta['backbone']}, {meta['n_fits']} fits ({meta['device']}), measured every {meta['eval_every']} steps. "
             "val = selection AUROC (held-out normals + 5x other-class training images: what a sweep selects on), "
             "test = test AUROC (beside, never used to choose); class mean per seed, mean +- sd over seeds; "
             "steps = optimizer steps trained (mean per fit), kept = steps of the weights kept. "
             + (f"CPU s = estimated seconds per fit on one thread of the 2-CPU machine ({meta['cpu_note']})."
                if meta.get("cpu_note") else ""), ""]
    for ds in meta["datasets"]:
        lines += [f"## {ds}", "", "| rule | method | val AUROC % | test AUROC % | steps | kept | CPU s / fit | "
                  "test - ours | test - geometric |", "|---|---|---|---|---|---|---|---|---|"]
        for r in table:
            if r["dataset"] != ds:
                continue
            extra = f" (jigsaw kept {r['jigsaw_kept']}/{r['n']})" if "jigsaw_kept" in r else ""
            d_ours = (f"{fmt(r['test_minus_ours'])} ({r['wins_vs_ours'][0]}/{r['wins_vs_ours'][1]})"
                      if "test_minus_ours" in r else "")
            d_geo = (f"{fmt(r['test_minus_geometric'])} ({r['wins_vs_geometric'][0]}/{r['wins_vs_geometric'][1]})"
                     if "test_minus_geometric" in r else "")
            cpu = f"{r['cpu_s']:.0f}" if r["cpu_s"] is not None else "-"
            lines.append(f"| {r['rule']} | {r['method']}{extra} | {fmt(r['val'])} | {fmt(r['test'])} | "
                         f"{r['steps']:.0f} | {r['kept_step']:.0f} | {cpu} | {d_ours} | {d_geo} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trajectories", help="budget_trajectories.json of benchmarks/budget.py")
    p.add_argument("--cpu-costs", default=None, help="JSON of benchmarks/cpu_step_costs.py (optional)")
    p.add_argument("--out", default=None, help="folder for budget_<datasets>.md/.json (default: beside the input)")
    args = p.parse_args(argv)
    data = json.loads(Path(args.trajectories).read_text())
    results = data["results"]
    if not results:
        print(f"{args.trajectories}: no finished fit", file=sys.stderr)
        return 2
    cpu = json.loads(Path(args.cpu_costs).read_text()) if args.cpu_costs else None
    table, picks = build(results, cpu["costs"] if cpu else None)
    datasets = sorted({r["dataset"] for r in results})
    a = data["args"]
    meta = {"datasets": datasets, "backbone": a["backbone"], "eval_every": a["eval_every"], "n_fits": len(results),
            "device": sorted({r["device"] for r in results}),
            "argv": " ".join(f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                             for k, v in a.items() if v not in (None, False) and k not in ("data_cache", "quick")),
            "cpu_note": cpu.get("note") if cpu else None}
    md = render(table, meta)
    out = Path(args.out) if args.out else Path(args.trajectories).parent
    stem = f"budget_{'_'.join(datasets)}"
    (out / f"{stem}.md").write_text(md)
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "table": table, "choices": picks}, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
