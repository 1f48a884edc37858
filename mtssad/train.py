"""Training of a multi-head network on a transform plan (eq. 7).

`train_step` is the unit both the local loop (`fit_epochs`) and the Ray Train
worker (`mtssad.distributed.train`) call, so the two paths compute the same thing.
"""

from __future__ import annotations

import math
import random
import time
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


def make_optimizer(model: nn.Module, config: DetectorConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0,
        weight_decay=config.weight_decay,
    )


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine annealing from the initial lr to 0 over `total_steps` optimizer steps."""
    total = max(1, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))


def plan_loss(logits: dict[str, torch.Tensor], plan: Plan, n_images: int):
    """Eq. 7: sum over heads and their labelled variants of the cross-entropy, averaged over images
    (times plan.loss_weight: composed baselines average over their compositions).

    logits[h]: (V*N, m_h). Returns (loss, correct[h], counted[h]) with the counts as ints.
    """
    labels = plan.labels.to(next(iter(logits.values())).device)  # (V, H)
    loss = 0.0
    correct, counted = {}, {}
    for i, head in enumerate(plan.heads):
        y = labels[:, i].repeat_interleave(n_images)  # (V*N,) variant-major like the batch
        mask = y >= 0
        lg = logits[head.name][mask].float()
        yy = y[mask]
        loss = loss + F.cross_entropy(lg, yy, reduction="sum") * (plan.loss_weight / n_images)
        correct[head.name] = int((lg.argmax(1) == yy).sum())
        counted[head.name] = int(mask.sum())
    return loss, correct, counted


def train_step(model: nn.Module, plan: Plan, images: torch.Tensor, optimizer: torch.optim.Optimizer, *,
               device: torch.device, generator: torch.Generator | None = None, amp: bool = False):
    """One SGD step on a batch of original images (uint8 or [0, 1] float, (N, C, H, W))."""
    model.train()
    x = to_model_input(images, device)  # (N, C, H, W)
    xv = plan.make(x, train=True, generator=generator)  # (V*N, C, H, W)
    with torch.autocast(device_type=device.type, enabled=amp and device.type == "cuda"):
        logits = model(xv)
    loss, correct, counted = plan_loss(logits, plan, x.shape[0])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach()), correct, counted


def batch_order(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled index batches; a last batch of one image is folded into the previous (BatchNorm needs > 1)."""
    order = torch.randperm(n, generator=generator)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2] = torch.cat(batches[-2:])
        batches.pop()
    return batches


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
    """
    return max(config.epochs, math.ceil(config.min_steps / max(1, steps_per_epoch)))


def run_epoch(model, plan, images: torch.Tensor, optimizer, scheduler, *, batch_size: int, device: torch.device,
              generator: torch.Generator, amp: bool = False, bar=None) -> dict:
    """One pass over `images`; returns mean loss and per-head training accuracy."""
    total_loss, n_seen = 0.0, 0
    correct: dict[str, int] = {}
    counted: dict[str, int] = {}
    for idx in batch_order(len(images), batch_size, generator):
        loss, c, k = train_step(model, plan, images[idx], optimizer, device=device, generator=generator, amp=amp)
        scheduler.step()
        total_loss += loss * len(idx)
        n_seen += len(idx)
        for h in c:
            correct[h] = correct.get(h, 0) + c[h]
            counted[h] = counted.get(h, 0) + k[h]
        if bar is not None:
            bar.update(len(idx))
            bar.set_postfix(loss=f"{loss:.3f}")
    out = {"loss": total_loss / max(1, n_seen)}
    out.update({f"acc_train/{h}": correct[h] / max(1, counted[h]) for h in correct})
    return out


def fit_epochs(model, plan, images: torch.Tensor, config: DetectorConfig, *, device: torch.device,
               generator: torch.Generator, on_epoch: Callable[[int, dict], None] | None = None) -> list[dict]:
    """The local training loop: `planned_epochs` epochs, cosine lr over the real total steps, tqdm, history per epoch.

    on_epoch(epoch, stats) adds the held-out diagnostic on `diagnostic_epoch`s (at most DIAGNOSTIC_POINTS).
    """
    from tqdm.auto import tqdm

    optimizer = make_optimizer(model, config)
    steps = len(batch_order(len(images), config.batch_size, torch.Generator().manual_seed(0)))
    epochs = planned_epochs(steps, config)
    scheduler = make_scheduler(optimizer, steps * epochs)
    history = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        with tqdm(total=len(images), desc=f"epoch {epoch + 1}/{epochs}", unit="img",
                  disable=not config.progress, leave=False) as bar:
            stats = run_epoch(model, plan, images, optimizer, scheduler, batch_size=config.batch_size,
                              device=device, generator=generator, amp=config.amp, bar=bar)
        stats.update(epoch=epoch, lr=optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - t0)
        if on_epoch is not None and diagnostic_epoch(epoch, epochs):
            on_epoch(epoch, stats)
        history.append(stats)
    return history


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
