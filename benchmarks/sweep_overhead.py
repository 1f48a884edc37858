"""Fixed cost per config of the Tune sweep, class trials vs a TorchTrainer per config; the CUB-200 projection.

A real `mtssad.distributed.run_sweep` on a CUB-like tiny setting: scikit-learn digits at
1x32x32 with ~30 training images per class (max_train=300: each class fits on 24 images),
100 test images, WRN-10-1, grid 2x2, min_steps=0 (a fixed, small training budget: what is
measured is the cost around it). The same configs run twice on a 2-CPU local Ray, one class
trial at a time so the timings do not overlap:

* new: class trials (one Tune trial per class trains its configs in its process, 2 CPUs);
* ray_train: the same class trials with every config trained through `train_detector_ddp`
  (one TorchTrainer per config, 1 worker of 1 CPU beside the 1-CPU trial): the training path
  of the old design, which also started one Tune trial per config (its committed figure,
  one trial per config, is quoted from the previous run of this benchmark).

Per config (from the rows): epochs_s (the optimizer steps: the history's per-epoch seconds),
fit_s (the whole fit: epochs + per-epoch task diagnostic + BatchNorm recalibration +
calibration; for ray_train also the TorchTrainer's start), val_s (scoring the selection set),
test_s (scoring the test split, when the config was a new best), config_s (the config's wall
in its trial). compute_s = the new run's fit_s + val_s + test_s for that config (the same
computation in both designs). fixed cost per config = (sweep wall - sum of compute_s) / configs:
everything that is not training or scoring -- Tune and trial start, TorchTrainers, reports,
checkpoints, result collection, writing the outputs.

    python benchmarks/sweep_overhead.py [--quick] [--no-ray-train] [--summarize RESULTS_JSON]
"""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
import sys
import tempfile
import time

from _common import machine_info, markdown_table, write_results  # noqa: F401
from training import load_avg, start_local_ray

# (classes, ks, epochs) in full and quick mode: full 5 classes x 2 k = 10 configs, quick 2 classes x 2 k = 4
SIZES = {False: (list(range(5)), [2, 3], 3), True: ([0, 1], [2, 3], 2)}
GRIDS = ["2x2"]
PARAMS = dict(backbone="wrn-10-1", batch_size=32, device="cpu", margin=1, min_steps=0)
OLD_COMMITTED = {"overhead_s_per_config": 21.2, "cycle_s_per_config": 23.0, "date": "2026-11-29 06:50",
                 "load_avg_1min": [2.6, 1.9], "design": "one Tune trial + one TorchTrainer per config"}

# ---- CUB-200 projection assumptions ---------------------------------------------------------------
CUB = dict(classes=200, grids=3, ks=(3, 6, 12), train_per_class=30, val_fraction=0.2, test_images=5794,
           epochs=15, batch_size=32, backbone="wrn-16-4", gflop_fwd_per_image=0.785,  # 3x32x32, torch flop counter
           cluster="8 x A10G (e.g. 8 g5.2xlarge: 1 GPU, 8 vCPU each), class trials of 1 GPU",
           gpus=8, effective_tflops=10.0,  # A10G: 31 TFLOPS fp32 peak; batches of 24 images x 11-20 variants reach ~1/3
           step_launch_s=0.02,  # per optimizer step: kernel launches of a small network on a tiny batch
           val_anomaly_ratio=5, test_scorings_per_class=sum(1 / i for i in range(1, 10)))  # H_9: each new best


def variants(k: int) -> int:
    """Forward passes per image of 'ours' (METHOD.md): identity + 2 + 2 + 3 geometric, 1 + k jigsaw puzzles."""
    return 8 + k


def cub_projection(fixed_s_per_config: float, trial_start_s: float, min_steps: int) -> dict:
    """Wall time of the CUB sweep on the cluster from FLOP counts, the GPU assumption and the measured fixed costs."""
    c = CUB
    n_cfg = c["classes"] * c["grids"] * len(c["ks"])
    n_fit = round(c["train_per_class"] * (1 - c["val_fraction"]))  # 24
    n_held = c["train_per_class"] - n_fit  # 6
    steps_per_epoch = math.ceil(n_fit / c["batch_size"])  # 1
    epochs = max(c["epochs"], math.ceil(min_steps / steps_per_epoch))
    steps = epochs * steps_per_epoch
    v = sum(variants(k) for k in c["ks"]) / len(c["ks"])  # mean forward passes per image over the k grid
    flops = c["effective_tflops"] * 1e12
    g = c["gflop_fwd_per_image"] * 1e9
    train_s = steps * n_fit * v * 3 * g / flops + steps * c["step_launch_s"]  # fwd + bwd ~ 3x fwd
    diag_s = epochs * 2 * n_held * v * g / flops  # per-epoch task diagnostic on the validation split
    calib_s = (2 * n_fit + n_held) * v * g / flops  # BatchNorm recalibration + calibration
    val_s = n_held * (1 + c["val_anomaly_ratio"]) * v * g / flops  # the selection set
    test_s = c["test_scorings_per_class"] / (c["grids"] * len(c["ks"])) * c["test_images"] * v * g / flops
    compute_s = train_s + diag_s + calib_s + val_s + test_s
    per_cfg = compute_s + fixed_s_per_config + trial_start_s / (c["grids"] * len(c["ks"]))
    hours = n_cfg * per_cfg / c["gpus"] / 3600
    parts = {"train": train_s, "diagnostic": diag_s, "calibration": calib_s, "selection": val_s, "test": test_s,
             "fixed": fixed_s_per_config + trial_start_s / (c["grids"] * len(c["ks"]))}
    return {"configs": n_cfg, "min_steps": min_steps, "epochs": epochs, "steps": steps, "mean_variants": v,
            **{f"{k}_s_per_config": round(x, 3) for k, x in parts.items()},
            "per_config_s": round(per_cfg, 3), "hours": round(hours, 3), "minutes": round(hours * 60, 1),
            "dominant": max(parts, key=parts.get), "fixed_fraction": round(parts["fixed"] / per_cfg, 3)}


def trial_times(storage: str, name: str) -> dict[str, tuple[float, float]]:
    """trial_id -> (start, end) epoch seconds of the class trial, from Tune's {storage}/{name}/*/result.json."""
    out = {}
    for f in glob.glob(os.path.join(storage, name, "*", "result.json")):
        lines = [ln for ln in open(f).read().splitlines() if ln.strip()]
        if lines:
            first, last = json.loads(lines[0]), json.loads(lines[-1])
            start = first["timestamp"] - first["time_total_s"]  # whole seconds (Tune's timestamp)
            out[last["trial_id"]] = (start, start + last["time_total_s"])
    return out


def run(ds, classes, ks, epochs, storage, name, **kw) -> tuple[list[dict], float, dict]:
    """Rows, sweep wall, and timing: per-trial wall, sweep set-up before the first trial, gaps between trials."""
    from mtssad.distributed import run_sweep
    from mtssad.distributed.sweep_config import SweepConfig

    t_start, t0 = time.time(), time.perf_counter()
    rows = run_sweep(ds, SweepConfig(classes=classes, methods=["ours"], grids=GRIDS, ks=ks,
                                     params=dict(PARAMS, epochs=epochs), storage_path=storage, name=name,
                                     max_concurrent_trials=1, **kw))
    wall, t_end = time.perf_counter() - t0, time.time()
    spans = sorted(trial_times(storage, name).values())
    gaps = [b[0] - a[1] for a, b in zip(spans, spans[1:])]
    timing = {"trial_walls": [e - s for s, e in spans], "setup_s": spans[0][0] - t_start if spans else None,
              "gaps_s": gaps, "after_last_trial_s": t_end - spans[-1][1] if spans else None}
    return rows, wall, timing


def main() -> None:
    import argparse

    from _common import parse_args  # noqa: F401

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-ray-train", action="store_true", help="skip the TorchTrainer-per-config run")
    p.add_argument("--summarize", metavar="JSON",
                   help="only recompute the figures from a results JSON of this benchmark")
    args = p.parse_args()
    if args.summarize:
        return summarize_file(args.summarize)
    from mtssad.data import load_dataset

    classes, ks, epochs = SIZES[args.quick]
    ds = load_dataset("digits", side=32, max_train=300, max_test=100)
    storage = tempfile.mkdtemp(prefix="mtssad-bench-sweep-")
    ray = start_local_ray(2)
    loads = [load_avg()]
    try:
        new_rows, new_wall, new_trials = run(ds, classes, ks, epochs, storage, "new", cpus_per_trial=2)
        loads.append(load_avg())
        rt = None
        if not args.no_ray_train:
            rt = run(ds, classes, ks, epochs, storage, "ray_train", ray_train=True)
            loads.append(load_avg())
    finally:
        ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)

    key = lambda r: (r["normal_class"], r["k"])  # noqa: E731
    compute = {key(r): r["train_seconds"] + r["val_seconds"] + (r.get("score_seconds") or 0) * bool(r["test_scored"])
               for r in new_rows}
    table, measured = [], {}
    designs = {"new": (new_rows, new_wall, new_trials), **({"ray_train": rt} if rt else {})}
    for design, (rows, wall, timing) in designs.items():
        configs = [{"design": design, "normal_class": r["normal_class"], "k": r["k"], "epochs_s": r["epochs_seconds"],
                    "fit_s": r["train_seconds"], "val_s": r["val_seconds"],
                    "test_s": (r.get("score_seconds") or 0) if r["test_scored"] else 0.0,
                    "compute_s": compute[key(r)], "config_s": r["config_seconds"]} for r in sorted(rows, key=key)]
        table += configs
        measured[design] = {"sweep_wall_s": wall, "setup_s": timing["setup_s"],
                            "gap_between_trials_s": timing["gaps_s"],
                            "after_last_trial_s": timing["after_last_trial_s"],
                            "trial_wall_s": sum(timing["trial_walls"]),
                            "class_trials": len(timing["trial_walls"])}
    summarize(table, measured, loads, dict(quick=args.quick, classes=classes, ks=ks, epochs=epochs))


def summarize(table: list[dict], measured: dict, loads: list[float], run: dict) -> None:
    """The figures, notes and projection from the per-config table and each design's timings; writes the results.

    Fixed cost per config (steady state) = (class trials' wall + gaps between trials - training and
    scoring) / configs: what a long sweep pays per config; Tune's one-time set-up and the final
    writing of the outputs are reported apart (all-in = (sweep wall - training and scoring) / configs).
    """
    summary, out = {}, []
    for design, m in measured.items():
        configs = [r for r in table if r["design"] == design]
        n = len(configs)
        total_compute = sum(r["compute_s"] for r in configs)
        steady = m["trial_wall_s"] + sum(m["gap_between_trials_s"])
        gaps = sorted(m["gap_between_trials_s"])
        summary[design] = {**m, "configs": n, "compute_s": total_compute,
                           "fixed_s_per_config": (steady - total_compute) / n,
                           "allin_fixed_s_per_config": (m["sweep_wall_s"] - total_compute) / n,
                           "in_trial_overhead_s_per_config": (m["trial_wall_s"] - total_compute) / n,
                           "median_gap_between_trials_s": gaps[len(gaps) // 2] if gaps else 0.0,
                           "compute_share_of_class_trials": total_compute / m["trial_wall_s"],
                           "compute_share_of_sweep": total_compute / m["sweep_wall_s"]}
        out += configs + [{"design": f"{design}: per config (mean)", "compute_s": total_compute / n,
                           "config_s": m["trial_wall_s"] / n}]
    new = summary["new"]
    proj = {ms: cub_projection(new["in_trial_overhead_s_per_config"], new["median_gap_between_trials_s"], ms)
            for ms in (0, 300)}
    n_fit, v_mean = 24, sum(variants(k) for k in run["ks"]) / len(run["ks"])
    train_gflop = new["configs"] * run["epochs"] * n_fit * v_mean * 3 * 0.0244  # wrn-10-1 1x32x32: 0.0244 GFLOP/img fwd
    cpu_gflops = train_gflop / sum(r["epochs_s"] for r in table if r["design"] == "new")
    notes = [
        f"new (class trials): {new['configs']} configs in {new['class_trials']} class trials, one at a time: fixed "
        f"cost {new['fixed_s_per_config']:.2f}s per config in steady state "
        f"({new['in_trial_overhead_s_per_config']:.2f}s "
        f"inside the class trials + {new['median_gap_between_trials_s']:.0f}s between class trials over its configs); "
        f"training + scoring are {new['compute_share_of_class_trials']:.0%} of the class trials' wall; all-in "
        f"(Tune's set-up {new['setup_s']:.0f}s once, writing the outputs {new['after_last_trial_s']:.0f}s): sweep "
        f"{new['sweep_wall_s']:.0f}s, {new['allin_fixed_s_per_config']:.1f}s per config, training + scoring "
        f"{new['compute_share_of_sweep']:.0%} of it",
    ]
    if "ray_train" in summary:
        r = summary["ray_train"]
        notes.append(f"ray_train (a TorchTrainer per config, the old design's training path, same configs): fixed cost "
                     f"{r['fixed_s_per_config']:.1f}s per config "
                     f"({r['fixed_s_per_config'] / max(new['fixed_s_per_config'], 1e-9):.0f}x "
                     f"the class trials'); training + scoring {r['compute_share_of_class_trials']:.0%} of the trials' "
                     f"wall; sweep {r['sweep_wall_s']:.0f}s")
    notes += [
        f"old design (committed {OLD_COMMITTED['date']}, load {OLD_COMMITTED['load_avg_1min']}): "
        f"{OLD_COMMITTED['overhead_s_per_config']}s of overhead per config ({OLD_COMMITTED['design']}; 92% of each "
        "trial's wall)",
        f"load average (1 min) at start / after each run: {', '.join(f'{x:.1f}' for x in loads)} on 2 CPUs shared "
        "with other work: absolute seconds are inflated accordingly",
        f"this CPU trained at ~{cpu_gflops:.1f} GFLOP/s (wrn-10-1, 2 threads, under that load); the projection "
        f"assumes an A10G at {CUB['effective_tflops']:.0f} effective TFLOPS "
        f"(~{CUB['effective_tflops'] * 1e3 / cpu_gflops:.0f}x "
        "this CPU) and keeps the fixed costs measured here (a GPU node's CPUs are not slower)",
    ]
    if "ray_train" in summary:  # the same old-path cost measured quiet (committed) and now: how much the load inflates
        factor = summary["ray_train"]["fixed_s_per_config"] / OLD_COMMITTED["overhead_s_per_config"]
        quiet = new["fixed_s_per_config"] / factor
        pq = cub_projection(new["in_trial_overhead_s_per_config"] / factor,
                            new["median_gap_between_trials_s"] / factor, 0)
        summary["new"]["quiet_estimate_fixed_s_per_config"] = quiet
        proj["quiet_min_steps_0"] = pq
        notes.append(f"load-adjusted: the old path's fixed cost is {factor:.1f}x its quiet committed figure under this "
                     f"load; the class trials' fixed cost scaled the same way is ~{quiet:.2f}s per config "
                     "(an estimate, "
                     f"not a measurement), and the min_steps=0 CUB projection with it {pq['minutes']:.0f} min "
                     f"(dominated by {pq['dominant']})")
    for ms, pr in [(k, v) for k, v in proj.items() if not str(k).startswith("quiet")]:
        notes.append(
            f"CUB-200 projection, min_steps={ms} ({pr['epochs']} epochs = {pr['steps']} steps of 24 images x "
            f"{pr['mean_variants']:.0f} variants): {pr['configs']} configs on {CUB['cluster']}: "
            f"{pr['per_config_s']:.1f}s per config (train {pr['train_s_per_config']:.1f}, per-epoch diagnostic "
            f"{pr['diagnostic_s_per_config']:.1f}, test {pr['test_s_per_config']:.1f} = H_9 = "
            f"{CUB['test_scorings_per_class']:.2f} test scorings of {CUB['test_images']} images per class, selection "
            f"{pr['selection_s_per_config']:.2f}, calibration {pr['calibration_s_per_config']:.2f}, fixed "
            f"{pr['fixed_s_per_config']:.2f}) -> {pr['minutes']:.0f} min; dominated by {pr['dominant']}; the fixed "
            f"cost is {pr['fixed_fraction']:.0%}")
    write_results(
        "sweep_overhead", out, ["design", "normal_class", "k", "epochs_s", "fit_s", "val_s", "test_s", "compute_s",
                                "config_s"],
        title="Tune sweep: fixed cost per config (class trials vs a TorchTrainer per config) and the CUB-200 "
              "projection",
        settings={"quick": run["quick"], "data": "digits 1x32x32, max_train=300 (~30/class), max_test=100",
                  "classes": run["classes"], "grids": GRIDS, "ks": run["ks"],
                  "params": dict(PARAMS, epochs=run["epochs"]),
                  "ray_cpus": 2, "summary": summary, "old_committed": OLD_COMMITTED, "load_avg_1min": loads,
                  "cpu_train_gflops": cpu_gflops, "cub_assumptions": CUB, "cub_projection": proj},
        notes=notes)


def summarize_file(path: str) -> None:
    """Recompute the figures from a results JSON of this benchmark (its per-config rows and timings)."""
    d = json.loads(open(path).read())
    st = d["settings"]
    table = [r for r in d["rows"] if "normal_class" in r and r.get("normal_class") is not None]
    keys = ("sweep_wall_s", "setup_s", "gap_between_trials_s", "after_last_trial_s", "trial_wall_s", "class_trials")
    measured = {k: {f: v[f] for f in keys} for k, v in st["summary"].items()}
    summarize(table, measured, st["load_avg_1min"], dict(quick=st["quick"], classes=st["classes"], ks=st["ks"],
                                                         epochs=st["params"]["epochs"]))


if __name__ == "__main__":
    sys.exit(main())
