"""Stratified subsets, the validation split and class lookup."""
import numpy as np
import pytest

from mtssad.data import DataError, ImageDataset, resolve_classes, stratified_subset, validation_split
from mtssad.data.splits import stratified_split

LABELS = np.repeat(np.arange(4), [40, 20, 30, 10])  # 100 items, unbalanced


def test_stratified_subset_keeps_proportions_and_is_seeded():
    idx = stratified_subset(LABELS, 50, seed=1)
    assert len(idx) == 50 and len(set(idx)) == 50 and np.all(np.diff(idx) > 0)
    assert np.bincount(LABELS[idx]).tolist() == [20, 10, 15, 5]
    assert np.array_equal(idx, stratified_subset(LABELS, 50, seed=1))
    assert not np.array_equal(idx, stratified_subset(LABELS, 50, seed=2))
    assert np.array_equal(stratified_subset(LABELS, 100, 0), np.arange(100))  # keeps all when N <= n
    odd = stratified_subset(LABELS, 7, 0)
    assert len(odd) == 7 and np.bincount(LABELS[odd], minlength=4).tolist() == [3, 1, 2, 1]


def test_stratified_split_disjoint_and_stratified():
    train, test = stratified_split(LABELS, 0.3, 0)
    assert not set(train) & set(test) and len(train) + len(test) == 100
    assert np.bincount(LABELS[test]).tolist() == [12, 6, 9, 3]


def test_validation_split_uses_training_data_only():
    fit, val = validation_split(LABELS, 2, fraction=0.2, seed=0)
    assert not set(fit) & set(val)
    assert np.all(LABELS[fit] == 2) and len(fit) == 24
    is_normal = LABELS[val] == 2
    assert is_normal.sum() == 6 and (~is_normal).sum() == 6
    assert np.bincount(LABELS[val][~is_normal], minlength=4).tolist() == [3, 2, 0, 1]  # stratified over others
    again = validation_split(LABELS, 2, fraction=0.2, seed=0)
    assert np.array_equal(again[0], fit) and np.array_equal(again[1], val)


def test_validation_split_with_few_anomalies_takes_all():
    labels = np.array([0] * 50 + [1] * 3)
    fit, val = validation_split(labels, 0, fraction=0.2)
    assert (labels[val] == 1).sum() == 3 and (labels[val] == 0).sum() == 10 and len(fit) == 40


def test_validation_split_rejects_bad_args():
    with pytest.raises(ValueError, match="fraction"):
        validation_split(LABELS, 0, fraction=1.5)
    with pytest.raises(DataError, match="normal class 9"):
        validation_split(LABELS, 9)


def _ds(names):
    x = np.zeros((len(names), 1, 8, 8), np.uint8)
    y = np.arange(len(names))
    return ImageDataset("toy", x, y, x, y, tuple(names))


def test_resolve_classes_by_name_and_index():
    ds = _ds(["cat", "dog", "owl", "10"])
    assert resolve_classes(ds, None) == [0, 1, 2, 3] and resolve_classes(ds, []) == [0, 1, 2, 3]
    assert resolve_classes(ds, ["owl", 0, "1", np.int64(2)]) == [2, 0, 1]
    assert resolve_classes(ds, ["10"]) == [3]  # an exact name wins over an index


def test_resolve_classes_unknown_lists_valid():
    ds = _ds(["cat", "dog"])
    for bad in (["cow"], [5], ["-1"], [1.0]):
        with pytest.raises(DataError, match=r"unknown class.*0=cat, 1=dog"):
            resolve_classes(ds, bad)


def test_image_dataset_validates_arrays():
    x = np.zeros((2, 1, 8, 8), np.uint8)
    with pytest.raises(DataError, match="int64"):
        ImageDataset("toy", x, np.array([0, 1], np.int32), x, np.array([0, 1]), ("a", "b"))
    with pytest.raises(DataError, match=r"\[0, 2\)"):
        ImageDataset("toy", x, np.array([0, 2]), x, np.array([0, 1]), ("a", "b"))
    with pytest.raises(DataError, match="uint8"):
        ImageDataset("toy", x.astype(np.float32), np.array([0, 1]), x, np.array([0, 1]), ("a", "b"))
