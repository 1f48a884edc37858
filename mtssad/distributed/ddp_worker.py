"""The Ray Train worker side of `fit_ddp` (mtssad.distributed.train): the DDP loop, checkpoints, rank 0's finish.

Every rank runs the local fit's epoch loop (`mtssad.train.run_epochs`) on its share of each global
batch (`batch_order` with the world size), reports every epoch
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

from ..detector_file import load_failure_reason
from ..train import prepare_training, run_epochs, seed_everything

STATE_FILE = "state.pt"
# Config fields a resumed run may change: where it runs and how it reports, not what it trains.
RESUME_MAY_DIFFER = ("device", "progress")


class CheckpointError(ValueError):
    """A stored Ray Train checkpoint that cannot be resumed: unreadable, or from a different config."""


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


def _finish_on_rank0(det, X, X_val, y_val, X_cal, score_sets: dict, starts: list, world: int) -> dict:
    """Recalibrate, calibrate and score on this worker's device; what travels back to the caller (no tensors)."""
    t0 = time.perf_counter()
    det.calibrate(X, X_val=X_val, y_val=None if X_val is None else y_val.astype(int), X_calibration=X_cal)
    calibrate_seconds = time.perf_counter() - t0
    scores, set_seconds = {}, {}
    for name, ref in score_sets.items():
        t1 = time.perf_counter()
        score, heads = det.score_samples_and_tasks(_as_tensor(_get_images(ref)))
        scores[name] = (np.asarray(score, np.float64), {h: np.asarray(v, np.float64) for h, v in heads.items()})
        set_seconds[name] = time.perf_counter() - t1
    return {"detector": det.to_bytes(), "scores": scores, "history": det.history_, "starts": starts,
            "world_size": world, "calibrate_seconds": calibrate_seconds,
            "score_seconds": time.perf_counter() - t0 - calibrate_seconds, "set_seconds": set_seconds,
            "device": str(det.device_)}


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
    X = _as_tensor(_get_images(cfg["images"]))  # (N, C, H, W) uint8
    X_val = y_val = None
    if cfg.get("val") is not None:
        X_val, y_val = _get_images(cfg["val"])
        X_val, y_val = _as_tensor(X_val), np.asarray(y_val, bool)

    config = det.config  # with this rank's device
    order_gen = seed_everything(config.seed)  # same init on every rank, as in MultiTaskDetector.fit
    det.init_model(tuple(X.shape[1:]), permutations=cfg["permutations"])
    model = ray.train.torch.prepare_model(det.model_)  # DDP (gloo on CPU, nccl on GPU) when world > 1
    training = prepare_training(model, config, len(X), device, world_size=world)  # the local loop's step budget
    X_cal = None if cfg.get("calibration") is None else _as_tensor(_get_images(cfg["calibration"]))

    checkpoint = ray.train.get_checkpoint()
    starts = []
    if checkpoint is not None:
        st = _load_state(checkpoint)
        check_resumable(st, det, tuple(X.shape[1:]), where=f"checkpoint {checkpoint.path}")
        det.model_.load_state_dict(st["model"])
        training.start_epoch, training.history, starts = st["epoch"] + 1, st["history"], st["starts"]
        if "optimizer" in st:  # a training checkpoint; the final one holds the weights only
            training.optimizer.load_state_dict(st["optimizer"])
            training.scheduler.load_state_dict(st["scheduler"])
            order_gen.set_state(st["order_gen"])
            if world == 1:
                torch.set_rng_state(st["torch_rng"])
            if training.scaler is not None and st.get("scaler") is not None:
                training.scaler.load_state_dict(st["scaler"])
        elif st.get("stopped_early") or training.start_epoch >= training.epochs:
            training.epochs = training.start_epoch  # finished (stopped early or ran out): nothing left to train
        else:
            raise CheckpointError(f"checkpoint {checkpoint.path} is the final one of a run of {training.start_epoch} "
                                  f"epochs; this run plans {training.epochs} (other data or worker count?): use "
                                  "another name to train it")
    starts = starts + [training.start_epoch]
    # Early stopping measures on rank 0 (it holds the held-out data); every rank stops at its decision.
    stopper = det.early_stopper(X, X_val=X_val, y_val=y_val, X_calibration=X_cal) if rank == 0 else None
    if stopper is None and config.early_stopping != "none":
        from ..stopping import EarlyStopping  # other ranks: the same schedule of measurements, no measure

        stopper = EarlyStopping(dict, monitor=config.early_stopping, every=config.eval_every, patience=config.patience)
    if stopper is not None and checkpoint is not None and st.get("stopper") is not None:
        stopper.load_state_dict(st["stopper"])  # the best so far, its weights, patience used, the schedule
    # The jigsaw offsets' generator, as the local fit's (fit_epochs): on a GPU one on the device (no copy from
    # host memory per step), else the batch-order generator itself.
    cuda_gen = torch.Generator(device=device).manual_seed(config.seed) if device.type == "cuda" else None
    if cuda_gen is not None and checkpoint is not None and st.get("aug_gen") is not None:
        cuda_gen.set_state(st["aug_gen"])

    def aug_generator(epoch: int) -> torch.Generator:
        if world == 1:
            return cuda_gen or order_gen  # exactly the local loop's generator use
        seed = _derived_seed(config.seed, rank, epoch)
        torch.manual_seed(seed)  # dropout, on CPU and GPU
        return torch.Generator(device=device).manual_seed(seed + 1)  # jigsaw offsets, on the training device

    def end_of_epoch(epoch: int, stats: dict, last: bool) -> None:
        history = list(training.history)  # run_epochs appended this epoch's stats already
        state = None
        if rank == 0 and (last or _checkpoint_due(epoch, training.epochs, cfg["checkpoint_every"])):
            state = {"model": det.model_.state_dict(), "epoch": epoch, "history": history, "starts": starts,
                     "world_size": world, "identity": _run_identity(det, X.shape[1:]),
                     "stopped_early": last and epoch < training.epochs - 1,
                     "best_step": stopper.best_step if stopper is not None and last else None}
            if not last:  # resumable mid-run: optimizer, schedule, random streams, loss scale, early stopping
                state.update(optimizer=training.optimizer.state_dict(), scheduler=training.scheduler.state_dict(),
                             order_gen=order_gen.get_state(), torch_rng=torch.get_rng_state(),
                             aug_gen=None if cuda_gen is None else cuda_gen.get_state(),
                             scaler=None if training.scaler is None else training.scaler.state_dict(),
                             stopper=None if stopper is None else stopper.state_dict())
        metrics = {**stats, "world_size": world, "start_epoch": training.start_epoch, "pid": os.getpid(),
                   "epochs": training.epochs}
        _report_checkpoint(metrics, state, cfg["checkpoint_upload"])

    on_diagnostic = None
    if X_val is not None:
        on_diagnostic = lambda epoch, stats: stats.update(det.validation_accuracy(X_val, y_val))  # noqa: E731
    history = run_epochs(model, det.plan_, X, config, training, device=device, order_generator=order_gen,
                         aug_generator=aug_generator, rank=rank, world_size=world,
                         all_reduce=lambda values: _sum_across_ranks(values, device), on_diagnostic=on_diagnostic,
                         stopper=stopper, end_of_epoch=end_of_epoch)
    best_step = None
    if checkpoint is not None and st.get("best_step") and (stopper is None or stopper.best_step is None):
        best_step = int(st["best_step"])  # resumed after the end: the kept step is the checkpoint's
    det.record_training(history, stopper, best_step=best_step)

    if rank != 0:
        return None
    score_sets = {name: cfg["score_refs"][key] for name, key in cfg["score_sets"].items()}
    return _finish_on_rank0(det, X, X_val, y_val, X_cal, score_sets, starts, world)
