"""Array-level image helpers shared by the loaders: resize, pad, channel conversion, file reading."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .base import DataError

GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


def resize(images: np.ndarray, side: int) -> np.ndarray:
    """Bilinear resize of uint8 (N, C, H, W) to (N, C, side, side); no-op if already that size."""
    n, c, h, w = images.shape
    if h == side and w == side:
        return images
    out = np.empty((n, c, side, side), dtype=np.uint8)
    for i in range(n):
        for ch in range(c):  # PIL resizes each plane; identical to resizing RGB at once for BILINEAR
            plane = Image.fromarray(images[i, ch])
            out[i, ch] = np.asarray(plane.resize((side, side), Image.BILINEAR))
    return out


def pad_to(images: np.ndarray, side: int) -> np.ndarray:
    """Zero-pad uint8 (N, C, H, W) symmetrically to (N, C, side, side); H, W <= side."""
    _, _, h, w = images.shape
    top, left = (side - h) // 2, (side - w) // 2
    return np.pad(images, ((0, 0), (0, 0), (top, side - h - top), (left, side - w - left)))


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """Convert uint8 (N, C, H, W) to 1 or 3 channels (gray -> RGB repeats; RGB -> gray is ITU-R 601 luma, as PIL)."""
    c = images.shape[1]
    if c == channels:
        return images
    if channels == 3:  # (N, 1, H, W) -> (N, 3, H, W)
        return np.repeat(images, 3, axis=1)
    # PIL's "L" conversion: L = (R*299 + G*587 + B*114) / 1000, rounded
    weights = np.array([299, 587, 114], dtype=np.uint32).reshape(1, 3, 1, 1)
    luma = (images.astype(np.uint32) * weights).sum(axis=1, keepdims=True)
    return ((luma + 500) // 1000).astype(np.uint8)


def to_nchw(images_hwc: np.ndarray) -> np.ndarray:
    """(N, H, W) or (N, H, W, C) uint8 -> (N, C, H, W), contiguous."""
    if images_hwc.ndim == 3:
        return np.ascontiguousarray(images_hwc[:, None])
    return np.ascontiguousarray(images_hwc.transpose(0, 3, 1, 2))


def read_image(path: Path, side: int, box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """Decode one file fully (truncation is an error), optionally crop to box=(x, y, w, h), resize.

    Returns uint8 (1, side, side) for grayscale sources and (3, side, side) for all others.
    Raises DataError naming the path when the file cannot be decoded.
    """
    try:
        with Image.open(path) as img:
            full_w, full_h = img.size
            if img.format == "JPEG":  # decode at a reduced scale (DCT scaling) still >= 2x the target
                bw, bh = (box[2], box[3]) if box is not None else (full_w, full_h)
                img.draft(img.mode, (int(2 * side * full_w / max(bw, 1)), int(2 * side * full_h / max(bh, 1))))
            img.load()  # forces a full decode: truncated files raise here
            gray = img.mode in GRAY_MODES
            img = img.convert("L" if gray else "RGB")
            if box is not None:
                sx, sy = img.width / full_w, img.height / full_h  # box is in full-resolution pixels
                x, y, w, h = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
                left, top = max(0, int(round(x))), max(0, int(round(y)))
                right = min(img.width, int(round(x + w)))
                bottom = min(img.height, int(round(y + h)))
                if right > left and bottom > top:
                    img = img.crop((left, top, right, bottom))
            img = img.resize((side, side), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot read image {path}: {type(err).__name__}: {err}") from err
    return arr[None] if gray else arr.transpose(2, 0, 1)


def stack_mixed(arrays: list[np.ndarray]) -> np.ndarray:
    """Stack (1|3, H, W) arrays: all gray -> (N, 1, H, W), otherwise every one converted to RGB."""
    if not arrays:
        raise ValueError("stack_mixed needs at least one array")
    channels = 1 if all(a.shape[0] == 1 for a in arrays) else 3
    return np.stack([to_channels(a[None], channels)[0] for a in arrays])


def read_many(
    paths: list[Path], side: int, skip_bad: bool, boxes: list | None = None
) -> tuple[list[np.ndarray], list[int], list[str]]:
    """read_image over paths: (arrays, indices of the paths read, unreadable paths skipped).

    An unreadable file raises DataError naming it, unless skip_bad.
    """
    from ..logs import progress_bar

    arrays, kept, skipped = [], [], []
    with progress_bar(total=len(paths), desc="reading images") as bar:  # drawn on a terminal only
        for i, path in enumerate(paths):
            bar.update(1)
            try:
                arrays.append(read_image(path, side, None if boxes is None else boxes[i]))
            except DataError:
                if not skip_bad:
                    raise
                skipped.append(str(path))
                continue
            kept.append(i)
    return arrays, kept, skipped
