"""Checks of a whole `mtssad sweep` BEFORE Ray starts: every message names the CLI flag to change.

`check_sweep(args, ds, config)` validates the data (class sizes), the methods' configs, every
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


def _check_ray_session(args, use_gpu: bool) -> None:
    """The flags of the Ray a sweep will use (the sweep's own settings are SweepConfig's to check)."""
    if args.num_cpus is not None and args.num_cpus < 1:
        raise UsageError(f"--num-cpus must be >= 1; got {args.num_cpus}")
    from .session import connection_plan  # what ray_session does: join a `ray start` cluster, RAY_ADDRESS or not

    local = connection_plan(args.ray_address, local=getattr(args, "local", False))[0] == "local"
    if use_gpu and local:  # a local Ray has this machine's GPUs only: trials would wait forever for one
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--use-gpu: this machine has no CUDA GPU for the local Ray; drop --use-gpu, or join a "
                             "cluster with GPUs with --ray-address")


def check_sweep(args, ds, config) -> None:
    """Raise UsageError / DataError naming the flag when the SweepConfig `config` cannot run on `ds` as asked
    (args: the Ray session's flags); nothing is started."""
    from ..config import DetectorConfig
    from ..data import resolve_classes
    from ..methods import METHODS, make_method
    from ..protocols import check_class_size
    from .sweep_config import parse_grid
    from .sweep_space import sweep_trials

    _check_ray_session(args, config.use_gpu)
    classes = resolve_classes(ds, config.classes)
    for c in classes:
        check_class_size(ds, c, val_fraction=config.val_fraction, validation_optional=False)
    params = config.params
    specs, skipped = sweep_trials(classes, list(config.methods), list(config.grids), list(config.ks),
                                  image_side=tuple(ds.train_images.shape[2:]),
                                  margin=params.get("margin", DetectorConfig.margin), params=params)
    for m, g, k, why in skipped:
        log.warning(f"skipping {m} --grid-search {g} --k-search {k}: {why}")
    if not specs:
        reasons = "; ".join(f"{g} k {k}: {why}" for _, g, k, why in skipped[:3])
        raise UsageError(f"no valid trial: every --grid-search x --k-search pair was skipped ({reasons})")
    for spec in {(s["method"], s["grid"], s["k"]): s for s in specs}.values():  # each config once, not per class
        if METHODS[spec["method"]].neural:
            extra = {} if spec["grid"] is None else {"grid": parse_grid(spec["grid"]), "k": spec["k"]}
            make_method(spec["method"], **{**params, **extra})  # DetectorConfig validation (backbone, lr, ...)
    storage, name = config.storage_path, config.name
    _check_storage(storage)
    from .storage import join_uri

    exp = join_uri(storage, name)
    exists = experiment_exists(exp)
    if exists and not config.resume:
        raise UsageError(f"a sweep named {name!r} already exists at {exp}: pass --resume to finish "
                         "it (finished trials are not rerun), or choose another --experiment-name or --out")
    if config.resume and not exists:
        log.warning(f"--resume: no sweep to resume at {exp} (no tuner.pkl); starting a new one "
                    "(check --out, --storage-path and --experiment-name if you expected one)")
