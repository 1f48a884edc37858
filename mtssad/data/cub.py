"""Caltech-UCSD Birds-200-2011 from its official text files and image tree."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DataError, ImageDataset, LoaderArgs, find_dir
from .imageops import read_many, stack_mixed, to_channels
from .registry import register_dataset

LAYOUT = (
    "ROOT/CUB_200_2011/{images.txt,image_class_labels.txt,train_test_split.txt,classes.txt,"
    "images/<class>/<file>.jpg} (bounding_boxes.txt for crop_bbox); ROOT may be CUB_200_2011 itself"
)


def _table(path: Path, n_fields: int) -> dict[int, list[str]]:
    """id -> remaining fields of a whitespace-separated 'id field...' file (the last field may hold spaces)."""
    table = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=n_fields)
        try:
            if len(parts) != n_fields + 1:
                raise ValueError
            table[int(parts[0])] = parts[1:]
        except ValueError:
            raise DataError(
                f"cub200: {path}:{lineno}: expected 'id' and {n_fields} field(s); got {line!r}"
            ) from None
    return table


@register_dataset("cub200")
def load_cub200(args: LoaderArgs) -> ImageDataset:
    required = ["images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt"]
    if args.crop_bbox:
        required.append("bounding_boxes.txt")
    d = find_dir(args, ["CUB_200_2011", ""], required, LAYOUT)
    images = _table(d / "images.txt", 1)
    labels = _table(d / "image_class_labels.txt", 1)
    is_train = _table(d / "train_test_split.txt", 1)
    classes = _table(d / "classes.txt", 1)
    boxes = _table(d / "bounding_boxes.txt", 4) if args.crop_bbox else None
    class_ids = sorted(classes)
    if class_ids != list(range(1, len(class_ids) + 1)):
        raise DataError(f"cub200: {d / 'classes.txt'}: expected class ids 1..{len(class_ids)}; got {class_ids[:5]}...")
    # "001.Black_footed_Albatross" -> "Black_footed_Albatross"
    class_names = tuple(classes[i][0].split(".", 1)[-1] for i in class_ids)
    ids = sorted(images)
    for table, fname in ((labels, "image_class_labels.txt"), (is_train, "train_test_split.txt"),
                         (boxes, "bounding_boxes.txt")):
        if table is not None and set(table) != set(ids):
            raise DataError(f"cub200: {d / fname} and {d / 'images.txt'} list different image ids")
    paths = [d / "images" / images[i][0] for i in ids]
    box_list = [tuple(float(v) for v in boxes[i]) for i in ids] if boxes is not None else None
    arrays, kept, skipped = read_many(paths, args.side, args.skip_bad_images, box_list)
    if not arrays:
        raise DataError(f"cub200: no readable images under {d / 'images'}")
    x = to_channels(stack_mixed(arrays), 3)  # CUB is RGB; its few grayscale files become RGB
    kept_ids = [ids[k] for k in kept]
    y = np.array([int(labels[i][0]) - 1 for i in kept_ids], dtype=np.int64)
    if y.min() < 0 or y.max() >= len(class_names):
        raise DataError(f"cub200: {d / 'image_class_labels.txt'}: class ids must lie in 1..{len(class_names)}")
    train = np.array([is_train[i][0] == "1" for i in kept_ids])
    return ImageDataset(
        name=args.name,
        train_images=x[train],
        train_labels=y[train],
        test_images=x[~train],
        test_labels=y[~train],
        class_names=class_names,
        skipped=tuple(skipped),
    )
