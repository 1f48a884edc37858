"""The data-set registry and load_dataset, the one public entry point that validates arguments."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .base import DataError, ImageDataset, LoaderArgs
from .imageops import to_channels
from .splits import per_class_subset, stratified_subset

Loader = Callable[[LoaderArgs], ImageDataset]
DATASETS: dict[str, Loader] = {}  # name -> loader; a loader returns native channels at args.side


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Decorator adding a loader under `name` (case-insensitive, '_' == '-')."""

    def wrap(fn: Loader) -> Loader:
        key = _key(name)
        if key in DATASETS:
            raise ValueError(f"data set {name!r} is already registered")
        DATASETS[key] = fn
        return fn

    return wrap


def dataset_names() -> list[str]:
    return sorted(DATASETS)


# Training budgets (DetectorConfig.min_steps) that differ from the library's default, chosen per data set on
# validation AUROC and wall time (benchmarks/results/budget_digits_glyphs.md). Fine-grained data needs the
# default's 300 steps (glyphs: 64.9 -> 72.2 validation AUROC from 100 to 300 steps, and no early-stopping rule
# kept up); digits is flat from a few dozen steps (97.2 at 100 vs 97.6 at 300; 96.7 at 12 in an older study),
# so its fits train 50 steps: the quickstart sweep then takes minutes, not an hour, on 2 CPUs.
DATASET_MIN_STEPS = {"digits": 50}


def default_min_steps(name: str) -> int:
    """The training budget `mtssad evaluate`/`sweep` use for data set `name` when --min-steps is not given."""
    from ..config import DetectorConfig

    return DATASET_MIN_STEPS.get(_key(name), DetectorConfig.min_steps)


def _check_int(label: str, value: object, minimum: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        expected = f"an int >= {minimum}" + (" or None" if optional else "")
        raise DataError(f"load_dataset: expected {label} to be {expected}; got {value!r}")


def _opt_int(v) -> int | None:
    return None if v is None else int(v)


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    side: int = 32,
    channels: int | None = None,
    max_train: int | None = None,
    max_train_per_class: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.3,
    skip_bad_images: bool = False,
    crop_bbox: bool = False,
) -> ImageDataset:
    """Load a registered data set as uint8 (N, C, side, side) arrays.

    channels: None keeps the set's native channels (1 gray, 3 RGB); 1 or 3 converts.
    max_train / max_test: seeded stratified subsets of the WHOLE split, all classes together
    (everything kept when N <= max): a one-vs-all normal class keeps about its share of max_train.
    max_train_per_class: at most this many training images of every class (seeded; after max_train).
    test_fraction: used only by sets without an official test split (digits, imagefolder
    without train/ and test/, glyphs). seed drives every random choice.
    """
    key = _key(name) if isinstance(name, str) else None
    if key not in DATASETS:
        raise DataError(f"unknown data set {name!r}; expected one of: {', '.join(dataset_names())}")
    _check_int("side", side, 8)
    _check_int("seed", seed, 0)
    _check_int("max_train", max_train, 1, optional=True)
    _check_int("max_train_per_class", max_train_per_class, 1, optional=True)
    _check_int("max_test", max_test, 1, optional=True)
    if channels not in (None, 1, 3) or isinstance(channels, bool):
        raise DataError(f"load_dataset: expected channels in (None, 1, 3); got {channels!r}")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise DataError(f"load_dataset: expected 0 < test_fraction < 1; got {test_fraction!r}")
    args = LoaderArgs(
        name=key,
        root=None if root is None else Path(root).expanduser(),
        side=int(side),
        seed=int(seed),
        test_fraction=float(test_fraction),
        skip_bad_images=bool(skip_bad_images),
        crop_bbox=bool(crop_bbox),
    )
    ds = DATASETS[key](args)
    train_x, train_y, test_x, test_y = ds.train_images, ds.train_labels, ds.test_images, ds.test_labels
    if max_train is not None:
        keep = stratified_subset(train_y, max_train, seed)
        train_x, train_y = train_x[keep], train_y[keep]
    if max_train_per_class is not None:
        keep = per_class_subset(train_y, max_train_per_class, seed)
        train_x, train_y = train_x[keep], train_y[keep]
    if max_test is not None:
        keep = stratified_subset(test_y, max_test, seed)
        test_x, test_y = test_x[keep], test_y[keep]
    if channels is not None:
        train_x, test_x = to_channels(train_x, channels), to_channels(test_x, channels)
    return ImageDataset(
        name=key,
        train_images=np.ascontiguousarray(train_x),
        train_labels=train_y,
        test_images=np.ascontiguousarray(test_x),
        test_labels=test_y,
        class_names=ds.class_names,
        skipped=ds.skipped,
        selection=dict(
            dataset=key, root=None if args.root is None else str(args.root.resolve()), side=int(side),
            channels=_opt_int(channels), max_train=_opt_int(max_train),
            max_train_per_class=_opt_int(max_train_per_class), max_test=_opt_int(max_test),
            seed=int(seed), test_fraction=float(test_fraction), crop_bbox=bool(crop_bbox),
            skipped_files=len(ds.skipped),  # files left out by skip_bad_images change the data too
        ),
    )
