"""The Ray Train worker side of `fit_ddp` (mtssad.distributed.train): the DDP loop, checkpoints, rank 0's finish.

Every rank trains on its share of each global batch (`shard_batches`), reports every epoch
(a barrier), and rank 0 attaches a checkpoint every `checkpoint_every` epochs and a
weights-only one at the end. Rank 0 then recalibrates, calibrates and scores on its own
device and returns only bytes and numpy arrays (Ray Train hands rank 0's return value to
the caller as `Result.return_value`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

import numpy as np
import torch

from ..detector import load_failure_reason
from ..train import batch_order, diagnostic_epoch, make_optimizer, make_scheduler, planned_epochs, seed_everything, train_step

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
        raise CheckpointError(f"{where}: not a readable mtssad training checkpoint ({load_failure_reason(e)}); "
                              "delete the run directory or use another name to start afresh") from None
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


def _checkpoint_due(epoch: int, epochs: int, every: int) -> bool:
    """Checkpoint after every `every`-th epoch; the last epoch gets the final (weights-only) checkpoint."""
    return epoch == epochs - 1 or (epoch + 1) % every == 0


def _report_checkpoint(metrics: dict, state: dict | None, upload: str) -> None:
    """ray.train.report on every rank (a barrier); rank 0 passes `state`, written to a fresh directory.

    The directory is deleted once uploaded; with upload="async" that happens in Ray's background
    thread while the next epoch trains (so it cannot be a TemporaryDirectory closed here).
    """
    import ray.train
    from ray.train import CheckpointUploadMode

    if state is None:
        ray.train.report(metrics)
        return
    d = tempfile.mkdtemp(prefix="mtssad-ckpt-")
    try:
        torch.save(state, os.path.join(d, STATE_FILE))
    except BaseException:
        shutil.rmtree(d, ignore_errors=True)
        raise
    mode = CheckpointUploadMode.ASYNC if upload == "async" else CheckpointUploadMode.SYNC
    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d), checkpoint_upload_mode=mode,
                     delete_local_checkpoint_after_upload=True)


def _finish_on_rank0(det, X, X_val, y_val, X_cal, score_sets: dict, history: list, starts: list, world: int) -> dict:
    """Recalibrate, calibrate and score on this worker's device; what travels back to the caller (no tensors)."""
    t0 = time.perf_counter()
    det.history_ = history
    det.calibrate(X, X_val=X_val, y_val=None if X_val is None else y_val.astype(int), X_calibration=X_cal)
    calibrate_seconds = time.perf_counter() - t0
    scores, set_seconds = {}, {}
    for name, ref in score_sets.items():
        t1 = time.perf_counter()
        score, heads = det.score_samples_and_tasks(_as_tensor(_get_images(ref)))
        scores[name] = (np.asarray(score, np.float64), {h: np.asarray(v, np.float64) for h, v in heads.items()})
        set_seconds[name] = time.perf_counter() - t1
    return {"detector": det.to_bytes(), "scores": scores, "history": history, "starts": starts, "world_size": world,
            "calibrate_seconds": calibrate_seconds, "score_seconds": time.perf_counter() - t0 - calibrate_seconds,
            "set_seconds": set_seconds, "device": str(det.device_)}


def train_loop_per_worker(cfg: dict) -> dict | None:
    """Ray Train worker: build the detector's network, train on this rank's shares, report every epoch,
    checkpoint every `checkpoint_every`; rank 0 then finishes (calibrates, scores) and returns the results."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    det = cfg["detector"]  # an unfitted detector: its parameters and plan recipe
    device = ray.train.torch.get_device() if cfg["use_gpu"] else torch.device("cpu")
    det.set_params(device=str(device), progress=False)
    config = det.config
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
        start, history, starts = st["epoch"] + 1, st["history"], st["starts"]
        if "optimizer" in st:  # a training checkpoint; the final one holds the weights only
            optimizer.load_state_dict(st["optimizer"])
            scheduler.load_state_dict(st["scheduler"])
            order_gen.set_state(st["order_gen"])
            if world == 1:
                torch.set_rng_state(st["torch_rng"])
        elif start < epochs:
            raise CheckpointError(f"checkpoint {checkpoint.path} is the final one of a run of {start} epochs; this "
                                  f"run plans {epochs} (other data or worker count?): use another name to train it")
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
        if rank == 0 and X_val is not None and diagnostic_epoch(epoch, epochs):
            stats.update(det._validation_accuracy(X_val, y_val))
        history = history + [stats]
        state = None
        if rank == 0 and _checkpoint_due(epoch, epochs, cfg["checkpoint_every"]):
            state = {"model": det.model_.state_dict(), "epoch": epoch, "history": history, "starts": starts,
                     "world_size": world, "identity": _run_identity(det, X.shape[1:])}
            if epoch < epochs - 1:  # resumable mid-run: optimizer, schedule and random streams too
                state.update(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                             order_gen=order_gen.get_state(), torch_rng=torch.get_rng_state())
        metrics = {**stats, "world_size": world, "start_epoch": start, "pid": os.getpid(), "n_local": n_seen,
                   "epochs": epochs}
        _report_checkpoint(metrics, state, cfg["checkpoint_upload"])

    if rank != 0:
        return None
    score_sets = {name: cfg["score_refs"][key] for name, key in cfg["score_sets"].items()}
    X_cal = None if cfg.get("calibration") is None else _as_tensor(_get_images(cfg["calibration"]))
    return _finish_on_rank0(det, X, X_val, y_val, X_cal, score_sets, history, starts, world)
