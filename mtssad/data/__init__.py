"""Data sets as uint8 image arrays: a registry of loaders, seeded stratified splits.

Importing this package registers every loader below; add a data set by writing one
module with a function decorated by @register_dataset("name") and importing it here.
"""
from . import cifar, cub, digits, glyphs, imagefolder, mnist, svhn  # noqa: F401  (registers loaders)
from .base import DataError, ImageDataset
from .registry import DATASET_MIN_STEPS, DATASETS, dataset_names, default_min_steps, load_dataset, register_dataset
from .splits import resolve_classes, stratified_subset, validation_split

__all__ = [
    "DATASETS",
    "DATASET_MIN_STEPS",
    "default_min_steps",
    "DataError",
    "ImageDataset",
    "dataset_names",
    "load_dataset",
    "register_dataset",
    "resolve_classes",
    "stratified_subset",
    "validation_split",
]
