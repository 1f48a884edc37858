"""Data-parallel training of a detector with Ray Train (V2 `TorchTrainer`, DDP).

    fit = fit_ddp(X_normal, DetectorConfig(backbone="wrn-16-4"), num_workers=2, use_gpu=True,
                  storage_path="s3://bucket/run", name="cifar10-3", X_val=X_val, y_val=y_val,
                  score_sets={"val": X_val, "test": X_test})
    fit.detector                       # the same MultiTaskDetector that .fit() returns (calibrated)
    fit.scores["test"]                 # (N,) score_samples of X_test, computed on rank 0's device
    det = train_detector_ddp(...)      # the same, detector only

When DDP pays (`use_ddp`): when asked for (num_workers >= 2) or, with the worker count left to
the caller (None), for fit sets of DDP_MIN_FIT_IMAGES images or more; below that a class trains
in its own process (a TorchTrainer costs ~15-18 s of start-up, measured in
benchmarks/results/training.md). DDP workers get whole GPUs (NCCL refuses two ranks on one GPU).

Each worker (`mtssad.distributed.ddp_worker`) runs the single-process step
(`mtssad.train.train_step`) on its share of every global batch:

* Global batch = `config.batch_size` ORIGINAL images, as in the local path. Every
  rank draws the same seeded shuffle (`batch_order`), and rank r trains on
  `batch[r::world_size]`, so per-worker batch = batch_size / num_workers
  originals (each expanded to all its variants). The shares of one step are
  disjoint and together are the whole global batch; all ranks take the same number of
  steps, as DDP needs. DDP averages the gradients of the per-rank mean losses,
  which equals the global mean when batch_size is a multiple of num_workers.
  BatchNorm statistics are per rank (no SyncBatchNorm); recalibration replaces them.
  The number of epochs is the local loop's step budget (`planned_epochs`).
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
* After training, rank 0 finishes the detector on its own device: BatchNorm
  recalibration, head selection, calibration, and the scores of `score_sets`
  (validation, test). Only the results travel back to the caller: the detector
  file's bytes (weights + fitted state) and the score arrays. The caller (a Tune
  trial or a job's driver, which reserved 1 CPU) does no heavy work.
* Rank 0 reports metrics every epoch and a checkpoint (unwrapped module, optimizer,
  scheduler, epoch, history, generator states) every `checkpoint_every` epochs,
  uploaded in the background (`checkpoint_upload="async"`, Ray's
  CheckpointUploadMode.ASYNC) while the next epoch trains, plus a weights-only one
  at the end. A failed worker group is restarted from the last checkpoint
  (`max_failures`); running again with the same `name` and `storage_path` resumes
  the stored run (driver-level restore); a finished run is not retrained (its
  final checkpoint is only recalibrated and scored again).
* Every checkpoint stores the run's identity (detector class, image shape, every
  config field but device/progress). Resuming it with a different config (grid,
  k, backbone, epochs, ...) raises CheckpointError naming the differing fields, as
  does an unreadable checkpoint state file (naming the file): a new config needs
  a new name. (The worker group is retried `max_failures` times first.)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import torch
from sklearn.base import clone

from ..config import DetectorConfig
from ..validation import check_images
from .ddp_worker import (  # noqa: F401  (re-exported: the checkpoint format belongs to this API)
    RESUME_MAY_DIFFER,
    STATE_FILE,
    CheckpointError,
    check_resumable,
    train_loop_per_worker,
)
# Epochs between training checkpoints (plus a weights-only one at the end): a WRN-16-4 state with its
# optimizer is ~21 MB, so a checkpoint every epoch of 1800 small trials would upload hundreds of GB.
CHECKPOINT_EVERY = 5
CHECKPOINT_UPLOADS = ("async", "sync")

# Fit-set size from which DDP is chosen when the caller leaves the worker count open (num_workers=None).
# Reasoned, not measured on a GPU (none was available): a TorchTrainer costs ~15-18 s of start-up
# (benchmarks/results/training.md, fixed_s), and a second worker saves at most half the training time;
# for DDP to cut a fit's wall time by >= 25%, training on one device must last >= 4 x 17 s ~ 70 s.
# WRN-16-4 on 3x32x32 is 0.79 GFLOP forward per variant (torch FlopCounterMode), ~2.4 GFLOP to train,
# x 14 variants (8 + k, k = 6) ~ 33 GFLOP per image-epoch; at ~15 TFLOP/s sustained (AMP, one A10G-class
# GPU) that is ~450 image-epochs/s, so 15 epochs take >= 70 s from ~2,000 images. A CUB-200 class
# (~30 images) trains in-process; a CIFAR-10 class (5,000) and OOD training sets (50,000) take DDP.
# Re-measure with benchmarks/gpu.py on the cluster's GPU and pass `threshold=`.
DDP_MIN_FIT_IMAGES = 2000
DDP_AUTO_WORKERS = 2  # workers `ddp_workers` picks above the threshold when the caller left it open


def ddp_workers(num_workers: int | None, n_fit_images: int, *, threshold: int = DDP_MIN_FIT_IMAGES,
                auto_workers: int = DDP_AUTO_WORKERS) -> int:
    """DDP workers to train a fit set of `n_fit_images` with; 0 = train in the caller's own process.

    num_workers >= 2: asked for DDP, granted. num_workers == 1: one process, so in-process (a
    one-worker TorchTrainer only adds its ~17 s start-up). None: the rule decides: `auto_workers`
    workers from `threshold` fit images up (DDP_MIN_FIT_IMAGES, reasoned in this module), else 0.
    """
    if num_workers is not None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1 (or None: decided by the fit-set size); got {num_workers}")
        return int(num_workers) if num_workers >= 2 else 0
    if auto_workers < 2:
        raise ValueError(f"auto_workers must be >= 2 (DDP); got {auto_workers}")
    return int(auto_workers) if n_fit_images >= threshold else 0


def use_ddp(num_workers: int | None, n_fit_images: int, threshold: int = DDP_MIN_FIT_IMAGES) -> bool:
    """True: train with a TorchTrainer of DDP workers (`fit_ddp`); False: train in the trial's process.

    Asked for (num_workers >= 2), or num_workers=None and at least `threshold` fit images
    (DDP_MIN_FIT_IMAGES = 2000, reasoned from the TorchTrainer start-up cost in this module's notes).
    """
    return ddp_workers(num_workers, n_fit_images, threshold=threshold) >= 2


def check_ddp_resources(num_workers: int, use_gpu: bool, resources_per_worker: dict | None) -> None:
    """Refuse fractional GPUs per DDP worker before anything starts (NCCL: 'Duplicate GPU detected').

    Two ranks of one process group cannot share a GPU, so with num_workers >= 2 every worker needs a
    whole number (>= 1) of GPUs. One worker may take a fraction (no NCCL peer to clash with); fractional
    GPUs for several trials on one GPU belong to in-process training, not DDP.
    """
    gpus = (resources_per_worker or {}).get("GPU", 1 if use_gpu else 0)
    if num_workers >= 2 and gpus and (float(gpus) < 1 or float(gpus) != int(gpus)):
        raise ValueError(
            f"DDP with {num_workers} workers needs whole GPUs per worker; got GPU={gpus} per worker. NCCL refuses "
            "two ranks on one GPU ('Duplicate GPU detected'). Use 1 GPU (or 2, 3, ...) per worker, or train "
            "in-process with a fractional GPU per trial (num_workers=1)")


def _as_detector(config):
    """A DetectorConfig, a dict of its fields, or an unfitted detector -> an unfitted detector copy."""
    from ..detector import MultiTaskDetector

    if isinstance(config, DetectorConfig):
        return MultiTaskDetector.from_config(config)
    if isinstance(config, dict):
        return MultiTaskDetector(**config)
    if isinstance(config, MultiTaskDetector):
        return clone(config)  # its parameters, none of its fitted state
    raise TypeError(f"config must be a DetectorConfig, a dict of its fields or an unfitted MultiTaskDetector; "
                    f"got {type(config).__name__}")


def _as_uint8(X: torch.Tensor | None) -> torch.Tensor | None:
    """Images as uint8 0-255: workers get them 4x smaller in the object store than float32."""
    return X if X is None or X.dtype == torch.uint8 else (X * 255).round().to(torch.uint8)


def _gpus_reserved_here() -> float | None:
    """GPUs Ray reserved for this process when it is a Ray task/actor (e.g. a Tune trial); None in a driver."""
    try:
        import ray
        from ray._private.worker import WORKER_MODE, global_worker  # private: no public "am I a worker" call

        if not ray.is_initialized() or global_worker.mode != WORKER_MODE:
            return None
        return float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0))
    except Exception:
        return None


def _driver_device(device: str) -> str:
    """Where the caller's copy of the detector lives. Ray 2.60 shows every GPU to actors that reserved none,
    so a Tune trial or task without a GPU gets "cpu" for device="auto" rather than a GPU it did not ask for."""
    from ..validation import resolve_device

    if device == "auto" and _gpus_reserved_here() == 0:
        return "cpu"
    try:
        return str(resolve_device(device))
    except ValueError:  # e.g. "cuda" asked for, but this driver (a CPU head or Tune trial) sees no GPU
        return "cpu"


@dataclass
class DDPFit:
    """What `fit_ddp` brings back from rank 0: the finished detector and the scores it computed."""

    detector: object  # the fitted, calibrated MultiTaskDetector (or subclass), loaded on the caller's device
    scores: dict = field(default_factory=dict)  # score set name -> (N,) score_samples, computed on rank 0
    head_scores: dict = field(default_factory=dict)  # score set name -> head -> (N,) per-head scores
    train_seconds: float = 0.0  # wall time of the Ray run (worker start, training, rank-0 calibration and scoring)
    calibrate_seconds: float = 0.0  # rank 0's BatchNorm recalibration + calibration
    score_seconds: float = 0.0  # rank 0's scoring of the score sets
    set_seconds: dict = field(default_factory=dict)  # score set name -> rank 0's seconds scoring it
    device: str = ""  # where rank 0 calibrated and scored (cuda:0, cpu)


def fit_ddp(X_train, config, *, num_workers: int = 1, use_gpu: bool = False, resources_per_worker: dict | None = None,
            storage_path: str, name: str, max_failures: int = 2, controller_failure_limit: int = -1,
            checkpoints_to_keep: int = 2, checkpoint_every: int = CHECKPOINT_EVERY, checkpoint_upload: str = "async",
            X_val=None, y_val=None, score_sets: dict | None = None, callbacks=None) -> DDPFit:
    """Fit a detector on normal images X_train with `num_workers` Ray Train workers; finish and score it on rank 0.

    config: a DetectorConfig, a dict of its fields, or an unfitted MultiTaskDetector (or subclass,
    e.g. from `mtssad.methods.make_method`). X_val / y_val (1 = normal): the per-epoch head
    diagnostic and the reference normals of `calibrate`, as in `fit`. score_sets: name -> images
    (N, C, H, W) that rank 0 scores with the finished detector on its device (e.g. {"val": X_val,
    "test": X_test}); only the score arrays come back. resources_per_worker: e.g. {"CPU": 0.5} or
    {"CPU": 4, "GPU": 1}; with num_workers >= 2 GPUs must be whole (ValueError before anything starts).
    storage_path/name: checkpoints go to {storage_path}/{name}/ (a URI or a path shared by the
    nodes); a fixed name makes a rerun resume. checkpoint_every: epochs between training checkpoints
    (and one at the end); checkpoint_upload: "async" (uploaded while the next epoch trains) or "sync".
    controller_failure_limit=0 makes an unschedulable worker group fail fast (tests); keep -1 on
    autoscaling clusters, where the workers wait for nodes.
    Raises CheckpointError when the stored run under this name has a different config or an
    unreadable checkpoint.
    """
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from .data import load_detector
    from .storage import absolute, check_storage_path

    det = _as_detector(config)
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1; got {num_workers}")
    check_ddp_resources(num_workers, use_gpu, resources_per_worker)
    if int(checkpoint_every) < 1:
        raise ValueError(f"checkpoint_every must be >= 1 epoch; got {checkpoint_every}")
    if checkpoint_upload not in CHECKPOINT_UPLOADS:
        raise ValueError(f"checkpoint_upload must be one of {CHECKPOINT_UPLOADS}; got {checkpoint_upload!r}")
    # The local fit's checks, before anything starts; the calibration normals are held out as in fit.
    data = det.prepare_fit(X_train, X_val=X_val, y_val=y_val, name="X_train")
    if data.config.batch_size < num_workers:
        raise ValueError(f"batch_size ({data.config.batch_size}) is the global batch split over workers; "
                         f"it must be >= num_workers ({num_workers})")
    X, X_val, y_val, X_cal = (_as_uint8(data.X), data.X_val, data.y_val, _as_uint8(data.X_calibration))
    shape = tuple(X.shape[1:])
    checked, keys = {}, {}  # one object per distinct array: the same array under two names is shipped once
    for set_name, images in (score_sets or {}).items():
        if id(images) not in checked:  # checked here, before any Ray call
            checked[id(images)] = check_images(images, expected_shape=shape, name=f"score_sets[{set_name!r}]")
        keys[set_name] = id(images)
    storage_path = absolute(storage_path)
    if ray.is_initialized():
        check_storage_path(storage_path)

    val = None if X_val is None else ray.put((X_val.numpy(), y_val))
    cal = None if X_cal is None else ray.put(X_cal.numpy())
    refs = {key: ray.put(images.numpy()) for key, images in checked.items()}

    probe = _as_detector(det)
    probe.set_params(device="cpu")
    probe.init_model(shape)  # draws the jigsaw permutations from config.seed once, here
    permutations = probe.permutations_

    train_config = {"detector": _as_detector(det), "images": ray.put(X.numpy()), "val": val, "calibration": cal,
                    "permutations": permutations, "use_gpu": use_gpu, "checkpoint_every": int(checkpoint_every),
                    "checkpoint_upload": checkpoint_upload, "score_refs": refs, "score_sets": keys}
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
    out = result.return_value
    if not isinstance(out, dict) or "detector" not in out:
        raise RuntimeError(f"Ray Train run {name!r} under {storage_path} finished without rank 0's results "
                           f"(got {type(out).__name__})")
    fitted = load_detector(out["detector"], device=_driver_device(data.config.device))
    fitted.train_seconds_ = train_seconds
    fitted.ray_run_ = {"path": result.path, "checkpoint": result.checkpoint.path if result.checkpoint else None,
                       "world_size": out["world_size"], "starts": list(out["starts"])}
    return DDPFit(detector=fitted, scores={k: v[0] for k, v in out["scores"].items()},
                  head_scores={k: v[1] for k, v in out["scores"].items()}, train_seconds=train_seconds,
                  calibrate_seconds=out["calibrate_seconds"], score_seconds=out["score_seconds"],
                  set_seconds=out.get("set_seconds", {}), device=out["device"])


def train_detector_ddp(X_train, config, **kwargs):
    """`fit_ddp(X_train, config, **kwargs).detector`: the fitted detector, calibrated on rank 0.

    The detector saves/loads like a locally fitted one; train_seconds_ is the wall time of the Ray
    run (including worker start); ray_run_ holds the run's path, last checkpoint, world size and the
    epochs each attempt started at.
    """
    return fit_ddp(X_train, config, **kwargs).detector
