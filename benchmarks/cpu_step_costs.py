"""CPU cost of one training step and one early-stopping measurement, per data set and method (one thread).

    python benchmarks/cpu_step_costs.py [--steps 10] [--out benchmarks/results]

The unit costs budget_report.py multiplies by a rule's steps and measurements to give seconds per fit
on this machine's CPU (the trajectories themselves may come from a GPU). Each figure is the median of
`--repeat` timed runs of `--steps` steps of `mtssad.train.train_step` on a real class of the data set
(WRN-10-1, batch 32, the method's plan), and of `mtssad.stopping.held_out_metrics` on that class's
held-out images only (what an online rule measures; the study's selection and test sets are not). Writes
cpu_step_costs.json / .md with the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["digits", "glyphs"])
    p.add_argument("--methods", nargs="+", default=["ours", "geometric", "jigsaw"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args(argv)
    import torch

    from budget import GLYPH_FONTS, load
    from mtssad.methods import make_method
    from mtssad.protocols import one_vs_all_data
    from mtssad.stopping import held_out_metrics
    from mtssad.train import prepare_training, seed_everything, train_step

    torch.set_num_threads(1)
    load_before = os.getloadavg()
    costs = {}
    for name in args.datasets:
        ds = load(name, None)
        c = ds.class_names.index(GLYPH_FONTS[0]) if name == "glyphs" else 0
        d = one_vs_all_data(ds, c, seed=0)
        X = torch.from_numpy(d.X_fit)
        for method in args.methods:
            det = make_method(method, backbone="wrn-10-1", device="cpu", progress=False)
            gen = seed_everything(0)
            det.init_model(tuple(X.shape[1:]))
            training = prepare_training(det.model_, det.config_, len(X), det.device_)
            y_val = d.y_val.astype(bool)
            X_val = torch.from_numpy(d.X_val)
            measure = held_out_metrics(det.model_, det.plan_, device=det.device_, X_train=X,
                                       normals=X_val[torch.from_numpy(y_val)], X_val=X_val, y_val=y_val)
            step_s, meas_s = [], []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    idx = torch.randint(0, len(X), (32,), generator=gen)
                    train_step(det.model_, det.plan_, X[idx], training.optimizer, device=det.device_, generator=gen)
                step_s.append((time.perf_counter() - t0) / args.steps)
                t0 = time.perf_counter()
                measure()
                meas_s.append(time.perf_counter() - t0)
            costs[f"{name}/{method}"] = {"seconds_per_step": statistics.median(step_s),
                                         "seconds_per_measurement": statistics.median(meas_s), "n_fit": len(X),
                                         "n_test": len(ds.test_images)}
            print(name, method, costs[f"{name}/{method}"], flush=True)
    load_after = os.getloadavg()
    note = (f"one torch thread, median of {args.repeat} x {args.steps} steps, load average "
            f"{load_before[0]:.1f} before / {load_after[0]:.1f} after")
    out = Path(args.out)
    (out / "cpu_step_costs.json").write_text(json.dumps({"note": note, "costs": costs}, indent=1))
    lines = ["# CPU cost per training step and per measurement (WRN-10-1, batch 32)", "",
             f"`python benchmarks/cpu_step_costs.py`: {note}.", "",
             "| data set / method | s / step | s / measurement (the fit's held-out images) |", "|---|---|---|"]
    lines += [f"| {k} | {v['seconds_per_step']:.3f} | {v['seconds_per_measurement']:.2f} |" for k, v in costs.items()]
    (out / "cpu_step_costs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
