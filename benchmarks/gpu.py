"""GPU training step and class trial: images/s, TFLOPS, host vs device time, per precision and layout.

Run unattended on any CUDA machine, from the repository root (about 5 minutes on an H200):

    python benchmarks/gpu.py --out OUTDIR [--quick] [--no-compile]

Writes OUTDIR/gpu.json and OUTDIR/gpu.md (the GPU's name, torch/CUDA versions, every figure).
On a machine without CUDA it refuses and exits with status 2, writing nothing; `--dry-run` runs
every part on the CPU with tiny settings and wall-clock timers (a smoke test of this script; its
figures mean nothing).

1. The training step (`mtssad.train.train_step`, the library's own: plan, loss, optimizer from
   `prepare_training`) on the CUB sweep's shapes (WRN-16-4, batch 24 of 3x32x32, jigsaw k = 3, 6, 12)
   and the quickstart's (WRN-10-1, batch 32 of 1x32x32, k = 3): float32 / bfloat16 / float16 with a
   GradScaler x channels_last on / off, and torch.compile on for the CUB k = 3 and digits shapes.
   Per setting: images/s (originals), effective TFLOPS (FLOPs of one step counted by
   torch.utils.flop_counter / device time), host time per step (enqueueing, the Python side) and device
   time per step (CUDA events), and whether every loss was finite.
2. Two processes sharing the GPU, each running the CUB k = 3 bfloat16 step: their images/s together.
3. An end-to-end class trial (`mtssad.distributed.sweep_trial.run_class_configs`, no Ray needed) on
   generated CUB-sized data (200 classes, 24 fit images a class, 5794 test images, 3x32x32): all 9
   configs (grids 2x2 3x3 4x4 x k 3 6 12), WRN-16-4, bfloat16, at fixed budgets; wall seconds and the
   split into training, selection scoring and test scoring per config, the unit costs of the CUB
   projection (benchmarks/results/cub_projection.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

SHAPES = {  # name: (backbone, (C, H, W), batch, k)
    "cub-k3": ("wrn-16-4", (3, 32, 32), 24, 3),
    "cub-k6": ("wrn-16-4", (3, 32, 32), 24, 6),
    "cub-k12": ("wrn-16-4", (3, 32, 32), 24, 12),
    "digits": ("wrn-10-1", (1, 32, 32), 32, 3),
}
PRECISIONS = {"float32": (False, "auto"), "bfloat16": (True, "bfloat16"), "float16+scaler": (True, "float16")}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="OUTDIR for gpu.json and gpu.md")
    p.add_argument("--quick", action="store_true", help="fewer steps, one shape, budgets 25/50 in the class trial")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument("--steps", type=int, default=30, help="timed training steps per setting")
    p.add_argument("--trial-budgets", nargs="+", type=int, default=[100, 300], help="min_steps of the class trials")
    p.add_argument("--dry-run", action="store_true", help="on the CPU, tiny, wall-clock timers: tests this script")
    return p.parse_args(argv)


DEVICE = "cuda"  # "cpu" with --dry-run


def _sync() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


class _Timer:
    """Device seconds between start() and stop(): CUDA events on a GPU, the wall clock on the CPU (dry run)."""

    def start(self):
        import torch

        _sync()
        if DEVICE == "cuda":
            self.a, self.b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.a.record()
        self.t0 = time.perf_counter()

    def stop(self) -> tuple[float, float]:
        """(host seconds to enqueue, device seconds)."""
        if DEVICE == "cuda":
            self.b.record()
        host = time.perf_counter() - self.t0  # enqueueing only: nothing in the step waits for the device
        _sync()
        device = self.a.elapsed_time(self.b) / 1e3 if DEVICE == "cuda" else time.perf_counter() - self.t0
        return host, device


def step_setup(shape: str, precision: str, channels_last: bool, compile_model: bool = False):
    """(run(n) -> (host s, device s, all finite), flops per step, images per step) for one setting."""
    import torch

    from mtssad.methods import make_method
    from mtssad.train import prepare_training, train_step

    backbone, chw, batch, k = SHAPES[shape]
    if DEVICE == "cpu":  # dry run: the code paths, not the figures
        backbone, batch = "wrn-10-1", 4
    amp, amp_dtype = PRECISIONS[precision]
    det = make_method("ours", backbone=backbone, k=k, device=DEVICE, amp=amp, amp_dtype=amp_dtype,
                      channels_last=channels_last, progress=False).init_model(chw)
    training = prepare_training(det.model_, det.config_, batch, det.device_)
    model = torch.compile(det.model_) if compile_model else det.model_
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    images = torch.randint(0, 256, (batch, *chw), dtype=torch.uint8, device=DEVICE, generator=gen)

    def one():
        return train_step(model, det.plan_, images, training.optimizer, device=det.device_, generator=gen,
                          dtype=training.dtype, scaler=training.scaler)[0]

    def run(n: int):
        timer, losses = _Timer(), []
        timer.start()
        for _ in range(n):
            losses.append(one())
        host, device = timer.stop()
        return host, device, bool(torch.isfinite(torch.stack(losses)).all())

    flops = 0
    if not compile_model:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            one()
        flops = counter.get_total_flops()
    return run, flops, batch


def measure_steps(args) -> list[dict]:
    rows = []
    shapes = ["cub-k3", "digits"] if args.quick else list(SHAPES)
    settings = [(s, p, cl, False) for s in shapes for p in PRECISIONS for cl in (True, False)]
    if args.dry_run:
        settings = [(s, "float32", cl, False) for s in shapes for cl in (True, False)]
    if not args.no_compile and not args.dry_run:
        settings += [(s, "bfloat16", True, True) for s in shapes if s in ("cub-k3", "digits")]
    for shape, precision, cl, comp in settings:
        t0 = time.perf_counter()
        try:
            run, flops, batch = step_setup(shape, precision, cl, comp)
            run(1 if args.dry_run else 5 if not comp else 3)  # warm-up: cuDNN autotuning, compilation
            host, device, finite = run(args.steps)
        except Exception as e:  # e.g. torch.compile unavailable: say so in the table, measure the rest
            rows.append({"shape": shape, "precision": precision, "channels_last": cl, "compile": comp,
                         "error": f"{type(e).__name__}: {str(e)[:300]}"})
            print(json.dumps(rows[-1]), flush=True)
            continue
        row = {"shape": shape, "backbone": SHAPES[shape][0], "batch": batch, "k": SHAPES[shape][3],
               "precision": precision, "channels_last": cl, "compile": comp, "steps": args.steps,
               "images_per_s": batch * args.steps / max(device, host), "host_ms_per_step": 1e3 * host / args.steps,
               "device_ms_per_step": 1e3 * device / args.steps, "finite_loss": finite,
               "gflop_per_step": flops / 1e9 if flops else None,
               "tflops": flops * args.steps / device / 1e12 if flops else None,
               "setup_seconds": time.perf_counter() - t0}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _worker(seconds: float, queue, device: str) -> None:
    global DEVICE
    DEVICE = device  # a spawned process starts from the module's default
    run, _, batch = step_setup("cub-k3", "bfloat16", True)
    run(1 if DEVICE == "cpu" else 5)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        run(10)
        n += 10
    queue.put(batch * n / (time.perf_counter() - t0))


def measure_sharing(seconds: float = 8.0) -> list[dict]:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    rows = []
    for n_proc in (1, 2):
        q = ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(seconds, q, DEVICE)) for _ in range(n_proc)]
        for p in procs:
            p.start()
        rates = [q.get(timeout=300) for _ in procs]
        for p in procs:
            p.join()
        rows.append({"processes": n_proc, "images_per_s_total": sum(rates), "images_per_s_each": rates})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def cub_sized_dataset(n_test: int = 5794):
    """200 classes of random 3x32x32 images: 30 training images a class (24 fit + 6 held out), n_test test images."""
    import numpy as np

    from mtssad.data.base import ImageDataset

    rng = np.random.default_rng(0)
    train_labels = np.repeat(np.arange(200), 30).astype(np.int64)
    test_labels = np.r_[np.arange(200), rng.integers(0, 200, n_test - 200)].astype(np.int64)
    return ImageDataset("cub-sized", rng.integers(0, 256, (6000, 3, 32, 32), dtype=np.uint8), train_labels,
                        rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8), test_labels,
                        tuple(f"c{i}" for i in range(200)))


def measure_class_trial(args) -> list[dict]:
    from mtssad.distributed.sweep_trial import TrialSettings, run_class_configs
    from mtssad.distributed.trial_state import TrialState
    from mtssad.distributed.sweep_config import SweepConfig

    ds = cub_sized_dataset(300 if args.dry_run else 5794)
    grids, ks = (["3x3"], [3, 6]) if args.quick or args.dry_run else (["2x2", "3x3", "4x4"], [3, 6, 12])
    budgets = [4] if args.dry_run else [25, 50] if args.quick else args.trial_budgets
    out = []
    for budget in budgets:
        params = dict(backbone="wrn-10-1" if args.dry_run else "wrn-16-4", epochs=1, min_steps=budget, amp=True,
                      progress=False)
        task = {"normal_class": 0, "method": "ours", "configs": [{"grid": g, "k": k} for g in grids for k in ks]}
        rows = []
        _sync()
        t0 = time.perf_counter()
        run_class_configs(task, ds, TrialSettings(SweepConfig(params=params)), TrialState(), device=DEVICE,
                          trial_id="gpu-bench",
                          report=lambda row, state: rows.append(row))
        _sync()
        wall = time.perf_counter() - t0
        n_test = sum(bool(r.get("test_scored")) for r in rows)
        summary = {"min_steps": budget, "configs": len(rows), "trial_seconds": wall,
                   "train_seconds": sum(r["train_seconds"] for r in rows),
                   "selection_seconds": sum(r["val_seconds"] for r in rows),
                   "test_scorings": n_test, "test_seconds": sum(r.get("score_seconds") or 0.0 for r in rows),
                   "epochs_per_config": [r.get("epochs_run") for r in rows]}
        summary["other_seconds"] = (wall - summary["train_seconds"] - summary["selection_seconds"]
                                    - summary["test_seconds"])
        out.append(summary)
        print(json.dumps(summary), flush=True)
    return out


def render(result: dict) -> str:
    lines = [f"# GPU benchmark: {result['gpu']}", "",
             f"torch {result['torch']}, CUDA {result['cuda']}; `python benchmarks/gpu.py --out OUTDIR`"
             f"{' --quick' if result['quick'] else ''}; {result['seconds']:.0f} s in all.", "",
             "## Training step", "",
             "Images/s count original images (each expanded to its 8 + k variants). Host = the Python side "
             "enqueueing a step; device = CUDA events around the steps: host > device means the step is "
             "launch-bound (the GPU waits for Python).", "",
             "| shape | backbone | batch | precision | channels_last | compile | images/s | host ms/step | "
             "device ms/step | GFLOP/step | TFLOPS | finite loss |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["steps"]:
        if "error" in r:
            lines.append(f"| {r['shape']} | | | {r['precision']} | {r['channels_last']} | {r['compile']} | "
                         f"failed: {r['error']} | | | | | |")
            continue
        tf = f"{r['tflops']:.1f}" if r["tflops"] else "-"
        gf = f"{r['gflop_per_step']:.0f}" if r["gflop_per_step"] else "-"
        lines.append(f"| {r['shape']} | {r['backbone']} | {r['batch']} | {r['precision']} | {r['channels_last']} | "
                     f"{r['compile']} | {r['images_per_s']:.0f} | {r['host_ms_per_step']:.2f} | "
                     f"{r['device_ms_per_step']:.2f} | {gf} | {tf} | {r['finite_loss']} |")
    if result.get("sharing"):
        lines += ["", "## Processes sharing the GPU (CUB k = 3, bfloat16, channels_last)", "",
                  "| processes | images/s together | each |", "|---|---|---|"]
        lines += [f"| {r['processes']} | {r['images_per_s_total']:.0f} | "
                  f"{', '.join(f'{v:.0f}' for v in r['images_per_s_each'])} |" for r in result["sharing"]]
    if result.get("class_trial"):
        lines += ["", "## A CUB-sized class trial (9 configs, WRN-16-4, bfloat16, generated data)", "",
                  "| min_steps | configs | trial s | training s | selection scoring s | test scorings | test s | "
                  "other s |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['min_steps']} | {r['configs']} | {r['trial_seconds']:.1f} | {r['train_seconds']:.1f} | "
                  f"{r['selection_seconds']:.1f} | {r['test_scorings']} | {r['test_seconds']:.1f} | "
                  f"{r['other_seconds']:.1f} |" for r in result["class_trial"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    global DEVICE
    args = parse_args(argv)
    import torch

    if args.dry_run:
        DEVICE, args.quick, args.steps = "cpu", True, 2
    elif not torch.cuda.is_available():
        print("no CUDA GPU here; run on a GPU machine (python benchmarks/gpu.py --out OUTDIR); nothing measured, "
              "nothing written", file=sys.stderr)
        return 2
    if args.quick:
        args.steps = min(args.steps, 10)
    t0 = time.perf_counter()
    result = {"gpu": torch.cuda.get_device_name() if DEVICE == "cuda" else "none (CPU dry run)",
              "torch": torch.__version__, "cuda": torch.version.cuda, "quick": args.quick}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = [("steps", lambda: measure_steps(args)),
             ("sharing", lambda: measure_sharing(1.0 if args.dry_run else 3.0 if args.quick else 8.0)),
             ("class_trial", lambda: measure_class_trial(args))]
    for name, measure in parts:  # each part written as soon as it is measured: a later failure keeps it
        try:
            result[name] = measure()
        except Exception as e:
            result[name], result[f"{name}_error"] = [], f"{type(e).__name__}: {str(e)[:500]}"
            print(f"{name} failed: {result[f'{name}_error']}", file=sys.stderr, flush=True)
        result["seconds"] = time.perf_counter() - t0
        (out / "gpu.json").write_text(json.dumps(result, indent=1))
        (out / "gpu.md").write_text(render(result))
    print(render(result))
    errors = [k for k in result if k.endswith("_error")]
    bad = [r for r in result["steps"] if "error" not in r and not r["finite_loss"]] + errors
    if bad:
        print(f"non-finite loss or failed part(s): {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
