"""The CUB-200 sweep's wall time on N GPUs, projected from benchmarks/gpu.py's measured figures.

    python benchmarks/cub_projection.py [--gpu-json benchmarks/results/gpu.json] [--tflops 40] [--gpus 8]

Every term is printed as MEASURED (read from gpu.json, an H200 run), SET (the sweep's settings:
200 classes, grids 2x2 3x3 4x4 x k 3 6 12 + the geometric-only config of the task search, 300 steps
of 24 images a config, the test split scored once per class) or ASSUMED (what no machine here could
measure: an A10G's sustained bfloat16 rate on these convolutions, its host's speed, node start-up).
Training FLOPs are the counted FLOPs of one step (torch.utils.flop_counter, per k) x steps; a step is
the slower of its device time (FLOPs / the assumed rate) and its host time (the H200 host's measured
enqueue time, x the assumed host slowdown, shared by the trials on one GPU). Writes cub_projection.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpu-json", default=str(HERE / "results" / "gpu.json"))
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--trials-per-gpu", type=int, default=2, help="the CUB job's --gpus-per-trial 0.5")
    p.add_argument("--tflops", type=float, default=40.0,
                   help="ASSUMED sustained bfloat16 TFLOPS of one A10G on WRN-16-4 (125 peak dense; 32%%)")
    p.add_argument("--host-slowdown", type=float, default=1.3, help="ASSUMED: a g5 node's CPU vs the H200 host")
    p.add_argument("--node-start-min", type=float, default=5.0, help="ASSUMED: GPU nodes launched and ready")
    p.add_argument("--out", default=str(HERE / "results" / "cub_projection.md"))
    args = p.parse_args(argv)
    gpu = json.loads(Path(args.gpu_json).read_text())
    steps = {r["k"]: r for r in gpu["steps"] if r.get("shape", "").startswith("cub") and r.get("precision") == "bfloat16"
             and r.get("channels_last") and not r.get("compile") and "error" not in r}
    classes, step_budget, ks, grids = 200, 300, (3, 6, 12), 3
    gflop = {k: steps[k]["gflop_per_step"] for k in ks}  # MEASURED (counted)
    gflop_geo = gflop[3] * 8 / 11  # the geometric-only config: 8 of the 11 variants of k = 3 (SET x MEASURED)
    trial = {r["min_steps"]: r for r in gpu.get("class_trial", [])}
    t300 = trial.get(step_budget)
    # Host time of a step inside a class trial (one-step epochs carry the loop's per-epoch work), MEASURED
    # on the H200's host; the isolated step's host time where no trial was measured.
    trial_ms = 1e3 * t300["train_seconds"] / (t300["configs"] * step_budget) if t300 else None
    host_ms = {k: max(steps[k]["host_ms_per_step"], trial_ms or 0.0) * args.host_slowdown for k in ks}  # x ASSUMED
    host_geo = host_ms[3] * 8 / 11

    def step_s(g, h):  # a step on one GPU shared by trials_per_gpu trials: device-bound or host-bound
        return max(g / (args.tflops * 1e3), h / 1e3 / args.trials_per_gpu)

    per_class = step_budget * (grids * sum(step_s(gflop[k], host_ms[k]) for k in ks) + step_s(gflop_geo, host_geo))
    train_s = classes * per_class / args.gpus
    n_test, test_variants = 5794, 8 + 7  # SET: CUB's test split, the best config's variants (mean k = 7)
    fwd_gflop = gflop[3] / 3 / (24 * 11)  # one forward of one input: a step is ~3 forwards (fwd + bwd) of 24 x 11
    test_s = classes * n_test * test_variants * fwd_gflop / (args.tflops * 1e3) / args.gpus
    sel_s = classes * 10 * 36 * test_variants * fwd_gflop / (args.tflops * 1e3) / args.gpus  # 6 + 30 images a config
    overhead_s = classes * 10 * 0.6 / (args.gpus * args.trials_per_gpu)  # MEASURED on CPU: Tune + trial per config
    total_min = (train_s + test_s + sel_s + overhead_s) / 60
    lines = [f"# CUB-200 sweep on {args.gpus} GPUs, projected from measured figures", "",
             f"`python benchmarks/cub_projection.py --tflops {args.tflops:g} --gpus {args.gpus}` from `{Path(args.gpu_json).name}` "
             f"({gpu['gpu']}, torch {gpu['torch']}).", "",
             "| term | value | kind |", "|---|---|---|",
             f"| configs | {classes} classes x ({grids} grids x k {'/'.join(map(str, ks))} + geometric) = {classes * 10} | SET |",
             f"| steps a config | {step_budget} (24 fit images: one step an epoch; the fine-grained budget, METHOD.md) | SET |",
             f"| FLOPs of a step, WRN-16-4, batch 24 | k=3 {gflop[3]:.0f}, k=6 {gflop[6]:.0f}, k=12 {gflop[12]:.0f} GFLOP; "
             f"geometric {gflop_geo:.0f} | MEASURED (counted) |",
             f"| host time a step (bfloat16, channels_last) | k=3 {steps[3]['host_ms_per_step']:.1f}, k=6 "
             f"{steps[6]['host_ms_per_step']:.1f}, k=12 {steps[12]['host_ms_per_step']:.1f} ms alone, "
             f"{trial_ms or float('nan'):.1f} ms a step inside a class trial, on the H200's host (the larger is used) | MEASURED |",
             f"| host slowdown of a g5 node | x{args.host_slowdown:g} | ASSUMED |",
             f"| A10G sustained bfloat16 rate | {args.tflops:g} TFLOPS ({args.tflops / 125:.0%} of 125 peak) | ASSUMED |",
             f"| a step on an A10G shared by {args.trials_per_gpu} trials | k=3 {1e3 * step_s(gflop[3], host_ms[3]):.1f}, "
             f"k=6 {1e3 * step_s(gflop[6], host_ms[6]):.1f}, k=12 {1e3 * step_s(gflop[12], host_ms[12]):.1f} ms "
             "(device-bound where FLOPs/rate > host/trials) | derived |",
             f"| training | {train_s / 60:.1f} min ({classes} x {per_class:.0f} GPU-s / {args.gpus} GPUs) | derived |",
             f"| test scoring, once per class trial | {test_s / 60:.1f} min | derived (FLOPs MEASURED, rate ASSUMED) |",
             f"| selection scoring, every config | {sel_s / 60:.2f} min | derived |",
             f"| Tune and trial overhead, 0.6 s a config | {overhead_s / 60:.1f} min | MEASURED on CPU (sweep_overhead.md) |",
             f"| **sweep, nodes up** | **{total_min:.0f} min** | |",
             f"| GPU nodes launched and ready | + {args.node_start_min:g} min | ASSUMED |", ""]
    if t300:
        n = t300["configs"]
        lines += [f"Cross-check, MEASURED: one CUB-sized class trial ({n} configs, 300 steps, generated data) took "
                  f"{t300['trial_seconds']:.1f} s on the H200 ({trial_ms:.1f} ms a step, host-bound), so 8 H200s with "
                  f"2 trials each would take {classes * t300['trial_seconds'] * 10 / n / (args.gpus * 2) / 60:.0f} min "
                  "(2 processes on one H200 ran 2.1x one: benchmarks/results/gpu.md).", ""]
    def minutes_at(r: float) -> float:
        per = step_budget * (grids * sum(max(gflop[k] / (r * 1e3), host_ms[k] / 1e3 / args.trials_per_gpu) for k in ks)
                             + max(gflop_geo / (r * 1e3), host_geo / 1e3 / args.trials_per_gpu))
        return (classes * per / args.gpus + (test_s + sel_s) * args.tflops / r + overhead_s) / 60

    needed = next((r / 2 for r in range(20, 400) if minutes_at(r / 2) <= 30), None)
    lines += ["The assumed rate decides it: " + ", ".join(f"{r} TFLOPS -> {minutes_at(r):.0f} min" for r in (25, 40, 60)) +
              (f". The target (<= 30 min, nodes up) holds from {needed:g} TFLOPS sustained" if needed else "") +
              "; measure it on the first real run (`python benchmarks/gpu.py --out OUTDIR` on one g5 node, ~5 minutes) "
              "before trusting this row.", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
