"""SVHN cropped digits from the official train_32x32.mat / test_32x32.mat files."""
from __future__ import annotations

import numpy as np

from .base import DataError, ImageDataset, LoaderArgs, find_dir
from .imageops import resize
from .registry import register_dataset


@register_dataset("svhn")
def load_svhn(args: LoaderArgs) -> ImageDataset:
    from scipy.io import loadmat

    layout = "ROOT/train_32x32.mat and ROOT/test_32x32.mat (official cropped-digits files)"
    d = find_dir(args, [""], ["train_32x32.mat", "test_32x32.mat"], layout)
    splits = {}
    for split in ("train", "test"):
        path = d / f"{split}_32x32.mat"
        try:
            mat = loadmat(path)
        except Exception as err:  # scipy raises ValueError, TypeError, OSError... on bad files
            raise DataError(f"cannot read SVHN file {path}: {type(err).__name__}: {err}") from err
        x, y = mat.get("X"), mat.get("y")
        if x is None or y is None or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
            got = "no X/y" if x is None or y is None else f"X {x.shape}"
            raise DataError(f"{path}: expected X of shape (32, 32, 3, N) and y of shape (N, 1); got {got}")
        labels = np.asarray(y, dtype=np.int64).reshape(-1)
        if len(labels) != x.shape[3] or (labels.size and (labels.min() < 1 or labels.max() > 10)):
            raise DataError(f"{path}: expected {x.shape[3]} labels in 1..10; got {labels.shape} labels")
        labels[labels == 10] = 0  # SVHN stores digit 0 as label 10
        images = np.ascontiguousarray(np.asarray(x, dtype=np.uint8).transpose(3, 2, 0, 1))  # (N, 3, 32, 32)
        splits[split] = (resize(images, args.side), labels)
    return ImageDataset(args.name, *splits["train"], *splits["test"], class_names=tuple(str(d) for d in range(10)))
