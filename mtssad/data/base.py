"""The data-set container and the one error type every loader raises."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UsageError


class DataError(UsageError):
    """A bad root, a malformed on-disk layout or an unreadable file.

    The message names the expected layout or the offending path.
    """


@dataclass(frozen=True)
class ImageDataset:
    """A train/test pair of uint8 image arrays with integer class labels."""

    name: str
    train_images: np.ndarray  # (N, C, H, W) uint8
    train_labels: np.ndarray  # (N,) int64 class index into class_names
    test_images: np.ndarray  # (M, C, H, W) uint8
    test_labels: np.ndarray  # (M,) int64
    class_names: tuple[str, ...]
    skipped: tuple[str, ...] = ()  # unreadable image files left out (skip_bad_images=True)
    # the load_dataset arguments that chose these images (part of a result row's identity)
    selection: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        n_classes = len(self.class_names)
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            if images.ndim != 4 or images.dtype != np.uint8 or images.shape[1] not in (1, 3):
                raise DataError(
                    f"{self.name}: expected {split}_images uint8 of shape (N, 1|3, H, W); "
                    f"got {images.dtype} {images.shape}"
                )
            if labels.shape != (images.shape[0],) or labels.dtype != np.int64:
                raise DataError(
                    f"{self.name}: expected {split}_labels int64 of shape ({images.shape[0]},); "
                    f"got {labels.dtype} {labels.shape}"
                )
            if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
                raise DataError(
                    f"{self.name}: {split}_labels must lie in [0, {n_classes}); "
                    f"got range [{labels.min()}, {labels.max()}]"
                )
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise DataError(
                f"{self.name}: train and test images differ in shape: "
                f"{self.train_images.shape[1:]} vs {self.test_images.shape[1:]}"
            )

    @classmethod
    def from_split(cls, name: str, images: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray,
                   class_names, skipped=()) -> "ImageDataset":
        """One pool of images cut into train/test by index arrays (sets without an official split)."""
        return cls(name=name, train_images=images[train], train_labels=labels[train], test_images=images[test],
                   test_labels=labels[test], class_names=tuple(class_names), skipped=tuple(skipped))

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def side(self) -> int:
        return int(self.train_images.shape[2])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class LoaderArgs:
    """What load_dataset hands to a registered loader (already validated)."""

    name: str  # registered name, for messages
    root: Path | None  # data root as given (None: not given)
    side: int  # output height = width
    seed: int  # seeds every random choice a loader makes
    test_fraction: float  # for sets without an official test split
    skip_bad_images: bool  # skip unreadable files instead of raising
    crop_bbox: bool  # crop to bounding boxes where a set has them

    def require_root(self, layout: str) -> Path:
        """The root as a Path, or DataError saying it is needed and what it should hold."""
        if self.root is None:
            raise DataError(f"{self.name}: --data-root is required; expected {layout}")
        if not self.root.is_dir():
            raise DataError(f"{self.name}: expected {layout}; got root={self.root}, which is not a directory")
        return self.root


def find_dir(args: LoaderArgs, candidates: list[str], required: list[str], layout: str) -> Path:
    """First of root/<candidate> holding every required file (a name or any of 'a|b').

    Raises DataError naming the layout and what is missing.
    """
    root = args.require_root(layout)
    report = None
    for cand in candidates:
        d = root / cand if cand else root
        if not d.is_dir():
            continue
        missing = [r for r in required if not any((d / alt).is_file() for alt in r.split("|"))]
        if not missing:
            return d
        if report is None and (cand or len(missing) < len(required)):  # a named folder, or a partial root
            report = f"{d} lacks {', '.join(missing)}"
    named = " or ".join(c for c in candidates if c)
    fallback = f"which has no {named}" if named else f"which lacks {', '.join(required)}"
    raise DataError(f"{args.name}: expected {layout}; got root={root}, " + (report or fallback))
