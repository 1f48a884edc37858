"""CIFAR-10 and CIFAR-100 (on its 20 coarse superclasses) from the python-pickle batches."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from .base import DataError, ImageDataset, LoaderArgs, find_dir
from .imageops import resize
from .registry import register_dataset

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

# The 20 superclasses and their 5 fine classes each, from the CIFAR-100 description
# (https://www.cs.toronto.edu/~kriz/cifar.html); coarse index = position in this table.
CIFAR100_SUPERCLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("aquatic_mammals", ("beaver", "dolphin", "otter", "seal", "whale")),
    ("fish", ("aquarium_fish", "flatfish", "ray", "shark", "trout")),
    ("flowers", ("orchid", "poppy", "rose", "sunflower", "tulip")),
    ("food_containers", ("bottle", "bowl", "can", "cup", "plate")),
    ("fruit_and_vegetables", ("apple", "mushroom", "orange", "pear", "sweet_pepper")),
    ("household_electrical_devices", ("clock", "keyboard", "lamp", "telephone", "television")),
    ("household_furniture", ("bed", "chair", "couch", "table", "wardrobe")),
    ("insects", ("bee", "beetle", "butterfly", "caterpillar", "cockroach")),
    ("large_carnivores", ("bear", "leopard", "lion", "tiger", "wolf")),
    ("large_man-made_outdoor_things", ("bridge", "castle", "house", "road", "skyscraper")),
    ("large_natural_outdoor_scenes", ("cloud", "forest", "mountain", "plain", "sea")),
    ("large_omnivores_and_herbivores", ("camel", "cattle", "chimpanzee", "elephant", "kangaroo")),
    ("medium_mammals", ("fox", "porcupine", "possum", "raccoon", "skunk")),
    ("non-insect_invertebrates", ("crab", "lobster", "snail", "spider", "worm")),
    ("people", ("baby", "boy", "girl", "man", "woman")),
    ("reptiles", ("crocodile", "dinosaur", "lizard", "snake", "turtle")),
    ("small_mammals", ("hamster", "mouse", "rabbit", "shrew", "squirrel")),
    ("trees", ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree")),
    ("vehicles_1", ("bicycle", "bus", "motorcycle", "pickup_truck", "train")),
    ("vehicles_2", ("lawn_mower", "rocket", "streetcar", "tank", "tractor")),
)
CIFAR100_COARSE_CLASSES = tuple(name for name, _ in CIFAR100_SUPERCLASSES)
CIFAR100_FINE_CLASSES = tuple(sorted(f for _, fines in CIFAR100_SUPERCLASSES for f in fines))  # fine index order
_COARSE_OF = {f: c for c, (_, fines) in enumerate(CIFAR100_SUPERCLASSES) for f in fines}
CIFAR100_FINE_TO_COARSE = np.array([_COARSE_OF[f] for f in CIFAR100_FINE_CLASSES], dtype=np.int64)  # (100,)


# The only globals a CIFAR batch pickle needs: numpy's array (and scalar) reconstruction
# (_reconstruct up to protocol 4, _frombuffer from protocol 5), and _codecs.encode, which
# protocol-2 pickles written by Python 3 use to rebuild bytes. Lists, dicts, ints, bytes and
# str need no global at all. Anything else (os.system, builtins.eval, subprocess.Popen ...)
# would be code a crafted file runs while loading: refused.
_ALLOWED_GLOBALS = frozenset(
    [(module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
     for name in ("_reconstruct", "scalar")]
    + [(module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")]
    + [("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")]
)


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays, lists, dicts, numbers, bytes and str, and nothing else."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it asks for {module}.{name}; a CIFAR batch holds only numpy arrays, "
                                     "lists, dicts, bytes and str")


def _unpickle(path: Path) -> dict:
    """A CIFAR batch pickle, loaded without running any code a crafted file may carry."""
    try:
        with open(path, "rb") as f:
            obj = _ArraysOnlyUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as err:
        raise DataError(f"refusing CIFAR pickle {path}: {err}; nothing in it was executed. "
                        "Replace it with the original file from the CIFAR site") from None
    except Exception as err:  # pickle raises many types on corrupt input
        raise DataError(f"cannot read CIFAR pickle {path}: {type(err).__name__}: {err}") from err
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR pickle {path}: expected a dict; got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _images(batch: dict, path: Path) -> np.ndarray:
    data = np.asarray(batch.get("data", []), dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"CIFAR pickle {path}: expected 'data' of shape (N, 3072); got {data.shape}")
    return data.reshape(-1, 3, 32, 32)  # rows are R(1024) G(1024) B(1024), row-major


def _labels(batch: dict, key: str, path: Path, n: int) -> np.ndarray:
    if key not in batch:
        raise DataError(f"CIFAR pickle {path}: expected key {key!r}; got keys {sorted(batch)}")
    labels = np.asarray(batch[key], dtype=np.int64)
    if labels.shape != (n,):
        raise DataError(f"CIFAR pickle {path}: expected {n} {key}; got shape {labels.shape}")
    return labels


@register_dataset("cifar10")
def load_cifar10(args: LoaderArgs) -> ImageDataset:
    train_files = [f"data_batch_{i}" for i in range(1, 6)]
    layout = "ROOT/cifar-10-batches-py/data_batch_1..5 and test_batch (torchvision layout)"
    d = find_dir(args, ["cifar-10-batches-py", ""], train_files + ["test_batch"], layout)
    splits = {}
    for split, files in (("train", train_files), ("test", ["test_batch"])):
        xs, ys = [], []
        for fname in files:
            batch = _unpickle(d / fname)
            xs.append(_images(batch, d / fname))
            ys.append(_labels(batch, "labels", d / fname, len(xs[-1])))
        splits[split] = (resize(np.concatenate(xs), args.side), np.concatenate(ys))
    names = CIFAR10_CLASSES
    if (d / "batches.meta").is_file():
        meta = _unpickle(d / "batches.meta").get("label_names")
        if meta is not None and len(meta) == 10:
            names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta)
    return ImageDataset(args.name, *splits["train"], *splits["test"], class_names=names)


def fine_to_coarse(fine: np.ndarray, coarse: np.ndarray | None = None, where: str = "") -> np.ndarray:
    """Coarse labels from fine ones with the in-code map; if the file's coarse labels are given, check them."""
    fine = np.asarray(fine, dtype=np.int64)
    if fine.size and (fine.min() < 0 or fine.max() > 99):
        raise DataError(f"cifar100: fine labels must be 0..99 in {where}; got [{fine.min()}, {fine.max()}]")
    mapped = CIFAR100_FINE_TO_COARSE[fine]
    if coarse is not None and not np.array_equal(mapped, coarse):
        bad = int(np.flatnonzero(mapped != coarse)[0])
        raise DataError(
            f"cifar100: coarse labels in {where} disagree with the standard fine->coarse map: "
            f"item {bad} has fine {fine[bad]} ({CIFAR100_FINE_CLASSES[fine[bad]]}), "
            f"expected coarse {mapped[bad]}; got {coarse[bad]}"
        )
    return mapped


@register_dataset("cifar100")
def load_cifar100(args: LoaderArgs) -> ImageDataset:
    layout = "ROOT/cifar-100-python/{train,test} pickles (torchvision layout)"
    d = find_dir(args, ["cifar-100-python", ""], ["train", "test"], layout)
    splits = {}
    for split in ("train", "test"):
        batch = _unpickle(d / split)
        images = _images(batch, d / split)
        fine = _labels(batch, "fine_labels", d / split, len(images))
        coarse = _labels(batch, "coarse_labels", d / split, len(images)) if "coarse_labels" in batch else None
        splits[split] = (resize(images, args.side), fine_to_coarse(fine, coarse, str(d / split)))
    return ImageDataset(args.name, *splits["train"], *splits["test"], class_names=CIFAR100_COARSE_CLASSES)
