"""The training budget, decided by measurement: one trajectory per (data set, class, method, seed, horizon).

    python benchmarks/budget.py --datasets digits glyphs --seeds 0 1 2 --horizons 50 100 300 --workers 14 \
        --device cuda --out OUTDIR    # an H200 ran 168 of these 540 fits in 336 s (then its --deadline)
    python benchmarks/budget.py --quick --out OUTDIR    # CPU smoke run: 2 classes, 1 seed, short horizons
    python benchmarks/budget_report.py OUTDIR/budget_trajectories.json   # the tables and the chosen rule

Each job is one fit, exactly as `mtssad evaluate` fits (the same split, `calibration_fraction=0`,
`min_steps` = the horizon, cosine learning rate over it), which measures every `--eval-every` steps
(`mtssad.stopping.held_out_metrics`, BatchNorm recomputed on the training images, the training's own
random streams and running averages untouched):

  val_auroc        AUROC on the fit's labelled held-out images (held-out normals + as many other-class
                   training images): what `early_stopping="val_auroc"` decides on;
  val_loss         the held-out normals' own self-supervised loss (normals only): `early_stopping="val_loss"`;
  selection_auroc  AUROC on the sweep's selection set (the same normals + 5x other-class training images):
                   what a sweep chooses configs on; the budget is judged on it;
  test_auroc       AUROC on the test split: reported beside, never used to choose.

Because measuring does not change training, a fit stopped early by a rule is the same fit as the
trajectory cut at the rule's stop, so `budget_report.py` replays every fixed budget (each horizon's
last point) and every stopping rule (patience, monitor) from these trajectories. Results are
rewritten after every finished job to OUTDIR/budget_trajectories.json (a crash keeps what finished;
`--deadline` stops starting new jobs after that many seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np

from ablation_seeds import GLYPH_FONTS  # the ablation's 10 fonts (run from benchmarks/, which Python puts on the path)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["digits", "glyphs"])
    p.add_argument("--methods", nargs="+", default=["ours", "geometric", "jigsaw"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--horizons", nargs="+", type=int, default=[50, 100, 300], help="planned steps (min_steps) of each fit")
    p.add_argument("--eval-every", type=int, default=25, help="optimizer steps between measurements")
    p.add_argument("--backbone", default="wrn-10-1")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=2, help="fits run at a time (processes, one torch thread each)")
    p.add_argument("--deadline", type=float, default=None, help="seconds after which no new job starts")
    p.add_argument("--data-cache", default=None,
                   help="folder of <dataset>.npz arrays (written here when missing): the same images on every machine")
    p.add_argument("--quick", action="store_true", help="2 classes of digits, seed 0, horizons 25 50, eval every 25")
    p.add_argument("--out", required=True, help="OUTDIR for budget_trajectories.json")
    return p.parse_args(argv)


def load(name: str, cache: str | None):
    """load_dataset(name), through an .npz of its arrays when --data-cache is given."""
    from mtssad.data import load_dataset
    from mtssad.data.base import ImageDataset

    path = Path(cache) / f"{name}.npz" if cache else None
    if path is not None and path.is_file():
        z = np.load(path, allow_pickle=False)
        return ImageDataset(name, z["train_images"], z["train_labels"], z["test_images"], z["test_labels"],
                            tuple(str(c) for c in z["class_names"]))
    ds = load_dataset(name)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, train_images=ds.train_images, train_labels=ds.train_labels, test_images=ds.test_images,
                 test_labels=ds.test_labels, class_names=np.array(ds.class_names))
    return ds


_DATA: dict = {}


def run_job(job: dict) -> dict:
    """One fit with a measurement every eval_every steps; returns its trajectory (runs in a worker process)."""
    import torch

    from mtssad.distributed.selection import selection_set
    from mtssad.methods import make_method
    from mtssad.protocols import PROTOCOL_PARAMS, one_vs_all_data
    from mtssad.stopping import EarlyStopping, held_out_metrics
    from mtssad.train import fit_epochs, seed_everything

    torch.set_num_threads(1)
    if job["device"].startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 as on a CPU, not TF32
        torch.backends.cudnn.allow_tf32 = False
    if job["dataset"] not in _DATA:
        _DATA[job["dataset"]] = load(job["dataset"], job["data_cache"])
    ds = _DATA[job["dataset"]]
    c = ds.class_names.index(job["normal_class"])
    d = one_vs_all_data(ds, c, seed=job["seed"])
    X_sel, y_sel = selection_set(ds.train_images, ds.train_labels, c, d.X_val, d.y_val, seed=job["seed"])
    det = make_method(job["method"], backbone=job["backbone"], epochs=1, min_steps=job["horizon"], seed=job["seed"],
                      device=job["device"], progress=False, eval_every=job["eval_every"], **PROTOCOL_PARAMS)
    config = det.config
    X = torch.from_numpy(d.X_fit)
    gen = seed_everything(config.seed)  # as MultiTaskDetector.fit
    det.init_model(tuple(X.shape[1:]))
    y_val = d.y_val.astype(bool)
    X_val = torch.from_numpy(d.X_val)
    measure = held_out_metrics(det.model_, det.plan_, device=det.device_, X_train=X, normals=X_val[torch.from_numpy(y_val)],
                               X_val=X_val, y_val=y_val, heads=config.heads_for_score,
                               extra_sets={"selection": (X_sel, y_sel), "test": (ds.test_images, d.is_normal_test)})
    stopper = EarlyStopping(measure, monitor="val_auroc", every=config.eval_every, patience=None)
    t0 = time.perf_counter()
    history = fit_epochs(det.model_, det.plan_, X, config, device=det.device_, generator=gen, stopper=stopper)
    wall = time.perf_counter() - t0
    return {**{k: job[k] for k in ("dataset", "normal_class", "method", "seed", "horizon", "eval_every", "backbone")},
            "device": str(det.device_), "n_fit": len(X), "steps_per_epoch": history[0]["steps"],
            "steps": history[-1]["steps"], "train_seconds": sum(h["seconds"] for h in history), "wall_seconds": wall,
            "trajectory": stopper.trace}


def jobs_of(args) -> list[dict]:
    jobs = []
    for dataset in args.datasets:
        classes = GLYPH_FONTS if dataset == "glyphs" else None
        if classes is None:
            classes = list(load(dataset, args.data_cache).class_names)
        if args.quick:
            classes = classes[:2]
        for horizon in args.horizons:
            for seed in args.seeds:
                for method in args.methods:
                    for c in classes:
                        jobs.append(dict(dataset=dataset, normal_class=c, method=method, seed=seed, horizon=horizon,
                                         eval_every=args.eval_every, backbone=args.backbone, device=args.device,
                                         data_cache=args.data_cache))
    # What a --deadline cuts last: jigsaw-only (an ablation row), then the short horizons; the longest
    # trajectories of ours and geometric (every stopping rule and the task choice) come first.
    return sorted(jobs, key=lambda j: (j["method"] == "jigsaw", -j["horizon"], j["seed"]))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.datasets, args.seeds, args.horizons, args.methods = ["digits"], [0], [25, 50], ["ours", "geometric"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "budget_trajectories.json"
    for name in args.datasets:  # render/cache once here, not in every worker
        load(name, args.data_cache)
    jobs = jobs_of(args)
    results: list[dict] = []
    failed: list[str] = []
    t0 = time.perf_counter()
    print(f"{len(jobs)} fits on {args.device}, {args.workers} at a time", flush=True)
    import multiprocessing as mp

    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
        pending, queue = set(), list(jobs)
        while queue or pending:
            while queue and len(pending) < args.workers and (args.deadline is None or
                                                              time.perf_counter() - t0 < args.deadline):
                pending.add(pool.submit(run_job, queue.pop(0)))
            if not pending:
                break
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                try:
                    r = f.result()
                except Exception as e:  # one broken fit must not lose the others
                    failed.append(f"{type(e).__name__}: {str(e)[:300]}")
                    print(f"a fit failed: {failed[-1]}", flush=True)
                    continue
                results.append(r)
                best = max(p["val_auroc"] for p in r["trajectory"])
                print(f"[{len(results)}/{len(jobs)}] {r['dataset']} {r['normal_class']} {r['method']} s{r['seed']} "
                      f"H{r['horizon']}: {r['steps']} steps {r['train_seconds']:.1f}s, val {best:.3f} "
                      f"test {r['trajectory'][-1]['test_auroc']:.3f} | {time.perf_counter() - t0:.0f}s", flush=True)
            tmp = target.with_suffix(".tmp")
            tmp.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k != "out"},
                                       "jobs_planned": len(jobs), "failed": failed, "results": results}))
            os.replace(tmp, target)
    missing = len(jobs) - len(results)
    print(f"{len(results)} fits in {time.perf_counter() - t0:.0f}s -> {target}" +
          (f"; {missing} not run (deadline)" if missing else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
