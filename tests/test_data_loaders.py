"""Each loader on a tiny fixture written in its real on-disk format."""
import gzip
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from mtssad.data import DATASETS, DataError, ImageDataset, load_dataset, register_dataset
from mtssad.data.cifar import CIFAR100_COARSE_CLASSES, CIFAR100_FINE_CLASSES, CIFAR100_FINE_TO_COARSE


def _write_idx(path, array, gz):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _mnist_root(tmp_path, folder="MNIST", gz=False, n_train=20, n_test=10):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(1, 256, (n, 28, 28)), gz)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, gz)
    return tmp_path


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_plain_and_gz_padded_to_32(tmp_path, gz):
    ds = load_dataset("mnist", _mnist_root(tmp_path, gz=gz))
    assert ds.train_images.shape == (20, 1, 32, 32) and ds.test_images.shape == (10, 1, 32, 32)
    assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int64
    assert ds.train_images[:, :, :2].max() == 0 and ds.train_images[:, :, :, -2:].max() == 0  # zero padding
    assert ds.train_images[:, :, 2:30, 2:30].min() >= 1  # the 28x28 image sits in the middle
    assert ds.train_labels.tolist() == [i % 10 for i in range(20)]


def test_fashion_mnist_names_and_resize(tmp_path):
    ds = load_dataset("fashion_mnist", _mnist_root(tmp_path, "FashionMNIST", gz=True), side=16, channels=3)
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert ds.train_images.shape == (20, 3, 16, 16)


def test_idx_bad_magic_names_file(tmp_path):
    root = _mnist_root(tmp_path)
    bad = root / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    bad.write_bytes(b"\x00\x00\x08\x03" + bad.read_bytes()[4:])
    with pytest.raises(DataError, match="magic.*train-labels-idx1-ubyte"):
        load_dataset("mnist", root)


def _cifar_batch(n, rng, label_key, n_classes, extra=None):
    batch = {b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8), label_key: list(rng.integers(0, n_classes, n))}
    batch.update(extra or {})
    return batch


def _dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def test_cifar10_pickles(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        _dump(d / f"data_batch_{i}", _cifar_batch(4, rng, b"labels", 10))
    test = _cifar_batch(3, rng, b"labels", 10)
    _dump(d / "test_batch", test)
    _dump(d / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    ds = load_dataset("cifar10", tmp_path)
    assert ds.train_images.shape == (20, 3, 32, 32) and ds.test_images.shape == (3, 3, 32, 32)
    assert ds.class_names == tuple(f"c{i}" for i in range(10))
    # CIFAR rows are R, G, B planes of 1024 bytes each
    np.testing.assert_array_equal(ds.test_images[1, 2].ravel(), test[b"data"][1, 2048:])
    assert ds.test_labels.tolist() == [int(v) for v in test[b"labels"]]


def test_cifar10_missing_root_names_layout(tmp_path):
    with pytest.raises(DataError, match=r"cifar-10-batches-py/data_batch_1\.\.5.*torchvision layout.*has no cifar-10"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(DataError, match="--data-root is required"):
        load_dataset("cifar10", None)
    with pytest.raises(DataError, match="not a directory"):
        load_dataset("cifar10", tmp_path / "nope")


def test_cifar100_coarse_map_known_pairs():
    pairs = {"apple": "fruit_and_vegetables", "cattle": "large_omnivores_and_herbivores",
             "otter": "aquatic_mammals", "worm": "non-insect_invertebrates", "aquarium_fish": "fish",
             "tractor": "vehicles_2", "willow_tree": "trees", "baby": "people"}
    for fine, coarse in pairs.items():
        assert CIFAR100_COARSE_CLASSES[CIFAR100_FINE_TO_COARSE[CIFAR100_FINE_CLASSES.index(fine)]] == coarse
    assert [CIFAR100_FINE_TO_COARSE[i] for i in (0, 19, 55, 99)] == [4, 11, 0, 13]
    assert len(CIFAR100_FINE_CLASSES) == 100 and np.bincount(CIFAR100_FINE_TO_COARSE).tolist() == [5] * 20
    # the map as published in many code bases, an independent source for the whole table
    published = [4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13, 15, 3,
                 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0,
                 17, 4, 18, 17, 10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13, 16, 19, 2,
                 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13]
    assert CIFAR100_FINE_TO_COARSE.tolist() == published


def _cifar100_root(tmp_path, with_coarse=True, corrupt=False):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    rng = np.random.default_rng(1)
    for split, n in (("train", 30), ("test", 10)):
        batch = _cifar_batch(n, rng, b"fine_labels", 100)
        if with_coarse:
            coarse = CIFAR100_FINE_TO_COARSE[batch[b"fine_labels"]].tolist()
            if corrupt:
                coarse[0] = (coarse[0] + 1) % 20
            batch[b"coarse_labels"] = coarse
        _dump(d / split, batch)
    return tmp_path, d


@pytest.mark.parametrize("with_coarse", [True, False])
def test_cifar100_uses_coarse_labels(tmp_path, with_coarse):
    root, d = _cifar100_root(tmp_path, with_coarse)
    ds = load_dataset("cifar100", root)
    with open(d / "train", "rb") as f:
        fine = np.array(pickle.load(f, encoding="bytes")[b"fine_labels"])
    assert ds.train_labels.tolist() == CIFAR100_FINE_TO_COARSE[fine].tolist()
    assert len(ds.class_names) == 20 and ds.class_names[13] == "non-insect_invertebrates"


def test_cifar100_disagreeing_coarse_labels_rejected(tmp_path):
    root, _ = _cifar100_root(tmp_path, corrupt=True)
    with pytest.raises(DataError, match="disagree"):
        load_dataset("cifar100", root)


def test_svhn_mat_maps_10_to_0(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 5)):
        x = rng.integers(0, 256, (32, 32, 3, n)).astype(np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(-1, 1)  # 1..10, 10 = digit 0
        savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
        if split == "test":
            test_x = x
    ds = load_dataset("svhn", tmp_path)
    assert ds.train_images.shape == (12, 3, 32, 32)
    assert ds.train_labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]
    np.testing.assert_array_equal(ds.test_images[3], test_x[..., 3].transpose(2, 0, 1))


def test_svhn_missing_files(tmp_path):
    with pytest.raises(DataError, match="train_32x32.mat"):
        load_dataset("svhn", tmp_path)


def _png(path, color, size=(20, 16), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def _cub_root(tmp_path):
    d = tmp_path / "CUB_200_2011"
    names = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    rows = []
    for i in range(6):
        cls = i % 2
        rel = f"{names[cls]}/img_{i}.png"
        img = Image.new("RGB", (40, 20), (0, 0, 255))
        img.paste((255, 0, 0), (10, 5, 20, 15))  # the "bird" box, red
        img.save(_mk(d / "images" / rel))
        rows.append((i + 1, rel, cls + 1, int(i < 4)))
    (d / "images.txt").write_text("".join(f"{i} {rel}\n" for i, rel, _, _ in rows))
    (d / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, _, c, _ in rows))
    (d / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, _, t in rows))
    (d / "classes.txt").write_text("".join(f"{k + 1} {n}\n" for k, n in enumerate(names)))
    (d / "bounding_boxes.txt").write_text("".join(f"{i} 10.0 5.0 10.0 10.0\n" for i, _, _, _ in rows))
    return d


def _mk(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize("point_at_inner", [False, True])
def test_cub200_split_names_and_bbox_crop(tmp_path, point_at_inner):
    d = _cub_root(tmp_path)
    root = d if point_at_inner else tmp_path
    ds = load_dataset("cub200", root, side=8)
    assert ds.class_names == ("Black_footed_Albatross", "Laysan_Albatross")
    assert ds.train_labels.tolist() == [0, 1, 0, 1] and ds.test_labels.tolist() == [0, 1]
    assert ds.train_images.shape == (4, 3, 8, 8) and ds.train_images[:, 2].max() == 255  # blue background kept
    cropped = load_dataset("cub200", root, side=8, crop_bbox=True)
    assert cropped.train_images[:, 0].min() == 255 and cropped.train_images[:, 2].max() == 0  # only the red box


def test_cub200_unreadable_image(tmp_path):
    d = _cub_root(tmp_path)
    bad = d / "images" / "002.Laysan_Albatross" / "img_3.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated PNG
    with pytest.raises(DataError, match="img_3.png"):
        load_dataset("cub200", tmp_path, side=8)
    ds = load_dataset("cub200", tmp_path, side=8, skip_bad_images=True)
    assert ds.skipped == (str(bad),) and len(ds.train_labels) == 3


def test_cub200_missing_files_names_layout(tmp_path):
    d = _cub_root(tmp_path)
    (d / "classes.txt").unlink()
    with pytest.raises(DataError, match="CUB_200_2011/.*classes.txt"):
        load_dataset("cub200", tmp_path)


def _folder(root, classes=("cat", "dog"), n=5, gray=()):
    for c, name in enumerate(classes):
        for i in range(n):
            mode = "L" if name in gray else "RGB"
            _png(root / name / f"{i}.png", 40 * c + 10 * i if mode == "L" else (40 * c, 10 * i, 0), mode=mode)
    return root


def test_imagefolder_without_split_is_stratified(tmp_path):
    ds = load_dataset("imagefolder", _folder(tmp_path, n=10), side=8, test_fraction=0.3, seed=3)
    assert ds.class_names == ("cat", "dog") and ds.channels == 3
    assert np.bincount(ds.train_labels).tolist() == [7, 7] and np.bincount(ds.test_labels).tolist() == [3, 3]
    again = load_dataset("imagefolder", tmp_path, side=8, test_fraction=0.3, seed=3)
    np.testing.assert_array_equal(ds.test_images, again.test_images)


def test_imagefolder_with_train_test_dirs(tmp_path):
    _folder(tmp_path / "train", n=4)
    _folder(tmp_path / "test", n=2)
    ds = load_dataset("imagefolder", tmp_path, side=8)
    assert len(ds.train_labels) == 8 and len(ds.test_labels) == 4
    _folder(tmp_path / "test", classes=("cow",), n=1)
    with pytest.raises(DataError, match="cow"):
        load_dataset("imagefolder", tmp_path, side=8)


def test_imagefolder_grayscale_and_mixed_channels(tmp_path):
    gray = load_dataset("imagefolder", _folder(tmp_path / "g", gray=("cat", "dog")), side=8)
    assert gray.channels == 1
    mixed = load_dataset("imagefolder", _folder(tmp_path / "m", gray=("cat",)), side=8)
    assert mixed.channels == 3
    cat = mixed.train_images[mixed.train_labels == 0]
    np.testing.assert_array_equal(cat[:, 0], cat[:, 1])  # gray images repeated into RGB
    as_gray = load_dataset("imagefolder", tmp_path / "m", side=8, channels=1)
    assert as_gray.channels == 1


def test_imagefolder_bad_file_raises_or_is_skipped(tmp_path):
    _folder(tmp_path)
    bad = tmp_path / "dog" / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(DataError, match="notes.png"):
        load_dataset("imagefolder", tmp_path, side=8)
    ds = load_dataset("imagefolder", tmp_path, side=8, skip_bad_images=True)
    assert ds.skipped == (str(bad),)
    assert len(ds.train_labels) + len(ds.test_labels) == 10


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_imagefolder_symlink_outside_root(tmp_path):
    root = _folder(tmp_path / "root")
    _png(tmp_path / "outside.png", (1, 2, 3))
    (root / "cat" / "link.png").symlink_to(tmp_path / "outside.png")
    with pytest.raises(DataError, match="outside root.*link.png"):
        load_dataset("imagefolder", root, side=8)
    ds = load_dataset("imagefolder", root, side=8, skip_bad_images=True)
    assert len(ds.skipped) == 1 and ds.skipped[0].endswith("link.png")


def test_imagefolder_empty_root_names_layout(tmp_path):
    with pytest.raises(DataError, match=r"ROOT/<class>/<image files>"):
        load_dataset("imagefolder", tmp_path)


def test_digits_needs_no_root_and_upscales():
    ds = load_dataset("digits", side=16, max_train=100, max_test=50, seed=1)
    assert ds.train_images.shape == (100, 1, 16, 16) and ds.test_images.shape == (50, 1, 16, 16)
    assert ds.train_images.max() > 200 and np.bincount(ds.train_labels).tolist() == [10] * 10
    full = load_dataset("digits")
    assert len(full.train_labels) + len(full.test_labels) == 1797
    assert abs(len(full.test_labels) / 1797 - 0.3) < 0.01


def test_unknown_dataset_and_bad_args():
    with pytest.raises(DataError, match="cifar10.*glyphs.*mnist"):
        load_dataset("imagenet")
    for kwargs, pattern in [({"side": 4}, "side.*>= 8.*4"), ({"test_fraction": 1.0}, "test_fraction"),
                            ({"channels": 2}, "channels"), ({"max_train": 0}, "max_train"),
                            ({"seed": -1}, "seed")]:
        with pytest.raises(DataError, match=pattern):
            load_dataset("digits", **kwargs)


def test_register_dataset_adds_a_loader():
    @register_dataset("tiny-test-set")
    def _tiny(args):
        x = np.zeros((4, 1, args.side, args.side), np.uint8)
        return ImageDataset(args.name, x, np.array([0, 0, 1, 1]), x, np.array([0, 1, 0, 1]), ("a", "b"))

    try:
        ds = load_dataset("tiny_test_set", side=8, channels=3)
        assert ds.train_images.shape == (4, 3, 8, 8)
        with pytest.raises(ValueError, match="already registered"):
            register_dataset("tiny-test-set")(_tiny)
    finally:
        DATASETS.pop("tiny-test-set")


def test_jpeg_reduced_decode_keeps_bbox_and_detects_truncation(tmp_path):
    from mtssad.data.imageops import read_image

    img = Image.new("RGB", (256, 128), (0, 0, 255))
    img.paste((255, 0, 0), (64, 32, 128, 96))
    img.save(tmp_path / "a.jpg", quality=95)
    whole = read_image(tmp_path / "a.jpg", 8)
    assert whole.shape == (3, 8, 8) and whole[2, :, 0].mean() > 200  # left edge blue
    box = read_image(tmp_path / "a.jpg", 8, (64.0, 32.0, 64.0, 64.0))
    assert box[0].min() > 200 and box[2].max() < 60  # only the red square
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "b.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="b.jpg"):
        read_image(tmp_path / "b.jpg", 8)
