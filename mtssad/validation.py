"""Checks on images at public entry points; messages say what was got and what was expected."""

from __future__ import annotations

import warnings

import numpy as np
import torch


def check_images(X, *, expected_shape: tuple[int, int, int] | None = None, name: str = "X") -> torch.Tensor:
    """Return X as a (N, C, H, W) tensor: uint8 in [0, 255] or float in [0, 1] (not copied when possible).

    Accepts a torch tensor or numpy array of shape (N, C, H, W) or (N, H, W) (one channel).
    `expected_shape` = (C, H, W) the detector was fitted on.
    """
    if isinstance(X, torch.Tensor):
        if X.layout != torch.strided:
            raise TypeError(f"{name} is a sparse tensor; sparse input is not supported: "
                            "expected dense images (N, C, H, W)")
        t = X.detach()
    else:
        if hasattr(X, "toarray") or hasattr(X, "todense"):  # scipy.sparse, without importing scipy here
            raise TypeError(f"{name} is a sparse {type(X).__name__}; sparse input is not supported: "
                            "expected dense images (N, C, H, W)")
        arr = np.asarray(X)
        if arr.dtype == object:
            raise ValueError(f"{name} must be a numeric array of images; got an object array")
        if np.iscomplexobj(arr):
            raise ValueError(f"Complex data not supported: {name} must hold uint8 or float pixels; "
                             f"got dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr)
        if not arr.flags.writeable:  # read-only views (Ray object store, Ray Data): never written, only read
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                t = torch.from_numpy(arr)
        else:
            t = torch.from_numpy(arr)
    if t.ndim == 3:
        t = t.unsqueeze(1)  # (N, 1, H, W)
    if t.ndim != 4:
        hint = "; for rows of C*H*W pixels pass image_shape=(C, H, W) to the detector" if t.ndim == 2 else ""
        raise ValueError(f"expected {name} of shape (N, C, H, W) or (N, H, W); got shape {tuple(t.shape)}{hint}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty: expected at least one image; got shape {tuple(t.shape)}")
    if t.shape[1] > 4 and t.shape[-1] in (1, 3):
        raise ValueError(f"{name} looks channels-last (shape {tuple(t.shape)}); expected (N, C, H, W): "
                         "transpose with .permute(0, 3, 1, 2)")
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} must hold uint8 or float pixels; got dtype {t.dtype}")
    if t.is_floating_point():
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            bad = int((~finite).flatten(1).any(1).sum())
            raise ValueError(f"{name} has NaN or inf pixels in {bad} image(s); expected finite values in [0, 1]")
        lo, hi = float(t.min()), float(t.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"float {name} must be scaled to [0, 1]; got values in [{lo:.3g}, {hi:.3g}] "
                             "(pass uint8 for 0-255)")
    elif t.dtype != torch.uint8:
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"integer {name} must be 0-255 pixel values; got values in [{lo}, {hi}]")
        t = t.to(torch.uint8)
    if expected_shape is not None and tuple(t.shape[1:]) != tuple(expected_shape):
        C, H, W = expected_shape
        raise ValueError(f"{name} has images of shape {tuple(t.shape[1:])} (C, H, W); this detector was fitted "
                         f"on {C} channel(s) of {H}x{W}")
    return t


def check_image_shape(image_shape) -> tuple[int, int, int] | None:
    """None, or (C, H, W) as three positive ints."""
    if image_shape is None:
        return None
    try:
        shape = tuple(image_shape)
    except TypeError:
        shape = ()
    positive_ints = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in shape)
    if len(shape) != 3 or not positive_ints:
        raise ValueError(f"image_shape must be None or (C, H, W), three positive integers; got {image_shape!r}")
    return tuple(int(v) for v in shape)


def unflatten_images(X, image_shape: tuple[int, int, int] | None, name: str = "X"):
    """Rows of C*H*W pixels (N, C*H*W) -> (N, C, H, W) when image_shape = (C, H, W) is set; anything else unchanged.

    For scikit-learn tools that pass 2-D arrays (Pipeline steps, GridSearchCV); images
    given as images are still accepted (and checked against image_shape by check_images).
    """
    if image_shape is None:
        return X
    if not isinstance(X, torch.Tensor):
        X = np.asarray(X)
    if X.ndim != 2:
        return X
    n_pixels = int(np.prod(image_shape))
    if X.shape[1] != n_pixels:
        raise ValueError(f"{name} has {X.shape[1]} features per row; image_shape={tuple(image_shape)} expects "
                         f"C*H*W = {n_pixels} pixels per image")
    return X.reshape(X.shape[0], *image_shape)


def check_labels(y, n: int, name: str = "y") -> np.ndarray:
    """1-D array of n 0/1 flags (1 = normal)."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"{name} must be a 1-D array of {n} flags (1 = normal, 0 = anomaly); got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 (anomaly) and 1 (normal); got values {np.unique(y)[:10].tolist()}")
    return y.astype(bool)


def check_fit_size(X: torch.Tensor) -> None:
    """A network fit needs at least 2 images (BatchNorm's batch statistics)."""
    if len(X) < 2:
        raise ValueError(f"fit needs at least 2 normal images (BatchNorm); got {len(X)}")


def check_selection_data(head_selection: str, y_val) -> None:
    """head_selection="diagnostic" needs held-out normal images, "validation" normal and anomalous ones;
    fail before any training without them."""
    y = None if y_val is None else np.asarray(y_val).astype(bool)
    if head_selection == "diagnostic" and (y is None or not y.any()):
        raise ValueError('head_selection="diagnostic" needs held-out normal images: pass X_val and y_val '
                         "(1 = normal) with at least one normal image")
    if head_selection == "validation" and (y is None or y.all() or not y.any()):
        got = "no X_val/y_val" if y is None else f"{int(y.sum())} normal and {int((~y).sum())} anomalous images"
        raise ValueError('head_selection="validation" chooses the scored heads by validation AUROC, so it needs '
                         "labelled validation data: pass X_val and y_val with normal (1) and anomalous (0) "
                         f"images (e.g. other classes' training images as anomalies); got {got}")


def check_stopping_data(early_stopping: str, X_val, y_val, X_calibration) -> None:
    """Fail before training when early stopping has nothing held out to measure on."""
    y = None if y_val is None else np.asarray(y_val).astype(bool)
    if early_stopping == "val_auroc" and (X_val is None or y is None or y.all() or not y.any()):
        got = "no X_val" if X_val is None else f"{int(y.sum())} normal and {int((~y).sum())} anomalous images"
        raise ValueError('early_stopping="val_auroc" needs labelled held-out images: pass X_val and y_val with '
                         f'normal (1) and anomalous (0) images; got {got}. early_stopping="val_loss" needs '
                         "normal images only")
    if early_stopping == "val_loss" and (y is None or not y.any()) and X_calibration is None:
        raise ValueError('early_stopping="val_loss" needs held-out normal images: pass X_val/y_val with normals '
                         "(1), or keep calibration_fraction > 0; got neither")


def device_problem(device: str) -> str | None:
    """Why `device` cannot be used on this machine (in words), or None when it can."""
    import platform

    if device in ("auto", "cpu"):
        return None
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        return f"not a device name ({e})"
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            return f"MPS (Apple GPUs) is not available on this machine ({platform.system()})"
    elif dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            return f"CUDA is not available here ({why})"
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            return f"this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1})"
    return None


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda if available else cpu; any other name is checked (DeviceError when this machine lacks it)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    problem = device_problem(device)
    if problem:
        from .errors import DeviceError

        raise DeviceError(f"device {device!r}: {problem}; use device='cpu' or 'auto'")
    return torch.device(device)
