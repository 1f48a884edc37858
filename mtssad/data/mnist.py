"""MNIST and Fashion-MNIST from torchvision's raw IDX files, zero-padded 28 -> 32."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from .base import DataError, ImageDataset, LoaderArgs, find_dir
from .imageops import pad_to, resize
from .registry import register_dataset

FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file (optionally gzip-compressed) with `ndim` dimensions.

    Header: two zero bytes, type code 0x08 (ubyte), ndim; then ndim big-endian uint32 sizes.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read IDX file {path}: {err}") from err
    expected_magic = 0x0800 + ndim
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if magic != expected_magic:
        got = "a file shorter than 4 bytes" if magic is None else f"0x{magic:08x}"
        raise DataError(f"bad IDX magic number in {path}: expected 0x{expected_magic:08x}; got {got}")
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) != header + int(np.prod(shape)):
        raise DataError(
            f"IDX file {path} is malformed: header says shape {shape} "
            f"({header + int(np.prod(shape))} bytes); file has {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _load(args: LoaderArgs, folder: str, class_names: tuple[str, ...]) -> ImageDataset:
    layout = (
        f"ROOT/{folder}/raw/{{train-images-idx3-ubyte,train-labels-idx1-ubyte,"
        "t10k-images-idx3-ubyte,t10k-labels-idx1-ubyte}[.gz] (torchvision layout)"
    )
    required = [f"{stem}|{stem}.gz" for stem in FILES.values()]
    d = find_dir(args, [f"{folder}/raw", folder, ""], required, layout)
    arrays = {}
    for key, stem in FILES.items():
        path = d / stem if (d / stem).is_file() else d / f"{stem}.gz"
        arrays[key] = read_idx(path, 3 if key.endswith("images") else 1)
    out = {}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"].astype(np.int64)
        if len(images) != len(labels) or images.shape[1:] != (28, 28):
            raise DataError(
                f"{args.name}: {d} {split} files disagree: expected (N, 28, 28) images and N labels; "
                f"got images {images.shape} and {len(labels)} labels"
            )
        if labels.size and labels.max() >= len(class_names):
            raise DataError(f"{args.name}: {d} has {split} label {labels.max()}; expected 0..{len(class_names) - 1}")
        out[split] = (resize(pad_to(images[:, None], 32), args.side), labels)  # (N, 1, side, side)
    return ImageDataset(
        name=args.name,
        train_images=out["train"][0],
        train_labels=out["train"][1],
        test_images=out["test"][0],
        test_labels=out["test"][1],
        class_names=class_names,
    )


@register_dataset("mnist")
def load_mnist(args: LoaderArgs) -> ImageDataset:
    return _load(args, "MNIST", tuple(str(d) for d in range(10)))


@register_dataset("fashion-mnist")
def load_fashion_mnist(args: LoaderArgs) -> ImageDataset:
    return _load(args, "FashionMNIST", FASHION_CLASSES)
