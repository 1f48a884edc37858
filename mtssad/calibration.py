"""The decision threshold of predict(): which normal images set it, and where.

A detector's scores on its own training images are optimistic (the network has
seen them): a threshold at their `contamination` quantile flags far more new
normal images than asked for (7.8% instead of 5% over digits' classes, 12.7% for
digit 3; the held-out fifth: 3.7%; benchmarks/results/calibration.md). So the threshold comes from normal images
the fit did not train on: X_val's normals when given, else a seeded
`calibration_fraction` of the training normals held out of training. With
neither, the training scores are used and predict() warns.
"""

from __future__ import annotations

import math

import numpy as np

THRESHOLD_SOURCES = ("X_val", "calibration", "training")  # where threshold_ came from (threshold_source_)


def calibration_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, calibration indices) of n training images, both sorted; seeded by `seed`.

    round(n * fraction) images are held out, at least 1 when fraction > 0, never so many
    that fewer than 2 are left to train on (BatchNorm); n < 3 holds out none.
    """
    n_cal = min(max(int(round(n * fraction)), 1 if fraction > 0 else 0), max(n - 2, 0))
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_cal:]), np.sort(order[:n_cal])


def threshold_at(scores: np.ndarray, contamination: float) -> float:
    """The score below which about `contamination` of new normal images fall, from reference normal scores.

    A new normal falls below the r-th smallest of n exchangeable reference scores with
    probability r / (n + 1). np.quantile's default places the q-quantile at rank
    q(n - 1) + 1, which flags (q(n - 1) + 1) / (n + 1) of new normals (9.7% for q = 0.05,
    n = 18); the "weibull" position q(n + 1) flags q on average. Below the smallest
    score it cannot go: with n < 1/q - 1 the minimum flags 1/(n + 1) (see `threshold_warning`).
    """
    return float(np.quantile(np.asarray(scores, dtype=np.float64), contamination, method="weibull"))


def min_reference_size(contamination: float) -> int:
    """The fewest reference normals whose threshold flags about `contamination`, not more: q(n + 1) >= 1."""
    return math.ceil(1.0 / contamination - 1.0 - 1e-9)


def threshold_warning(source: str | None, n_reference: int | None, contamination: float) -> str | None:
    """Why predict() may flag more normals than `contamination`, with what to do; None when it should not."""
    if source == "training":
        return (f"threshold_ was set on the scores of the training images themselves, which are optimistic: "
                f"predict() flags more than contamination={contamination:g} of new normal images (7.8% at 0.05 "
                "on digits, 12.7% for digit 3). Fit with held-out normals (X_val, y_val) or calibration_fraction > 0 "
                "(the default, 0.2, holds out a fifth of the training images)")
    if source in ("X_val", "calibration") and n_reference is not None:
        need = min_reference_size(contamination)
        if n_reference < need:
            return (f"threshold_ was set on only {n_reference} held-out normal image(s): at contamination="
                    f"{contamination:g} that is their lowest score, which flags about {1 / (n_reference + 1):.0%} of "
                    f"new normal images; hold out at least {need} (more normals in X_val or a larger "
                    "calibration_fraction)")
    return None
