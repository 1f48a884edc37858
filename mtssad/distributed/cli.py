"""`mtssad sweep` and the `ray_jobs/` scripts: their Ray flags, connecting to Ray, running the sweep.

Argument parsing imports no Ray, so `mtssad --help` stays fast; Ray is imported
when the sweep runs. With --ray-address (default $RAY_ADDRESS) the sweep joins
that cluster, otherwise it starts a local Ray sized to this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys


def _grid_text(text: str) -> str:
    import re

    if not re.fullmatch(r"\d+x\d+", text.strip().lower()):
        raise argparse.ArgumentTypeError(f"expected a grid like 3x3; got {text!r}")
    return text.strip().lower()


def add_ray_args(p: argparse.ArgumentParser) -> None:
    """Flags of a Ray Train run: workers, devices, per-trial resources, storage."""
    g = p.add_argument_group("Ray Train")
    g.add_argument("--num-workers", type=int, default=1, help="Ray Train DDP workers per trial (default: %(default)s)")
    g.add_argument("--use-gpu", action="store_true", help="train on GPUs (nccl); default CPU (gloo)")
    g.add_argument("--cpus-per-trial", type=float, default=None,
                   help="CPUs a class trial asks Tune for and trains with (default: 1); with --num-workers >= 2, the "
                        "CPUs of its DDP workers together, split evenly (default: 1 per worker, shrunk to fit)")
    g.add_argument("--gpus-per-trial", type=float, default=None,
                   help="GPUs a class trial asks Tune for with --use-gpu, fractional ok, e.g. 0.25 = four classes per "
                        "GPU (default: 1); with --num-workers >= 2, its DDP workers' GPUs together")
    g.add_argument("--max-concurrent-trials", type=int, default=None,
                   help="class trials running at once (default: as many as their resources allow, so an autoscaler "
                        "sees the pending GPU demand; with --num-workers >= 2, what the cluster allows now)")
    g.add_argument("--storage-path", default=os.environ.get("STORAGE_PATH"),
                   help="checkpoints and the Tune experiment: local dir, NFS or s3:// URI; shared storage on "
                        "multi-node clusters (default: $STORAGE_PATH, else OUTDIR/ray)")
    g.add_argument("--max-failures", type=int, default=2, help="worker-group restarts per training run (default: %(default)s)")
    g.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS"),
                   help="cluster to join (default: $RAY_ADDRESS, else start a local Ray)")
    g.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray when one is started (default: all)")
    g.add_argument("--driver-resource", default=None,
                   help="custom resource every trial driver takes 1 of (e.g. TRAIN_DRIVER, declared on safe nodes in "
                        "cluster.yaml); also caps trials resumed by --resume, which Tune starts all at once")
    g.add_argument("--local", action="store_true", help="start a small local Ray (2 CPUs unless --num-cpus) even if RAY_ADDRESS is set")


def finish_ray_args(args):
    """Post-parse defaults shared by the jobs: --local means a 2-CPU local Ray unless --num-cpus."""
    if getattr(args, "local", False) and args.num_cpus is None:
        args.num_cpus = 2
    return args


SWEEP_MIN_STEPS = 0  # `mtssad sweep`'s default step floor (see add_sweep_args)


def add_sweep_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sweep (Ray Tune + Ray Train)")
    g.add_argument("--grid-search", nargs="+", type=_grid_text, default=["2x2", "3x3"],
                   help="jigsaw grids to try per class (default: 2x2 3x3)")
    g.add_argument("--k-search", nargs="+", type=int, default=[3], help="jigsaw permutation counts to try (default: 3)")
    g.add_argument("--experiment-name", default="sweep", help="fixed Tune experiment name; reuse it with --resume (default: %(default)s)")
    g.add_argument("--resume", action="store_true",
                   help="restore an interrupted sweep: finished configs are not retrained")
    g.add_argument("--test-all-configs", action="store_true",
                   help="score the test split for every config (default: only each class's best on validation so far)")
    add_ray_args(p)
    # The quickstart budget: 10 epochs, no step floor (a digits sweep of 20 configs in a few minutes on 2 CPUs;
    # min_steps=300 makes it ~5x slower). Pass --min-steps 300 (DetectorConfig's default) for small classes.
    p.set_defaults(min_steps=SWEEP_MIN_STEPS)


@contextlib.contextmanager
def ray_session(address: str | None = None, *, local: bool = False, num_cpus: int | None = None):
    """Connect to Ray for the duration of a command; shut down only a Ray this call started.

    local: start a private local Ray (loopback, no dashboard); address: join that cluster
    ("auto", "ray://...", host:port); neither: ray.init() (joins a running cluster if any).
    Inside `ray job submit` the supervisor sets RAY_ADDRESS, so a bare call joins the cluster.
    """
    import ray

    if ray.is_initialized():  # e.g. a test's Ray, or a caller that connected already
        yield ray
        return
    if local:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False)
    else:
        ray.init(address=address)
    try:
        yield ray
    finally:
        ray.shutdown()


def run_sweep_from_args(args, *, grids, ks) -> list[dict]:
    """Load the data set once, run (or resume) the sweep, append rows to args.out; return the rows."""
    from ..cli import load_from_args, method_params
    from ..data import resolve_classes
    from .tune import classes_summary, run_sweep

    if not 0 < args.val_fraction < 1:
        raise ValueError(f"a sweep selects on validation data: --val-fraction must be in (0, 1); got {args.val_fraction}")
    params = method_params(args)
    if getattr(args, "min_steps", None) is not None:  # the sweep's own default (add_sweep_args) or --min-steps
        params.setdefault("min_steps", args.min_steps)
    ds = load_from_args(args)
    classes = resolve_classes(ds, args.classes)
    storage = args.storage_path or os.path.join(os.path.abspath(args.out), "ray")
    print(f"{ds.name}: {len(ds.train_images)} train / {len(ds.test_images)} test images of "
          f"{tuple(ds.train_images.shape[1:])}; results -> {args.out}", flush=True)
    with ray_session(args.ray_address, local=getattr(args, "local", False) or not args.ray_address,
                     num_cpus=args.num_cpus):
        rows = run_sweep(
            ds, classes=classes, methods=args.methods, grids=grids, ks=ks, params=params, seed=args.seed,
            val_fraction=args.val_fraction, num_workers=args.num_workers, use_gpu=args.use_gpu,
            cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
            max_concurrent_trials=args.max_concurrent_trials, storage_path=storage,
            name=getattr(args, "experiment_name", "sweep"), resume=getattr(args, "resume", False),
            max_failures=args.max_failures, out=args.out, score_all_test=getattr(args, "test_all_configs", False),
            driver_resources={args.driver_resource: 1} if getattr(args, "driver_resource", None) else None,
        )
    print(classes_summary(rows))
    print(f"{len(rows)} rows ({sum(r['selected'] for r in rows)} selected) in {os.path.join(args.out, 'results.parquet')}; "
          f"checkpoints and Tune state in {storage}")
    return rows


def run_sweep_command(args) -> int:
    """`mtssad sweep`: the sweep, then the report."""
    from .progress import console_logging
    from .tune import SweepIncomplete

    console_logging(quiet=getattr(args, "quiet", False))

    try:
        run_sweep_from_args(finish_ray_args(args), grids=args.grid_search, ks=args.k_search)
    except SweepIncomplete as e:
        print(f"mtssad sweep: incomplete: {e}; e.g. `mtssad sweep --resume` with the same flags", file=sys.stderr)
        return 1
    from ..report import render_report

    print(f"report: {render_report(args.out)}")
    return 0
