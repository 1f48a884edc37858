"""Data-parallel training of a detector with Ray Train (V2 `TorchTrainer`, DDP).

    det = train_detector_ddp(X_normal, DetectorConfig(backbone="wrn-10-1"), num_workers=2,
                             storage_path="/tmp/ray_results", name="digits-3")
    det.score_samples(X_test)          # the same MultiTaskDetector that .fit() returns

Each worker runs the single-process step (`mtssad.train.train_step`) on its share
of every global batch:

* Global batch = `config.batch_size` ORIGINAL images, as in the local path. Every
  rank draws the same seeded shuffle (`batch_order`), and rank r trains on
  `batch[r::world_size]`, so per-worker batch = batch_size / num_workers
  originals (each expanded to all its variants). The shares of one step are
  disjoint and together are the whole global batch; all ranks take the same number of
  steps, as DDP needs. DDP averages the gradients of the per-rank mean losses,
  which equals the global mean when batch_size is a multiple of num_workers.
  BatchNorm statistics are per rank (no SyncBatchNorm); rank 0's are saved.
* With one worker the loop is exactly `MultiTaskDetector.fit`: same seeding, same
  single generator, same weights. With more, the shuffle generator is shared and
  the dropout/jigsaw-offset randomness is reseeded per (seed, rank, epoch), so a
  resumed run continues exactly.
* Jigsaw permutations are drawn once on the driver (from config.seed) and
  shipped to every worker, so all ranks and the final detector share them.
* Images travel once through the object store (`ray.put`); every worker reads
  the whole uint8 array (zero-copy on its node). That suits the paper's data
  (a class of CUB-200 at 32 px is a few MB); for data sets of many GB, read
  shards from shared storage in the worker instead.
* Rank 0 reports metrics and a checkpoint (model of the unwrapped module,
  optimizer, scheduler, epoch, history, generator states) every epoch. A failed
  worker group is restarted from the last checkpoint (`max_failures`); running
  again with the same `name` and `storage_path` resumes the stored run
  (driver-level restore; a finished run is not retrained).
* Every checkpoint stores the run's identity (detector class, image shape, every
  config field but device/progress). Resuming it with a different config (grid,
  k, backbone, epochs, ...) raises CheckpointError naming the differing fields, as
  does an unreadable checkpoint state file (naming the file): a new config needs
  a new name. (The worker group is retried `max_failures` times first.)
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time

import numpy as np
import torch

from ..config import DetectorConfig
from ..train import batch_order, make_optimizer, make_scheduler, planned_epochs, seed_everything, train_step
from ..validation import check_images, check_labels

STATE_FILE = "state.pt"
# Config fields a resumed run may change: where it runs and how it reports, not what it trains.
RESUME_MAY_DIFFER = ("device", "progress")


class CheckpointError(ValueError):
    """A stored Ray Train checkpoint that cannot be resumed: unreadable, or from a different config."""


def shard_batches(n: int, batch_size: int, world_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Global index batches (the local `batch_order`), with a last batch smaller than world_size folded in."""
    batches = batch_order(n, batch_size, generator)
    if world_size > 1 and len(batches) > 1 and len(batches[-1]) < world_size:
        batches[-2] = torch.cat(batches[-2:])
        batches.pop()
    return batches


def _derived_seed(seed: int, rank: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0])


def _sum_across_ranks(values: list[float], device: torch.device) -> list[float]:
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.tolist()


def _get_images(ref):
    import ray

    return ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref


def _as_tensor(arr: np.ndarray) -> torch.Tensor:
    """Zero-copy view of a (read-only) object-store array; training never writes to it."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.ascontiguousarray(arr))


def _load_state(checkpoint) -> dict:
    """The state dict of a checkpoint; a missing, truncated or foreign file is a CheckpointError naming it."""
    where = os.path.join(str(checkpoint.path), STATE_FILE)
    try:
        with checkpoint.as_directory() as d:
            st = torch.load(os.path.join(d, STATE_FILE), map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, random bytes, pickled code, missing file
        raise CheckpointError(f"{where}: not a readable mtssad training checkpoint ({type(e).__name__}: "
                              f"{str(e)[:200]}); delete the run directory or use another name to start afresh") from None
    if not isinstance(st, dict) or "model" not in st or "epoch" not in st:
        raise CheckpointError(f"{where}: not an mtssad training checkpoint (no model/epoch entries)")
    return st


def _run_identity(det, image_shape) -> dict:
    """What a checkpoint must share with a run to be resumed by it (stored in every checkpoint)."""
    config = {k: v for k, v in json.loads(det.config.to_json()).items() if k not in RESUME_MAY_DIFFER}
    return {"detector": type(det).__name__, "image_shape": list(image_shape), **config}


def check_resumable(state: dict, det, image_shape, where: str = "checkpoint") -> None:
    """Raise CheckpointError naming every field where a stored checkpoint differs from this run."""
    stored = state.get("identity")
    if stored is None:  # written before identities were stored: nothing to compare
        return
    mine = _run_identity(det, image_shape)
    diff = [f"{k}: {stored.get(k)!r} in the checkpoint, {mine.get(k)!r} in this run"
            for k in sorted(set(stored) | set(mine)) if stored.get(k) != mine.get(k)]
    if diff:
        raise CheckpointError(f"{where} was written by a run with a different config ({'; '.join(diff)}); "
                              "use another name (or storage_path) for a new config, or the same config to resume")


def train_loop_per_worker(cfg: dict) -> None:
    """Ray Train worker: build the detector's network, train on this rank's shares, report every epoch."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    det = cfg["detector"]  # an unfitted detector: its config and plan recipe
    config = det.config
    device = ray.train.torch.get_device() if cfg["use_gpu"] else torch.device("cpu")
    config.device = str(device)
    config.progress = False
    X = _as_tensor(_get_images(cfg["images"]))  # (N, C, H, W) uint8
    X_val = y_val = None
    if cfg.get("val") is not None:
        X_val, y_val = _get_images(cfg["val"])
        X_val, y_val = _as_tensor(X_val), np.asarray(y_val, bool)

    order_gen = seed_everything(config.seed)  # same init on every rank, as in MultiTaskDetector.fit
    det.init_model(tuple(X.shape[1:]), permutations=cfg["permutations"])
    model = ray.train.torch.prepare_model(det.model_)  # DDP (gloo on CPU, nccl on GPU) when world > 1
    optimizer = make_optimizer(model, config)
    steps = len(shard_batches(len(X), config.batch_size, world, torch.Generator().manual_seed(0)))
    epochs = planned_epochs(steps, config)  # the local loop's step budget
    scheduler = make_scheduler(optimizer, steps * epochs)

    start, history, starts = 0, [], []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        st = _load_state(checkpoint)
        check_resumable(st, det, tuple(X.shape[1:]), where=f"checkpoint {checkpoint.path}")
        det.model_.load_state_dict(st["model"])
        optimizer.load_state_dict(st["optimizer"])
        scheduler.load_state_dict(st["scheduler"])
        order_gen.set_state(st["order_gen"])
        if world == 1:
            torch.set_rng_state(st["torch_rng"])
        start, history, starts = st["epoch"] + 1, st["history"], st["starts"]
    starts = starts + [start]

    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        if world == 1:
            aug_gen = order_gen  # exactly the local loop's generator use
        else:
            torch.manual_seed(_derived_seed(config.seed, rank, epoch))  # dropout
            aug_gen = torch.Generator().manual_seed(_derived_seed(config.seed, rank, epoch) + 1)  # jigsaw offsets
        loss_sum, n_seen, correct, counted = 0.0, 0, {}, {}
        for idx in shard_batches(len(X), config.batch_size, world, order_gen):
            local = idx[rank::world]  # this rank's disjoint share of the global batch
            loss, c, k = train_step(model, det.plan_, X[local], optimizer, device=device, generator=aug_gen,
                                    amp=config.amp)
            scheduler.step()
            loss_sum, n_seen = loss_sum + loss * len(local), n_seen + len(local)
            for h in c:
                correct[h], counted[h] = correct.get(h, 0) + c[h], counted.get(h, 0) + k[h]
        heads = sorted(correct)
        totals = _sum_across_ranks([loss_sum, n_seen] + [correct[h] for h in heads] + [counted[h] for h in heads],
                                   device)
        stats = {"loss": totals[0] / max(1.0, totals[1])}
        stats.update({f"acc_train/{h}": totals[2 + i] / max(1.0, totals[2 + len(heads) + i])
                      for i, h in enumerate(heads)})
        stats.update(epoch=epoch, lr=optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - t0)
        if rank == 0 and X_val is not None:
            stats.update(det._validation_accuracy(X_val, y_val))
        history = history + [stats]
        with tempfile.TemporaryDirectory() as d:
            ck = None
            if rank == 0:
                torch.save({"model": det.model_.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "epoch": epoch, "history": history,
                            "starts": starts, "order_gen": order_gen.get_state(),
                            "torch_rng": torch.get_rng_state(), "world_size": world,
                            "identity": _run_identity(det, X.shape[1:])},
                           os.path.join(d, STATE_FILE))
                ck = ray.train.Checkpoint.from_directory(d)
            metrics = {**stats, "world_size": world, "start_epoch": start, "pid": os.getpid(), "n_local": n_seen}
            ray.train.report(metrics, checkpoint=ck)


def _as_detector(config):
    """A DetectorConfig, a dict of its fields, or an unfitted detector -> an unfitted detector copy."""
    from ..detector import MultiTaskDetector

    if isinstance(config, DetectorConfig):
        return MultiTaskDetector(**{f: getattr(config, f) for f in config.__dataclass_fields__})
    if isinstance(config, dict):
        return MultiTaskDetector(**config)
    if isinstance(config, MultiTaskDetector):
        det = type(config).__new__(type(config))
        det.config = copy.deepcopy(config.config)
        return det
    raise TypeError(f"config must be a DetectorConfig, a dict of its fields or an unfitted MultiTaskDetector; "
                    f"got {type(config).__name__}")


def _driver_device(device: str) -> str:
    from ..validation import resolve_device

    try:
        return str(resolve_device(device))
    except ValueError:  # e.g. "cuda" asked for, but this driver (a CPU head or Tune trial) sees no GPU
        return "cpu"


def train_detector_ddp(X_train, config, *, num_workers: int = 1, use_gpu: bool = False,
                       resources_per_worker: dict | None = None, storage_path: str, name: str,
                       max_failures: int = 2, controller_failure_limit: int = -1, checkpoints_to_keep: int = 2,
                       X_val=None, y_val=None, callbacks=None):
    """Fit a detector on normal images X_train with `num_workers` Ray Train workers; return it fitted.

    config: a DetectorConfig, a dict of its fields, or an unfitted MultiTaskDetector (or subclass,
    e.g. from `mtssad.methods.make_method`). X_val / y_val (1 = normal): the per-epoch head
    diagnostic (computed on rank 0) and the reference normals of `calibrate`, as in `fit`.
    resources_per_worker: e.g. {"CPU": 0.5} (fractional, to fit under a Tune trial on few CPUs) or
    {"CPU": 4, "GPU": 1}. storage_path/name: where checkpoints go ({storage_path}/{name}/); a fixed
    name makes a rerun resume. controller_failure_limit=0 makes an unschedulable worker group fail
    fast (tests); keep -1 on autoscaling clusters, where the workers wait for nodes.
    The returned detector is calibrated on the driver and saves/loads like a locally fitted one;
    train_seconds_ is the wall time of the Ray run (including worker start).
    Raises CheckpointError when the stored run under this name has a different config or an
    unreadable checkpoint.
    """
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    det = _as_detector(config)
    X = check_images(X_train, name="X_train")
    det._check_fits_min_size(X)
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1; got {num_workers}")
    if det.config.batch_size < num_workers:
        raise ValueError(f"batch_size ({det.config.batch_size}) is the global batch split over workers; "
                         f"it must be >= num_workers ({num_workers})")
    if X.dtype != torch.uint8:
        X = (X * 255).round().to(torch.uint8)  # workers get uint8: 4x smaller in the object store
    val = None
    if X_val is not None:
        X_val = check_images(X_val, expected_shape=tuple(X.shape[1:]), name="X_val")
        y_val = check_labels(y_val, len(X_val), name="y_val")
        val = ray.put((X_val.numpy(), y_val))
    det._check_selection_data(y_val)  # head_selection="diagnostic" without held-out normals: fail before training
    shape = tuple(X.shape[1:])

    probe = _as_detector(det)
    probe.config.device = "cpu"
    probe.init_model(shape)  # draws the jigsaw permutations from config.seed once, here
    permutations = probe.permutations_

    train_config = {"detector": _as_detector(det), "images": ray.put(X.numpy()), "val": val,
                    "permutations": permutations, "use_gpu": use_gpu}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=train_config,
        scaling_config=ray.train.ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                               resources_per_worker=resources_per_worker),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage_path, callbacks=callbacks or None,
            failure_config=ray.train.FailureConfig(max_failures=max_failures,
                                                   controller_failure_limit=controller_failure_limit),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=checkpoints_to_keep),
            # Train's per-report INFO lines (the whole metrics dict, every epoch) drown the progress output.
            logging_config=ray.train.LoggingConfig(log_level=os.environ.get("MTSSAD_RAY_TRAIN_LOG_LEVEL", "WARNING")),
        ),
    )
    t0 = time.perf_counter()
    try:
        result = trainer.fit()
    except ray.train.WorkerGroupError as e:  # a checkpoint that cannot be resumed: say so, not "worker died"
        causes = [getattr(c, "cause", c) for c in e.worker_failures.values()]  # RayTaskError -> the worker's error
        causes = [c for c in causes if isinstance(c, CheckpointError)]
        if causes:
            raise CheckpointError(str(causes[0])) from e
        raise
    train_seconds = time.perf_counter() - t0
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run {name!r} under {storage_path} finished without a checkpoint")
    state = _load_state(result.checkpoint)

    det.config.device = _driver_device(det.config.device)
    det.init_model(shape, permutations=permutations)
    det.model_.load_state_dict(state["model"])
    det.history_ = list(state["history"])
    det.train_seconds_ = train_seconds
    det.ray_run_ = {"path": result.path, "checkpoint": result.checkpoint.path, "world_size": state["world_size"],
                    "starts": list(state["starts"])}
    return det.calibrate(X, X_val=X_val, y_val=None if X_val is None else y_val.astype(int))
