"""Seeded, stratified index selection: subsets, train/test splits, the validation split, class lookup."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import DataError, ImageDataset


def _allocate(counts: np.ndarray, n: int) -> np.ndarray:
    """Split n over classes in proportion to counts (largest remainder; ties to the lower class)."""
    exact = counts * (n / counts.sum())
    quota = np.minimum(np.floor(exact).astype(np.int64), counts)
    remainder = exact - quota
    order = np.lexsort((np.arange(len(counts)), -remainder))  # largest remainder first
    for c in order:
        if quota.sum() >= n:
            break
        if quota[c] < counts[c]:
            quota[c] += 1
    return quota


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of n items keeping class proportions (all indices when len(labels) <= n).

    Each class gets its proportional share (largest-remainder rounding); items within a
    class are drawn uniformly with numpy's default_rng(seed).
    """
    labels = np.asarray(labels)
    if n < 0:
        raise ValueError(f"stratified_subset: expected n >= 0; got {n}")
    if len(labels) <= n:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quota = _allocate(counts, n)
    chosen = []
    for k in range(len(classes)):
        members = np.flatnonzero(inverse == k)
        chosen.append(rng.choice(members, size=quota[k], replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def per_class_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices keeping at most n items of every class (a class with fewer keeps all), drawn with
    default_rng(seed)."""
    labels = np.asarray(labels)
    if n < 1:
        raise ValueError(f"per_class_subset: expected n >= 1; got {n}")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        chosen.append(members if len(members) <= n else rng.choice(members, size=n, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.arange(0)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train_idx, test_idx), sorted and disjoint, test_fraction of each class in test.

    A class with at least 2 items keeps at least one on each side.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(members) * test_fraction))
        if len(members) >= 2:
            n_test = min(max(n_test, 1), len(members) - 1)
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)).astype(np.int64), np.sort(np.concatenate(test)).astype(np.int64)


def validation_split(
    train_labels: np.ndarray, normal_class: int, *, fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Carve a labelled validation set out of the TRAINING split only (for model selection).

    Returns (fit_idx, val_idx), sorted index arrays into train_labels:
    - fit_idx: the normal-class training items minus a held-out `fraction` of them;
    - val_idx: those held-out normal items plus as many other-class training items
      (or all of them if fewer exist), stratified over the other classes.
    fit_idx and val_idx are disjoint. Which validation items are normal is
    `train_labels[val_idx] == normal_class` (the caller computes it).
    """
    labels = np.asarray(train_labels)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation_split: expected 0 < fraction < 1; got {fraction}")
    normal = np.flatnonzero(labels == normal_class)
    if len(normal) < 2:
        raise DataError(
            f"validation_split: expected >= 2 training items of normal class {normal_class}; got {len(normal)}"
        )
    rng = np.random.default_rng(seed)
    n_held = min(max(int(round(len(normal) * fraction)), 1), len(normal) - 1)
    shuffled = rng.permutation(normal)
    held, fit = shuffled[:n_held], shuffled[n_held:]
    others = np.flatnonzero(labels != normal_class)
    anomalies = others[stratified_subset(labels[others], n_held, seed)]
    return np.sort(fit).astype(np.int64), np.sort(np.concatenate([held, anomalies])).astype(np.int64)


def resolve_classes(ds: ImageDataset, classes: Sequence[str | int] | None) -> list[int]:
    """Class indices for names or indices (3, "3"); None or empty -> every class.

    An exact class-name match wins over reading the string as an index (matters for
    image folders named "10", "2", ...). Order is kept, duplicates dropped.
    """
    if not classes:
        return list(range(len(ds.class_names)))
    by_name = {name: i for i, name in enumerate(ds.class_names)}
    out: list[int] = []
    for item in classes:
        if isinstance(item, str) and item in by_name:
            idx = by_name[item]
        else:
            try:
                idx = int(item)  # int, numpy integer or a string of digits
                if isinstance(item, (bool, float)) or not 0 <= idx < len(ds.class_names):
                    raise ValueError
            except (TypeError, ValueError):
                valid = ", ".join(f"{i}={n}" for i, n in enumerate(ds.class_names))
                raise DataError(f"{ds.name}: unknown class {item!r}; valid classes (index=name): {valid}") from None
        if idx not in out:
            out.append(idx)
    return out
