"""`mtssad sweep` and the `ray_jobs/` scripts: their sweep and Ray flags, the SweepConfig built from them, the run.

Argument parsing imports no Ray, so `mtssad --help` stays fast; Ray is imported when the sweep runs
(`session.ray_session`: like `ray.init()`, a command joins the running cluster and starts a private
local Ray only with --local or when there is none). The shared data/method/output flags are
`mtssad.flags`'; this module never imports the `mtssad` command line above it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace

from .session import ray_session
from .sweep_config import SweepConfig, grid_label, parse_grid  # pure Python: parsing stays free of torch and Ray

log = logging.getLogger(__name__)


def _grid_flag(text: str) -> tuple[int, int]:
    """--grid-search's '3x3', parsed once, here: the sweep holds (3, 3) from now on."""
    from ..errors import UsageError

    try:
        return parse_grid(text)
    except UsageError:
        raise argparse.ArgumentTypeError(f"expected a grid like 3x3; got {text!r}") from None


def add_ray_args(p: argparse.ArgumentParser) -> None:
    """Flags of a Ray Train run: workers, devices, per-trial resources, storage."""
    g = p.add_argument_group("Ray Train")
    g.add_argument("--num-workers", type=int, default=None,
                   help="Ray Train DDP workers per config; 1 = train in the class trial's own process (default: by "
                        "the fit-set size: 2 DDP workers from 2,000 fit images, "
                        "mtssad.distributed.train.DDP_MIN_FIT_IMAGES, else 1)")
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
    from .watch import STALL_TIMEOUT_S

    g.add_argument("--max-failures", type=int, default=SweepConfig.max_failures,
                   help="DDP worker-group restarts per training run (--num-workers 2+; default: %(default)s)")
    g.add_argument("--max-retries", type=int, default=3,
                   help="restarts of a failed class trial (a preempted spot node, a crash), each on any node from its "
                        "last finished config (Tune's FailureConfig; default: %(default)s, for spot nodes; "
                        f"SweepConfig's, for Python callers, is {SweepConfig.trial_max_failures})")
    g.add_argument("--allow-cpu-fallback", action="store_true",
                   help="a class trial given a GPU its node cannot use trains on the CPU (warning) instead of "
                        "failing at once (simulated clusters with fake GPUs; on AWS it means GPU hours at CPU speed)")
    g.add_argument("--stall-timeout", type=float, default=STALL_TIMEOUT_S / 60,
                   help="minutes the class trials may all wait for resources no node offers (no GPU node starting, a "
                        "spot quota of 0, ...) before the sweep stops with exit 6 (default: %(default)s)")
    g.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS"),
                   help="cluster to join (default: $RAY_ADDRESS, else a cluster `ray start`ed on this machine, else a "
                        "local Ray is started)")
    g.add_argument("--num-cpus", type=int, default=None,
                   help="CPUs of the local Ray when one is started (default: all)")
    g.add_argument("--driver-resource", default=None,
                   help="custom resource every trial driver takes 1 of (e.g. TRAIN_DRIVER, declared on safe nodes in "
                        "cluster.yaml); also caps trials resumed by --resume, which Tune starts all at once")
    g.add_argument("--local", action="store_true",
                   help="start a private local Ray (2 CPUs unless --num-cpus) instead of joining a running cluster, "
                        "even if RAY_ADDRESS is set")


def add_auto_resume_arg(p: argparse.ArgumentParser) -> None:
    """The jobs' --auto-resume: how many times an incomplete sweep is resumed by the job itself."""
    p.add_argument("--auto-resume", type=int, default=2,
                   help="resume an incomplete sweep by itself up to this many times (after its trials ran out of "
                        "--max-retries, e.g. several spot preemptions), then publish what finished "
                        "(default: %(default)s)")


def finish_ray_args(args):
    """Post-parse defaults shared by the jobs: --local means a 2-CPU local Ray unless --num-cpus."""
    if getattr(args, "local", False) and args.num_cpus is None:
        args.num_cpus = 2
    if getattr(args, "auto_resume", 0) < 0:
        from ..errors import UsageError

        raise UsageError(f"--auto-resume must be >= 0; got {args.auto_resume}")
    return args


def add_sweep_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sweep (Ray Tune + Ray Train)")
    grids, ks = SweepConfig.grids, SweepConfig.ks  # the sweep's defaults: DetectorConfig's grid and k
    g.add_argument("--grid-search", nargs="+", type=_grid_flag, default=list(grids),
                   help=f"jigsaw grids to try per class (default: {' '.join(map(grid_label, grids))}, "
                        "DetectorConfig's, the paper's best; with the task search that is two configs a class: it "
                        "and the geometric heads alone)")
    g.add_argument("--k-search", nargs="+", type=int, default=list(ks),
                   help=f"jigsaw permutation counts to try (default: {' '.join(map(str, ks))}, DetectorConfig's k)")
    g.add_argument("--experiment-name", default=SweepConfig.name,
                   help="fixed Tune experiment name; reuse it with --resume (default: %(default)s)")
    g.add_argument("--resume", action="store_true",
                   help="restore an interrupted sweep: finished configs are not retrained")
    g.add_argument("--test-all-configs", action="store_true",
                   help="score the test split for every config (default: only the config chosen on validation, once "
                        "at the end of its class trial)")
    g.add_argument("--task-search", action=argparse.BooleanOptionalAction, default=True,
                   help="search the task set too: per class, `ours` also trains its geometric heads alone (no jigsaw), "
                        "and validation chooses between them and the (grid, k) configs; the selected row's jigsaw_kept "
                        "says which won (default: on; --no-task-search: grid and k only)")
    # the step budget (--min-steps: the data set's) is evaluate's: a sweep trains each config as evaluate does
    add_ray_args(p)


def storage_of(args) -> str:
    """The run's storage: --storage-path (a URI or a path), else OUTDIR/ray on this machine."""
    from .storage import absolute

    return absolute(args.storage_path or os.path.join(args.out, "ray"))


def experiment_dir(args) -> str:
    from .storage import join_uri

    return join_uri(storage_of(args), getattr(args, "experiment_name", "sweep"))


def publish_results(args, name: str | None = None) -> str | None:
    """Copy OUTDIR (results, per-image scores, report, plots) to {storage}/{name}-results; print where.

    name: default --experiment-name. Nothing is copied when the storage is OUTDIR/ray (the default).
    """
    from .storage import publish_dir

    name = name or getattr(args, "experiment_name", None) or "run"
    dest = publish_dir(args.out, storage_of(args), f"{name}-results")
    if dest:
        print(f"results, scores and report copied to {dest}")
    return dest


def sweep_config_from_args(args, *, grids=None, ks=None) -> SweepConfig:
    """The SweepConfig of `mtssad sweep`'s flags or a job's arguments (grids, ks: a job's own, e.g. one_vs_all's
    --grid and --k); checked once, by SweepConfig, before any data is loaded."""
    from ..flags import check_tasks_flag, log_level_of, method_params

    check_tasks_flag(args)
    driver = getattr(args, "driver_resource", None)
    return SweepConfig(
        classes=args.classes or None, methods=args.methods,
        grids=args.grid_search if grids is None else grids, ks=args.k_search if ks is None else ks,
        task_search=getattr(args, "task_search", True), params=method_params(args), seed=args.seed,
        val_fraction=args.val_fraction, score_all_test=getattr(args, "test_all_configs", False),
        num_workers=args.num_workers, use_gpu=args.use_gpu, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, driver_resources={driver: 1} if driver else None,
        max_concurrent_trials=args.max_concurrent_trials, storage_path=storage_of(args),
        name=getattr(args, "experiment_name", "sweep"), resume=getattr(args, "resume", False), out=args.out,
        max_failures=args.max_failures, trial_max_failures=args.max_retries, cpu_fallback=args.allow_cpu_fallback,
        stall_timeout_s=60.0 * args.stall_timeout, verbose=1 if log_level_of(args) == "DEBUG" else 0)


def run_sweep_from_args(args, config: SweepConfig) -> list[dict]:
    """Load the data set once, check the whole sweep, run (or resume) it, append rows to config.out; return them.

    Everything is validated before Ray starts (`preflight.check_sweep`). Ray's own console output goes to
    OUTDIR/sweep.log and Ray's session logs unless the log level is DEBUG (-v).
    """
    from ..flags import load_from_args
    from .preflight import check_sweep
    from .raylog import ray_console
    from .tune import classes_summary, run_sweep

    ds = load_from_args(args)
    check_sweep(args, ds, config)
    log.info(f"{ds.name}: {len(ds.train_images)} train / {len(ds.test_images)} test images of "
             f"{tuple(ds.train_images.shape[1:])}; results -> {config.out}")
    verbose = config.verbose > 0  # -v: Ray's own output on the console too
    log_file = os.path.join(config.out, "sweep.log")
    with ray_console(log_file, verbose=verbose), \
            ray_session(args.ray_address, local=getattr(args, "local", False), num_cpus=args.num_cpus,
                        log_to_driver=verbose, storage_path=config.storage_path):
        if not verbose:
            log.info(f"Ray's own messages: {log_file}; Ray workers' logs: {ray_session.log_dir or 'Ray session logs'}")
        rows = run_sweep(ds, config)
    print(classes_summary(rows))
    log.info(f"{len(rows)} rows ({sum(r['selected'] for r in rows)} selected) in "
             f"{os.path.join(config.out, 'results.parquet')}; checkpoints and Tune state in {config.storage_path}")
    return rows


INCOMPLETE_BANNER = "> **INCOMPLETE SWEEP**"


def report_incomplete(args, error) -> str | None:
    """The report of an interrupted sweep's finished configs, marked incomplete at its top; its path (None
    when nothing finished)."""
    import os

    from ..report import render_report

    if not os.path.exists(os.path.join(args.out, "results.parquet")):
        return None
    path = render_report(args.out)
    text = open(path).read()
    banner = (f"{INCOMPLETE_BANNER}: not every class trial finished; this report shows the configs that did "
              f"(rows with `sweep_incomplete`: their class trial did not finish, so its selection may still "
              f"change). {error}\n\nRerun the same command with --resume to finish it.\n\n")
    with open(path, "w") as f:
        f.write(banner + text)
    return str(path)


def run_sweep_resuming(args, config: SweepConfig, *, resumes: int = 0) -> int:
    """Run the sweep; when it ends incomplete (a trial out of retries, a lost node), resume it by itself up to
    `resumes` times (never after a stall: the resources would still be missing). Then the report; an incomplete
    sweep still writes and publishes what finished, marked so, and returns EXIT_INCOMPLETE (6)."""
    from ..errors import EXIT_INCOMPLETE
    from ..report import render_report
    from .tune import SweepIncomplete, SweepStalled

    attempt = 0
    while True:
        try:
            run_sweep_from_args(args, config)
            break
        except SweepIncomplete as e:
            if attempt >= resumes or isinstance(e, SweepStalled):
                print(f"mtssad sweep: incomplete: {e}", file=sys.stderr)
                path = report_incomplete(args, e)
                if path:
                    print(f"report (incomplete): {path}")
                    publish_results(args)
                return EXIT_INCOMPLETE
            attempt += 1
            config = replace(config, resume=True)
            log.warning("sweep incomplete (%s); resuming it by itself (%d of %d)", e, attempt, resumes)
    print(f"report: {render_report(args.out)}")
    publish_results(args)
    return 0


def run_sweep_command(args) -> int:
    """`mtssad sweep`: the sweep, then the report (an interrupted sweep: the finished configs' report, exit 6)."""
    args = finish_ray_args(args)
    return run_sweep_resuming(args, sweep_config_from_args(args))
