"""A generic folder of images: ROOT/<class>/<files>, or ROOT/{train,test}/<class>/<files>.

Rules (documented here once):
- Class names are the sorted sub-folder names (of ROOT/train when split folders exist;
  a class found only under ROOT/test is an error).
- Every non-hidden file under a class folder (recursively) must be an image; one that is
  unreadable, not an image or truncated raises DataError naming it, or with
  skip_bad_images=True is left out and listed in ImageDataset.skipped. Hidden entries
  (names starting with '.') are ignored.
- Symlinks are followed only if they resolve inside ROOT; one that escapes ROOT is treated
  like an unreadable file (DataError, or skipped and listed with skip_bad_images=True).
- Native channels: 1 only if EVERY image is grayscale, otherwise all images are converted
  to RGB (a mixed grayscale/RGB folder loads as 3 channels); load_dataset's channels
  argument then converts if asked.
- Without ROOT/train and ROOT/test the split is seeded and stratified with test_fraction.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .base import DataError, ImageDataset, LoaderArgs
from .imageops import read_many, stack_mixed
from .registry import register_dataset
from .splits import stratified_split

LAYOUT = "ROOT/<class>/<image files> or ROOT/train/<class>/... and ROOT/test/<class>/..."


def _class_dirs(base: Path) -> dict[str, Path]:
    return {e.name: Path(e.path) for e in sorted(os.scandir(base), key=lambda e: e.name)
            if not e.name.startswith(".") and e.is_dir()}


def _files(folder: Path, root_real: str, escaped: list[str], seen: set[str]) -> list[Path]:
    """Non-hidden files under folder, depth first in name order; symlinks leaving root go to `escaped`."""
    out: list[Path] = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        real = os.path.realpath(path)
        if entry.is_symlink() and os.path.commonpath([root_real, real]) != root_real:
            escaped.append(str(path))
            continue
        if entry.is_dir():
            if real not in seen:  # guards against symlink cycles inside root
                seen.add(real)
                out.extend(_files(path, root_real, escaped, seen))
        elif entry.is_file():
            out.append(path)
    return out


def _collect(base: Path, class_index: dict[str, int], root_real: str, args: LoaderArgs):
    paths, labels, escaped = [], [], []
    for name, folder in _class_dirs(base).items():
        if name not in class_index:
            raise DataError(f"imagefolder: class folder {folder} is not among the training classes "
                            f"{sorted(class_index)}")
        real = os.path.realpath(folder)
        if os.path.commonpath([root_real, real]) != root_real:
            escaped.append(str(folder))
            continue
        found = _files(folder, root_real, escaped, {real})
        paths += found
        labels += [class_index[name]] * len(found)
    if escaped and not args.skip_bad_images:
        raise DataError(f"imagefolder: symlink resolves outside root {root_real}: {escaped[0]}")
    return paths, labels, escaped


@register_dataset("imagefolder")
def load_imagefolder(args: LoaderArgs) -> ImageDataset:
    root = args.require_root(LAYOUT)
    root_real = os.path.realpath(root)
    split_mode = (root / "train").is_dir() and (root / "test").is_dir()
    class_base = root / "train" if split_mode else root
    class_names = tuple(_class_dirs(class_base))
    if not class_names:
        raise DataError(f"imagefolder: expected {LAYOUT}; got root={root} with no class folders under {class_base}")
    class_index = {n: i for i, n in enumerate(class_names)}
    bases = [root / "train", root / "test"] if split_mode else [root]
    collected = [_collect(b, class_index, root_real, args) for b in bases]
    paths = [p for c in collected for p in c[0]]
    labels = np.array([y for c in collected for y in c[1]], dtype=np.int64)
    split_of = np.concatenate([np.full(len(c[0]), k) for k, c in enumerate(collected)])  # 0 train, 1 test
    arrays, kept, skipped = read_many(paths, args.side, args.skip_bad_images)
    skipped = [e for c in collected for e in c[2]] + skipped
    labels, split_of = labels[kept], split_of[kept]
    train_counts = np.bincount(labels[split_of == 0], minlength=len(class_names))
    if (train_counts == 0).any():
        empty = [class_names[i] for i in np.flatnonzero(train_counts == 0)]
        raise DataError(f"imagefolder: no readable training images for class(es) {empty} under {class_base}")
    x = stack_mixed(arrays)  # (N, 1|3, side, side)
    if split_mode:
        train, test = np.flatnonzero(split_of == 0), np.flatnonzero(split_of == 1)
    else:
        train, test = stratified_split(labels, args.test_fraction, args.seed)
    return ImageDataset.from_split(args.name, x, labels, train, test, class_names, skipped)
