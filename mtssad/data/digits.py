"""scikit-learn's bundled 8x8 digits (1,797 images), upscaled; needs no root and no download."""
from __future__ import annotations

import numpy as np

from .base import ImageDataset, LoaderArgs
from .imageops import resize
from .registry import register_dataset
from .splits import stratified_split


@register_dataset("digits")
def load_digits(args: LoaderArgs) -> ImageDataset:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    raw = bunch.images  # (N, 8, 8) float, values 0..16
    images = np.clip(np.round(raw * (255.0 / 16.0)), 0, 255).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    images = resize(images, args.side)
    labels = bunch.target.astype(np.int64)
    train, test = stratified_split(labels, args.test_fraction, args.seed)
    return ImageDataset.from_split(args.name, images, labels, train, test, [str(d) for d in range(10)])
