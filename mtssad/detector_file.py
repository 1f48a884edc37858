"""The detector file: what `MultiTaskDetector.save` writes and `load` reads, and nothing else.

One `torch.save` of a dict, read back with `torch.load(weights_only=True)` (code in a file
is never executed): a format marker and version, the mtssad version that wrote it, the
detector class's name, the DetectorConfig as JSON ("config"), the other estimator
parameters as JSON ("params", optional), the fitted state as JSON ("fitted"), the network's
state dict, the jigsaw permutations and a subclass's extra tensors ("extra").
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import asdict, fields
from pathlib import Path

import torch

from . import __version__
from .config import DetectorConfig
from .errors import CorruptFileError

FILE_FORMAT = "mtssad-detector"
FILE_VERSION = 1  # unchanged by the estimator parameters: "config" is still DetectorConfig JSON; "params" is optional
CONFIG_FIELDS = tuple(f.name for f in fields(DetectorConfig))
DETECTOR_CLASSES: dict[str, type] = {}  # class name written in a file -> the class `load` builds


class DetectorFileError(CorruptFileError):
    """A saved detector that cannot be read: corrupt, truncated, foreign or from another format version."""


def register_detector(cls):
    """Class decorator: files naming `cls.__name__` load as `cls`."""
    DETECTOR_CLASSES[cls.__name__] = cls
    return cls


def fitted_state(det) -> dict:
    """The fitted attributes a file keeps, as JSON-able values (the inverse of `restore_fitted_state`)."""
    return {
        "image_shape": list(det.image_shape_),
        "threshold": det.threshold_,
        "offset": det.offset_,
        "head_stats": det.head_stats_,
        "head_counts": det.head_counts_,
        "head_verdicts": det.head_verdicts_,
        "selected_heads": list(det.selected_heads_),
        "head_selection_auroc": getattr(det, "head_selection_auroc_", {}),
        "threshold_source": getattr(det, "threshold_source_", None),
        "n_threshold_images": getattr(det, "n_threshold_images_", None),
        "history": getattr(det, "history_", []),
        "train_seconds": getattr(det, "train_seconds_", None),
        "steps_trained": getattr(det, "steps_trained_", None),
        "best_step": getattr(det, "best_step_", None),
    }


def restore_fitted_state(det, fitted: dict) -> None:
    """Set the fitted attributes `fitted_state` wrote; keys absent in older files take their old meaning."""
    det.threshold_, det.offset_ = fitted["threshold"], fitted["offset"]
    det.head_stats_ = {h: tuple(v) for h, v in fitted["head_stats"].items()}
    det.head_counts_ = fitted["head_counts"]
    det.head_verdicts_ = fitted.get("head_verdicts", {})
    det.selected_heads_ = tuple(fitted.get("selected_heads") or det.config_.heads_for_score)
    det.head_selection_auroc_ = fitted.get("head_selection_auroc", {})
    det.threshold_source_ = fitted.get("threshold_source")  # None in older files: unknown, no warning
    det.n_threshold_images_ = fitted.get("n_threshold_images")
    det.history_ = fitted.get("history", [])
    det.train_seconds_ = fitted.get("train_seconds")
    det.steps_trained_, det.best_step_ = fitted.get("steps_trained"), fitted.get("best_step")


def estimator_params(det) -> dict:
    """Parameters beyond DetectorConfig's fields (image_shape, a baseline's own), as JSON-able values."""
    params = det.get_params(deep=False)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items() if k not in CONFIG_FIELDS}


def detector_bytes(det, extra: dict[str, torch.Tensor]) -> bytes:
    """The file of a fitted detector as bytes; `extra`: the tensors its score needs beside the weights."""
    perms = det.permutations_
    payload = {
        "format": FILE_FORMAT,
        "format_version": FILE_VERSION,
        "mtssad_version": __version__,
        "detector": type(det).__name__,
        "config": det.config_.to_json(),
        "params": json.dumps(estimator_params(det)),
        "fitted": json.dumps(fitted_state(det)),
        "state_dict": {k: v.detach().cpu() for k, v in det.model_.state_dict().items()},
        "permutations": perms.clone() if perms is not None else torch.empty(0, dtype=torch.long),
        "extra": {k: v.detach().cpu() for k, v in extra.items()},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def write_detector_file(path, data: bytes) -> Path:
    """Write a detector file's bytes to `path` atomically (a reader never sees half a file)."""
    from .results import atomic_write_bytes

    path = Path(path)
    atomic_write_bytes(path, data)
    return path


def load_detector(cls, source, *, device: str | None = None):
    """(fitted detector of `cls` or a subclass, its extra tensors on its device) from a path or a file's bytes."""
    payload = read_detector_file(source)
    name = source_name(source)
    kind = DETECTOR_CLASSES.get(payload["detector"])
    if kind is None or not issubclass(kind, cls):
        raise DetectorFileError(f"{name}: holds a {payload['detector']!r}, not a {cls.__name__}")
    try:
        config = DetectorConfig.from_json(payload["config"])
        fitted = json.loads(payload["fitted"])
        extra = json.loads(payload.get("params") or "{}")  # absent in files written before the estimator parameters
        extra = {k: tuple(v) if isinstance(v, list) else v for k, v in extra.items()}  # JSON lists back to tuples
    except (ValueError, TypeError) as e:
        raise DetectorFileError(f"{name}: its config cannot be read by this mtssad ({e})") from None
    params = {**asdict(config), **extra}
    if device is not None:
        params["device"] = device
    try:
        det = kind(**params)
        config = det.config
    except (ValueError, TypeError) as e:
        raise DetectorFileError(f"{name}: its parameters cannot be used by this mtssad ({e})") from None
    perms = payload["permutations"] if payload["permutations"].numel() else None
    det.init_model(tuple(fitted["image_shape"]), permutations=perms)
    diff = state_mismatch(det.model_.state_dict(), payload["state_dict"])
    if diff:  # e.g. weights saved for another grid, k or backbone than the config beside them
        raise DetectorFileError(f"{name}: weights do not match its config (backbone {config.backbone}, grid "
                                f"{config.grid[0]}x{config.grid[1]}, k {config.k}, tasks {','.join(config.tasks)}): "
                                f"{diff}")
    det.model_.load_state_dict(payload["state_dict"])
    restore_fitted_state(det, fitted)
    return det, {k: v.to(det.device_) for k, v in payload["extra"].items()}


def state_mismatch(expected: dict, found, limit: int = 3) -> str:
    """'' when `found` fits a model with state dict `expected`, else the first differences in words."""
    if not isinstance(found, dict):
        return f"expected a state dict; got {type(found).__name__}"
    out = [f"{k} missing from the file" for k in expected if k not in found]
    out += [f"{k} in the file is not in this model" for k in found if k not in expected]
    out += [f"{k} has shape {tuple(getattr(found[k], 'shape', ()))} in the file, {tuple(v.shape)} for this config"
            for k, v in expected.items()
            if k in found and (not isinstance(found[k], torch.Tensor) or found[k].shape != v.shape)]
    more = f" (and {len(out) - limit} more)" if len(out) > limit else ""
    return "; ".join(out[:limit]) + more


# Sentences of torch.load's errors that advise loading with weights_only=False or allowlisting the
# file's globals: either would run the code a crafted file carries, so they are never passed on.
_UNSAFE_ADVICE = re.compile(r"weights_only|re-running|trust|safe_globals|two options|pytorch 2\.6|documentation|"
                            r"recommended steps", re.IGNORECASE)


def load_failure_reason(err: BaseException, limit: int = 200) -> str:
    """torch.load's error in a few words, without its advice to retry unsafely."""
    sentences = re.split(r"(?<=[.!?])\s+|\n+", str(err))
    kept = [s.strip() for s in sentences if s.strip() and not _UNSAFE_ADVICE.search(s)]
    text = " ".join(kept) or "refused by the safe loader"
    return f"{type(err).__name__}: {text[:limit]}"


def source_name(source) -> str:
    """How errors name a detector file given as a path or as bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes of a detector file>"
    return str(source)


def read_detector_file(path) -> dict:
    """torch.load(weights_only=True) of a path or bytes, format checked.

    Every failure is a DetectorFileError naming the file."""
    if isinstance(path, (bytes, bytearray, memoryview)):
        source, path = io.BytesIO(bytes(path)), source_name(path)
    else:
        path = source = Path(path)
        if not path.is_file():
            raise DetectorFileError(f"{path}: no such detector file")
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle with code, random bytes: all "not readable"
        raise DetectorFileError(f"{path}: not a readable mtssad detector file ({load_failure_reason(e)}); "
                                "nothing in it was executed: a detector file holds only the tensors and JSON "
                                "that MultiTaskDetector.save writes") from None
    if not isinstance(payload, dict) or payload.get("format") != FILE_FORMAT:
        raise DetectorFileError(f"{path}: not an mtssad detector file (no '{FILE_FORMAT}' marker)")
    if payload.get("format_version") != FILE_VERSION:
        raise DetectorFileError(
            f"{path}: written in detector file format {payload.get('format_version')} by mtssad "
            f"{payload.get('mtssad_version')}; this mtssad {__version__} reads format {FILE_VERSION}"
        )
    return payload
