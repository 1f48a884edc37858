"""Normality scores (eq. 5-6) computed batch by batch.

For head i with labelled variants T_1..T_m: s_i(x) = sum_j softmax(f_i(T_j(x)))[label_j].
A plan holds each distinct input once (the raw image serves every geometric head;
the jigsaw's identity class is its own identity puzzle), so the default plan costs
1 + 2 + 2 + 3 + k = 8 + k = 11 forward passes per image.
Images are streamed: at most `batch_size` originals (times V variants) are in
memory at once.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch

from .train import native_bf16, to_model_input
from .transforms import Plan

Reducer = Callable[[dict[str, torch.Tensor], Plan], dict[str, torch.Tensor]]


@torch.inference_mode()
def variant_probs(model, plan: Plan, x: torch.Tensor, *, amp: bool = False) -> dict[str, torch.Tensor]:
    """Model-ready (N, C, H, W) -> head -> softmax probabilities (V, N, m) over all variants, eval offsets."""
    n = x.shape[0]
    xv = plan.make(x, train=False)  # (V*N, C, H, W)
    cuda = x.device.type == "cuda"
    dtype = torch.bfloat16 if cuda and native_bf16(x.device) else torch.float16  # inference: no scaler needed
    with torch.autocast(device_type=x.device.type, dtype=dtype, enabled=amp and cuda):
        logits = model(xv)
    return {h: lg.float().softmax(dim=1).view(plan.num_variants, n, -1) for h, lg in logits.items()}


def true_class_probs(probs: dict[str, torch.Tensor], plan: Plan) -> dict[str, torch.Tensor]:
    """head -> (V_h, N): probability of the applied transform, for the variants head h labels."""
    out = {}
    for i, head in enumerate(plan.heads):
        y = plan.labels[:, i].to(probs[head.name].device)  # (V,)
        keep = (y >= 0).nonzero().squeeze(1)
        p = probs[head.name][keep]  # (V_h, N, m)
        idx = y[keep].view(-1, 1, 1).expand(-1, p.shape[1], 1)
        out[head.name] = p.gather(2, idx).squeeze(2)  # (V_h, N)
    return out


def head_scores(probs: dict[str, torch.Tensor], plan: Plan) -> dict[str, torch.Tensor]:
    """Eq. 5 per head: head -> (N,) sum of true-transform probabilities."""
    return {h: p.sum(0) for h, p in true_class_probs(probs, plan).items()}


def head_accuracy(probs: dict[str, torch.Tensor], plan: Plan) -> dict[str, torch.Tensor]:
    """head -> (N,) fraction of the head's labelled variants it classifies right."""
    out = {}
    for i, head in enumerate(plan.heads):
        y = plan.labels[:, i].to(probs[head.name].device)
        keep = (y >= 0).nonzero().squeeze(1)
        pred = probs[head.name][keep].argmax(2)  # (V_h, N)
        out[head.name] = (pred == y[keep].view(-1, 1)).float().mean(0)
    return out


def iter_batches(images, batch_size: int) -> Iterator[torch.Tensor]:
    """Slices of a tensor or numpy array, as tensors, never copying the whole set."""
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        yield chunk if isinstance(chunk, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(chunk))


def score_images(model, plan: Plan, images, *, device: torch.device, batch_size: int = 256, amp: bool = False,
                 reduce: Reducer = head_scores, progress: bool | None = None) -> dict[str, np.ndarray]:
    """Run `reduce` on every batch of `images` and concatenate: key -> (N, ...) numpy array.

    progress: a tqdm bar on a terminal; None follows the CLI's setting (`mtssad.logs.configure`).
    """
    from .logs import progress_bar

    was_training = model.training
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    try:
        with progress_bar(total=len(images), desc="scoring", enabled=progress) as bar:
            for chunk in iter_batches(images, batch_size):
                probs = variant_probs(model, plan, to_model_input(chunk, device), amp=amp)
                for key, val in reduce(probs, plan).items():
                    parts.setdefault(key, []).append(val.cpu().numpy())
                bar.update(len(chunk))
    finally:
        model.train(was_training)
    return {key: np.concatenate(vals) for key, vals in parts.items()}


STD_FLOOR = 1e-3  # smallest per-head std "standardize" divides by, as a fraction of the head's score range (its count)


def head_stats(per_head: dict[str, np.ndarray], counts: dict[str, int]
               ) -> tuple[dict[str, tuple[float, float]], list[str]]:
    """(mean, std) of each head's scores on reference normals, for score_norm="standardize"; and the floored heads.

    A head that scores every reference normal the same (saturated, or too few images) has a std of
    float noise; dividing by it would let that head's noise decide the whole score. Its std is
    raised to STD_FLOOR x its number of transforms (the head's score lies in [0, count]).
    """
    stats, floored = {}, []
    for h, v in per_head.items():
        sd, floor = float(np.std(v)), STD_FLOOR * counts[h]
        if sd < floor:
            sd = floor
            floored.append(h)
        stats[h] = (float(np.mean(v)), sd)
    return stats, floored


def combine_heads(per_head: dict[str, np.ndarray], heads, *, norm: str = "none", counts: dict[str, int] | None = None,
                  stats: dict[str, tuple[float, float]] | None = None) -> np.ndarray:
    """Eq. 6: mean over `heads` of the per-head scores, after the optional normalization.

    norm="mean" divides s_i by its number of transforms (`counts`); norm="standardize"
    z-scores s_i with (mean, std) from held-out normal data (`stats`).
    """
    cols = []
    for h in heads:
        s = per_head[h].astype(np.float64)
        if norm == "mean":
            s = s / counts[h]
        elif norm == "standardize":
            mu, sd = stats[h]
            s = (s - mu) / sd
        cols.append(s)
    return np.mean(cols, axis=0)
