"""Checks of a whole `mtssad sweep` BEFORE Ray starts: every message names the CLI flag to change.

`check_sweep(args, ds, classes)` validates the data (class sizes), the methods' configs, every
(grid, k) pair against the image size, the Ray resource flags, the storage path and the resume
state, so a bad sweep fails in a second instead of after Ray's start-up. Imports no Ray.
"""

from __future__ import annotations

import logging
import os
import tempfile

from ..errors import OutputDirError, UsageError
from .storage import is_uri as is_remote  # one definition of "a URI, not a path"

log = logging.getLogger(__name__)


def experiment_exists(exp: str) -> bool:
    """Whether a Tune experiment (its tuner.pkl, what `Tuner.can_restore` checks) is at `exp`; no Ray needed."""
    if not is_remote(exp):
        return os.path.exists(os.path.join(exp, "tuner.pkl"))
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(exp)
    return fs.get_file_info(f"{root.rstrip('/')}/tuner.pkl").type != pyarrow.fs.FileType.NotFound


def _check_storage(storage: str) -> None:
    """A local storage path must be a directory this process can write (remote URIs are checked by Ray)."""
    if is_remote(storage):
        return
    try:
        os.makedirs(storage, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=storage, prefix=".write-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputDirError(f"--storage-path {storage}: expected a writable directory (or a path where one can be "
                             f"created); got {e}") from e


def _check_resources(args) -> None:
    checks = [("--max-failures", args.max_failures, 0), ("--max-retries", getattr(args, "max_retries", 0), 0)]
    if args.num_workers is not None:
        checks.append(("--num-workers", args.num_workers, 1))
    if args.max_concurrent_trials is not None:
        checks.append(("--max-concurrent-trials", args.max_concurrent_trials, 1))
    for flag, value, lo in checks:
        if value < lo:
            raise UsageError(f"{flag} must be >= {lo}; got {value}")
    for flag, value in (("--cpus-per-trial", args.cpus_per_trial), ("--gpus-per-trial", args.gpus_per_trial)):
        if value is not None and not value > 0:
            raise UsageError(f"{flag} must be > 0; got {value}")
    stall = getattr(args, "stall_timeout", None)
    if stall is not None and not stall > 0:
        raise UsageError(f"--stall-timeout must be > 0 minutes; got {stall}")
    if args.gpus_per_trial is not None and not args.use_gpu:
        raise UsageError("--gpus-per-trial needs --use-gpu (trials train on CPUs without it)")
    if args.num_cpus is not None and args.num_cpus < 1:
        raise UsageError(f"--num-cpus must be >= 1; got {args.num_cpus}")
    from .session import connection_plan  # what ray_session will do: join a `ray start` cluster even without RAY_ADDRESS

    local = connection_plan(args.ray_address, local=getattr(args, "local", False))[0] == "local"
    if args.use_gpu and local:  # a local Ray has this machine's GPUs only: trials would wait forever for one
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--use-gpu: this machine has no CUDA GPU for the local Ray; drop --use-gpu, or join a "
                             "cluster with GPUs with --ray-address")


def check_sweep(args, ds, classes: list[int], *, params: dict, storage: str) -> None:
    """Raise UsageError / DataError naming the flag when the sweep cannot run as asked; nothing is started."""
    from ..methods import METHODS, make_method
    from ..protocols import check_class_size
    from .sweep_space import grid_tuple, sweep_trials

    if not 0 < args.val_fraction < 1:
        raise UsageError(f"a sweep selects on validation data: --val-fraction must be in (0, 1); got {args.val_fraction}")
    _check_resources(args)
    for c in classes:
        check_class_size(ds, c, val_fraction=args.val_fraction, validation_optional=False)
    specs, skipped = sweep_trials(classes, list(args.methods), list(args.grid_search), list(args.k_search),
                                  image_side=tuple(ds.train_images.shape[2:]), margin=params.get("margin", 2), params=params)
    for m, g, k, why in skipped:
        log.warning(f"skipping {m} --grid-search {g} --k-search {k}: {why}")
    if not specs:
        reasons = "; ".join(f"{g} k {k}: {why}" for _, g, k, why in skipped[:3])
        raise UsageError(f"no valid trial: every --grid-search x --k-search pair was skipped ({reasons})")
    for spec in {(s["method"], s["grid"], s["k"]): s for s in specs}.values():  # each config once, not per class
        if METHODS[spec["method"]].neural:
            extra = {} if spec["grid"] is None else {"grid": grid_tuple(spec["grid"]), "k": spec["k"]}
            make_method(spec["method"], **{**params, **extra})  # DetectorConfig validation (backbone, lr, ...)
    _check_storage(storage)
    from .storage import join_uri

    exp = join_uri(storage, args.experiment_name)
    exists = experiment_exists(exp)
    if exists and not args.resume:
        raise UsageError(f"a sweep named {args.experiment_name!r} already exists at {exp}: pass --resume to finish "
                         "it (finished trials are not rerun), or choose another --experiment-name or --out")
    if args.resume and not exists:
        log.warning(f"--resume: no sweep to resume at {exp} (no tuner.pkl); starting a new one "
                    "(check --out, --storage-path and --experiment-name if you expected one)")
