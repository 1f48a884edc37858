"""Training of a multi-head network on a transform plan (eq. 7).

`run_epochs` is the one epoch loop: the local fit (`fit_epochs`) and every Ray Train
DDP rank (`mtssad.distributed.ddp_worker`) call it, with rank, world size, an
all-reduce and an end-of-epoch hook as arguments, so a change to training (the
step budget, early stopping, precision) is made once.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import DetectorConfig
from .transforms import Plan


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch (dropout, init); return the generator used for shuffling and offsets."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def to_model_input(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] images -> float32 in [-1, 1] on `device`."""
    batch = batch.to(device, non_blocking=True)
    if batch.dtype == torch.uint8:
        return batch.float().div_(127.5).sub_(1.0)
    return batch.float().mul(2.0).sub_(1.0)


def make_optimizer(model: nn.Module, config: DetectorConfig, *, fused: bool = False) -> torch.optim.Optimizer:
    """Nesterov SGD. fused=True (CUDA): one kernel for the update, and GradScaler's inf check without a host sync."""
    return torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0,
        weight_decay=config.weight_decay, **({"fused": True} if fused else {}),
    )


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine annealing from the initial lr to 0 over `total_steps` optimizer steps."""
    total = max(1, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))


def plan_loss(logits: dict[str, torch.Tensor], plan: Plan, n_images: int):
    """Eq. 7: sum over heads and their labelled variants of the cross-entropy, averaged over images
    (times plan.loss_weight: composed baselines average over their compositions).

    logits[h]: (V*N, m_h). Returns (loss, correct[h], counted[h]): `correct` as 0-dim tensors on the
    logits' device (summed there, read once an epoch), `counted` as ints known without the device.
    Selecting the labelled variants by a cached index (no boolean mask) keeps the host out of the step.
    """
    device = next(iter(logits.values())).device
    loss = 0.0
    correct, counted = {}, {}
    for i, head in enumerate(plan.heads):
        keep, y = plan.head_targets(i, device)  # (V_h,) variant indices, (V_h,) their labels
        lg = logits[head.name].view(plan.num_variants, n_images, -1)[keep].flatten(0, 1).float()  # (V_h*N, m)
        yy = y.repeat_interleave(n_images)  # (V_h*N,) variant-major like the batch
        loss = loss + F.cross_entropy(lg, yy, reduction="sum") * (plan.loss_weight / n_images)
        correct[head.name] = (lg.argmax(1) == yy).sum()
        counted[head.name] = int(keep.numel()) * n_images
    return loss, correct, counted


def amp_dtype(config: DetectorConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a training/scoring pass, or None for float32.

    amp applies on CUDA only: bfloat16 where the GPU supports it (no loss scaling needed), else
    float16, which `train_step` pairs with a GradScaler (small float16 gradients underflow to zero).
    """
    if not config.amp or device.type != "cuda":
        return None
    if config.amp_dtype == "float16" or (config.amp_dtype == "auto" and not native_bf16(device)):
        return torch.float16
    return torch.bfloat16


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 natively (Ampere and later); emulated bfloat16 (T4, V100) is slow."""
    with torch.cuda.device(device):
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch without the keyword: it did not count emulation then
            return torch.cuda.is_bf16_supported()


def train_step(model: nn.Module, plan: Plan, images: torch.Tensor, optimizer: torch.optim.Optimizer, *,
               device: torch.device, generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
               scaler: "torch.amp.GradScaler | None" = None):
    """One SGD step on a batch of original images (uint8 or [0, 1] float, (N, C, H, W)).

    Returns (loss, correct, counted) with loss and correct as tensors on `device`: nothing here
    waits for the device (no .item(), no boolean masks), so a GPU runs ahead of the host.
    dtype: the autocast dtype (`amp_dtype`); float16 needs `scaler`.
    """
    model.train()
    x = to_model_input(images, device)  # (N, C, H, W)
    xv = plan.make(x, train=True, generator=generator)  # (V*N, C, H, W)
    with torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        logits = model(xv)
    loss, correct, counted = plan_loss(logits, plan, x.shape[0])
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.detach(), correct, counted


def batch_order(n: int, batch_size: int, generator: torch.Generator, world_size: int = 1) -> list[torch.Tensor]:
    """Shuffled index batches; a last batch of one image (fewer than world_size with DDP) is folded into the previous
    (BatchNorm needs > 1 image, and every DDP rank needs a share)."""
    order = torch.randperm(n, generator=generator)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < max(2, world_size):
        batches[-2] = torch.cat(batches[-2:])
        batches.pop()
    return batches


READ_EVERY = 50  # epochs a single GPU process runs between reads of its loss/accuracy sums (run_epochs)
DIAGNOSTIC_POINTS = 20  # held-out diagnostics a fit records at most (evenly spaced, the last epoch always)


def diagnostic_epoch(epoch: int, epochs: int, points: int = DIAGNOSTIC_POINTS) -> bool:
    """Whether epoch (0-based) of `epochs` records the held-out task diagnostic.

    Every epoch when there are few; with the step budget a 30-image CUB class runs 300 one-step
    epochs, and a diagnostic pass over the held-out images every step would cost more than training.
    """
    every = max(1, math.ceil(epochs / points))
    return (epoch + 1) % every == 0 or epoch == epochs - 1


def planned_epochs(steps_per_epoch: int, config: DetectorConfig) -> int:
    """The step budget (METHOD.md): `config.epochs`, plus whole epochs until `config.min_steps` optimizer steps.

    A digits class of ~100 images gets 4 steps an epoch: 3 epochs would be 12 SGD steps where the
    paper's classes get thousands. Big classes are unaffected (their epochs already exceed min_steps).
    Early stopping (`mtssad.stopping`) may end a fit before this many epochs; never after.
    """
    return max(config.epochs, math.ceil(config.min_steps / max(1, steps_per_epoch)))


@dataclass
class Training:
    """What one fit's loop carries from epoch to epoch (and what a DDP checkpoint saves and restores)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    steps_per_epoch: int  # global batches an epoch (the same on every DDP rank)
    epochs: int  # planned epochs (`planned_epochs`); early stopping may end sooner
    scaler: "torch.amp.GradScaler | None" = None  # float16 autocast only
    dtype: torch.dtype | None = None  # autocast dtype, None = float32
    start_epoch: int = 0  # > 0 when resumed from a checkpoint
    history: list = field(default_factory=list)  # one stats dict per finished epoch

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


def prepare_training(model: nn.Module, config: DetectorConfig, n_images: int, device: torch.device,
                     world_size: int = 1) -> Training:
    """Optimizer, cosine schedule over the planned steps, precision, and cuDNN autotuning for a fit of n_images."""
    dtype = amp_dtype(config, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes every step: let cuDNN pick its fastest kernels once
    optimizer = make_optimizer(model, config, fused=device.type == "cuda")
    steps = len(batch_order(n_images, config.batch_size, torch.Generator().manual_seed(0), world_size))
    epochs = planned_epochs(steps, config)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return Training(optimizer, make_scheduler(optimizer, steps * epochs), steps, epochs, scaler, dtype)


def run_epochs(model, plan: Plan, images: torch.Tensor, config: DetectorConfig, training: Training, *,
               device: torch.device, order_generator: torch.Generator,
               aug_generator: Callable[[int], torch.Generator] | None = None, rank: int = 0, world_size: int = 1,
               all_reduce: Callable[[list[float]], list[float]] | None = None,
               on_diagnostic: Callable[[int, dict], None] | None = None, stopper=None,
               end_of_epoch: Callable[[int, dict, bool], None] | None = None,
               progress_callback: Callable[[int, int], None] | None = None,
               read_every: int | None = None) -> list[dict]:
    """The one epoch loop of every fit: local (`fit_epochs`) and each Ray Train DDP rank (ddp_worker).

    images: (N, C, H, W) training images; moved to `device` once. Each epoch takes the global batches
    of `batch_order` (from `order_generator`, the same on every rank) and trains on this rank's share
    `idx[rank::world_size]`. Loss and accuracy counts are summed on the device and read once an epoch
    (with `all_reduce` summing them across ranks; one GPU process reads every READ_EVERY epochs, or when a
    hook needs them). Then, in order:
      on_diagnostic(epoch, stats)  the held-out task diagnostic, on `diagnostic_epoch`s (rank 0);
      stopper                      early stopping (`mtssad.stopping.EarlyStopping`) when due: measured on
                                   rank 0, its stop decision summed through `all_reduce` so every rank stops
                                   at the same epoch;
      end_of_epoch(epoch, stats, last)  e.g. DDP's report and checkpoint (a barrier on every rank);
      progress_callback(steps_done, steps_planned)  e.g. a sweep's progress board.
    aug_generator(epoch): the generator of the jigsaw offsets (default: `order_generator`, the local loop's
    use; DDP ranks derive one per rank and epoch). Returns training.history (also kept on `training`).
    """
    from tqdm.auto import tqdm

    images = images.to(device)  # once: no host-to-device copy per step
    reduce = all_reduce or (lambda values: values)
    heads = [h.name for h in plan.heads]
    history = training.history
    # One process on a GPU keeps each epoch's sums on the device until something needs them (a diagnostic,
    # a stopping measurement, the last epoch, READ_EVERY epochs): a 24-image CUB class has one step an
    # epoch, and a read every epoch would make the host wait for every step. Elsewhere: read every epoch.
    if read_every is None:
        read_every = READ_EVERY if device.type == "cuda" and all_reduce is None and end_of_epoch is None else 1
    unread: list[tuple[dict, torch.Tensor, int, list[int]]] = []  # (stats, device sums, images, counts)

    def read() -> None:
        """Fill the loss and accuracies of every unread epoch's stats (one host sync)."""
        rows = torch.stack([u[1] for u in unread]).tolist()  # (E, 1 + H)
        for (stats, _, n_seen, counted), row in zip(unread, rows):
            totals = reduce([row[0], float(n_seen)] + row[1:] + [float(v) for v in counted])
            stats["loss"] = totals[0] / max(1.0, totals[1])
            stats.update({f"acc_train/{h}": totals[2 + i] / max(1.0, totals[2 + len(heads) + i])
                          for i, h in enumerate(heads)})
        unread.clear()

    for epoch in range(training.start_epoch, training.epochs):
        t0 = time.perf_counter()
        gen = aug_generator(epoch) if aug_generator is not None else order_generator
        batches = batch_order(len(images), config.batch_size, order_generator, world_size)
        if device.type != "cpu":  # the epoch's order copied once, not an index copy from host memory per step
            batches = torch.cat(batches).to(device).split([len(b) for b in batches])
        sums = torch.zeros(1 + len(heads), dtype=torch.float64, device=device)  # loss x images, correct per head
        counted = [0] * len(heads)
        n_seen = 0
        with tqdm(total=len(images), desc=f"epoch {epoch + 1}/{training.epochs}", unit="img",
                  disable=not config.progress or rank != 0, leave=False) as bar:
            for idx in batches:
                local = idx[rank::world_size]  # this rank's share of the global batch
                loss, c, k = train_step(model, plan, images[local], training.optimizer, device=device, generator=gen,
                                        dtype=training.dtype, scaler=training.scaler)
                training.scheduler.step()
                sums[0] += loss.double() * len(local)  # float64 sums, as the host's float() sums were
                sums[1:] += torch.stack([c[h] for h in heads])
                counted = [a + k[h] for a, h in zip(counted, heads)]
                n_seen += len(local)
                bar.update(len(idx))
            stats = {"epoch": epoch, "lr": training.optimizer.param_groups[0]["lr"],
                     "steps": (epoch + 1) * training.steps_per_epoch}
            unread.append((stats, sums, n_seen, counted))
            last = epoch == training.epochs - 1
            diagnostic = on_diagnostic is not None and rank == 0 and diagnostic_epoch(epoch, training.epochs)
            measuring = stopper is not None and stopper.due(stats["steps"], last=last)
            if last or diagnostic or measuring or len(unread) >= read_every:
                read()
                bar.set_postfix(loss=f"{stats['loss']:.3f}")
        stats["seconds"] = time.perf_counter() - t0  # host wall time (on a GPU, epochs between reads run ahead)
        if diagnostic:
            on_diagnostic(epoch, stats)
        stop = False
        if measuring:
            if rank == 0:
                stop = stopper.update(stats["steps"], model, stats)
            else:
                stopper.advance(stats["steps"])  # the same schedule as rank 0: every rank joins each decision
            stop = reduce([float(stop)])[0] > 0 if world_size > 1 else stop
        history.append(stats)
        if (stop or last) and stopper is not None and rank == 0:
            stopper.restore_best(model)  # before the hook: a final checkpoint must hold the weights kept
        if end_of_epoch is not None:
            end_of_epoch(epoch, stats, stop or last)
        if progress_callback is not None:
            progress_callback(stats["steps"], training.total_steps)
        if stop:
            break
    if unread:
        read()
    return history


def fit_epochs(model, plan, images: torch.Tensor, config: DetectorConfig, *, device: torch.device,
               generator: torch.Generator, on_epoch: Callable[[int, dict], None] | None = None, stopper=None,
               progress_callback: Callable[[int, int], None] | None = None) -> list[dict]:
    """The local training loop: `planned_epochs` epochs (or fewer, stopped early), cosine lr over the planned
    steps, tqdm, history per epoch. on_epoch(epoch, stats) adds the held-out diagnostic on `diagnostic_epoch`s.

    On CUDA the jigsaw offsets come from a CUDA generator seeded from `config.seed` (no per-step copy from
    CPU memory); on CPU from `generator`, as before, so CPU results do not depend on this choice.
    """
    training = prepare_training(model, config, len(images), device)
    aug = None
    if device.type == "cuda":
        cuda_gen = torch.Generator(device=device).manual_seed(config.seed)
        aug = lambda epoch: cuda_gen  # noqa: E731
    return run_epochs(model, plan, images, config, training, device=device, order_generator=generator,
                      aug_generator=aug, on_diagnostic=on_epoch, stopper=stopper, progress_callback=progress_callback)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, plan: Plan, images: torch.Tensor, *, batch_size: int,
                          device: torch.device) -> None:
    """Replace BatchNorm running statistics by exact averages over all training variants.

    With few optimizer steps (small normal classes) the exponential running averages lag
    the weights, and eval-mode outputs collapse; one pass in train mode with
    momentum=None (cumulative average) over eval-mode variants fixes that. Dropout is
    left in eval mode; no weight changes.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        for start in range(0, len(images), batch_size):
            x = to_model_input(images[start:start + batch_size], device)
            model(plan.make(x, train=False))
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        model.eval()
