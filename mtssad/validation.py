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
        t = X.detach()
    else:
        arr = np.asarray(X)
        if arr.dtype == object:
            raise ValueError(f"{name} must be a numeric array of images; got an object array")
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
        raise ValueError(f"expected {name} of shape (N, C, H, W) or (N, H, W); got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty: expected at least one image; got shape {tuple(t.shape)}")
    if t.shape[1] > 4 and t.shape[-1] in (1, 3):
        raise ValueError(
            f"{name} looks channels-last (shape {tuple(t.shape)}); expected (N, C, H, W): transpose with .permute(0, 3, 1, 2)"
        )
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} must hold uint8 or float pixels; got dtype {t.dtype}")
    if t.is_floating_point():
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            bad = int((~finite).flatten(1).any(1).sum())
            raise ValueError(f"{name} has NaN or inf pixels in {bad} image(s); expected finite values in [0, 1]")
        lo, hi = float(t.min()), float(t.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"float {name} must be scaled to [0, 1]; got values in [{lo:.3g}, {hi:.3g}] (pass uint8 for 0-255)")
    elif t.dtype != torch.uint8:
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"integer {name} must be 0-255 pixel values; got values in [{lo}, {hi}]")
        t = t.to(torch.uint8)
    if expected_shape is not None and tuple(t.shape[1:]) != tuple(expected_shape):
        C, H, W = expected_shape
        raise ValueError(
            f"{name} has images of shape {tuple(t.shape[1:])} (C, H, W); this detector was fitted on {C} channel(s) of {H}x{W}"
        )
    return t


def check_labels(y, n: int, name: str = "y") -> np.ndarray:
    """1-D array of n 0/1 flags (1 = normal)."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"{name} must be a 1-D array of {n} flags (1 = normal, 0 = anomaly); got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 (anomaly) and 1 (normal); got values {np.unique(y)[:10].tolist()}")
    return y.astype(bool)


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
