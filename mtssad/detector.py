"""`MultiTaskDetector`: the paper's method behind a scikit-learn / PyOD style API.

    det = MultiTaskDetector(backbone="wrn-10-1", epochs=5).fit(X_normal)
    s = det.score_samples(X_test)        # higher = more normal
    det.predict(X_test)                  # +1 normal, -1 anomaly (threshold_ from contamination)

The network (`mtssad.model`) knows nothing of fitting, thresholds or files;
subclasses (MHRot, GeoTrans in `mtssad.methods`) change the transform plan and
the score, not the machinery.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .config import DetectorConfig
from .diagnostic import head_verdict, select_heads
from .model import MultiHeadNet, count_parameters
from .scoring import combine_heads, head_accuracy, head_scores, score_images, variant_probs
from .train import fit_epochs, recalibrate_batchnorm, seed_everything, to_model_input
from .transforms import Jigsaw, Plan, build_tasks, multitask_plan
from .validation import check_images, check_labels, resolve_device

FILE_FORMAT = "mtssad-detector"
FILE_VERSION = 1
DETECTOR_CLASSES: dict[str, type] = {}


class DetectorFileError(ValueError):
    """A saved detector that cannot be read: corrupt, truncated, foreign or from another format version."""


def register_detector(cls):
    DETECTOR_CLASSES[cls.__name__] = cls
    return cls


@register_detector
class MultiTaskDetector:
    """Geometric (vertical, horizontal, rotation) + jigsaw heads on one Wide-ResNet (METHOD.md).

    Keyword arguments are the fields of `mtssad.config.DetectorConfig`.
    Fitted attributes: model_, plan_, image_shape_, history_, threshold_, offset_, head_stats_.
    """

    def __init__(self, **params):
        self.config = DetectorConfig(**params)

    def get_params(self, deep: bool = True) -> dict:
        from dataclasses import asdict

        return asdict(self.config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config.to_json()})"

    # ---- plan and network -------------------------------------------------------------------
    def _make_plan(self, side: tuple[int, int], permutations: torch.Tensor | None = None) -> Plan:
        c = self.config
        tasks = build_tasks(c.tasks, side, grid=c.grid, k=c.k, margin=c.margin, shift=c.shift, seed=c.seed,
                            permutations=permutations)
        return multitask_plan(tasks)

    def init_model(self, image_shape: tuple[int, int, int], permutations: torch.Tensor | None = None):
        """Build plan_ and an untrained model_ for images of (C, H, W); used by fit and by Ray workers."""
        c = self.config
        self.device_ = resolve_device(c.device)
        self.image_shape_ = tuple(int(v) for v in image_shape)
        self.plan_ = self._make_plan(self.image_shape_[1:], permutations)
        heads = {h.name: h.num_classes for h in self.plan_.heads}
        self.model_ = MultiHeadNet(c.backbone, self.image_shape_[0], heads, c.dropout, c.channels_last).to(self.device_)
        self.n_parameters_ = count_parameters(self.model_)
        return self

    @property
    def permutations_(self) -> torch.Tensor | None:
        """The jigsaw permutations (k, n_h * n_w), identity first; None without a jigsaw head."""
        jig = [t for t in self.plan_.tasks if isinstance(t, Jigsaw)]
        return jig[0].permutations if jig else None

    # ---- fitting ------------------------------------------------------------------------------
    def fit(self, X, y=None, *, X_val=None, y_val=None):
        """Train on normal images X; X_val/y_val (1 = normal) give the per-epoch head diagnostic and calibration."""
        X = check_images(X)
        self._check_fits_min_size(X)
        if X_val is not None:
            X_val = check_images(X_val, expected_shape=tuple(X.shape[1:]), name="X_val")
            y_val = check_labels(y_val, len(X_val), name="y_val")
        self._check_selection_data(y_val)
        generator = seed_everything(self.config.seed)
        self.init_model(tuple(X.shape[1:]))
        t0 = time.perf_counter()
        on_epoch = None
        if X_val is not None:
            on_epoch = lambda epoch, stats: stats.update(self._validation_accuracy(X_val, y_val))  # noqa: E731
        self.history_ = fit_epochs(self.model_, self.plan_, X, self.config, device=self.device_,
                                   generator=generator, on_epoch=on_epoch)
        self.train_seconds_ = time.perf_counter() - t0
        return self.calibrate(X, X_val=X_val, y_val=y_val)

    def _check_selection_data(self, y_val) -> None:
        """head_selection="diagnostic" needs held-out normal images; fail before any training without them."""
        if self.config.head_selection == "diagnostic" and (y_val is None or not np.asarray(y_val).astype(bool).any()):
            raise ValueError('head_selection="diagnostic" needs held-out normal images: pass X_val and y_val '
                             "(1 = normal) with at least one normal image")

    def _check_fits_min_size(self, X: torch.Tensor) -> None:
        if len(X) < 2:
            raise ValueError(f"fit needs at least 2 normal images (BatchNorm); got {len(X)}")

    def _validation_accuracy(self, X_val: torch.Tensor, y_val: np.ndarray) -> dict:
        """Per-head accuracy on held-out normal and anomalous images (the task-suitability diagnostic)."""
        acc = score_images(self.model_, self.plan_, X_val, device=self.device_,
                           batch_size=self.config.score_batch_size, amp=self.config.amp, reduce=head_accuracy)
        out = {}
        for head in self.plan_.heads:
            out[f"num_classes/{head.name}"] = head.num_classes
            if y_val.any():
                out[f"acc_val_normal/{head.name}"] = float(acc[head.name][y_val].mean())
            if (~y_val).any():
                out[f"acc_val_anomaly/{head.name}"] = float(acc[head.name][~y_val].mean())
        return out

    def calibrate(self, X, *, X_val=None, y_val=None):
        """Finish a trained model on its normal training images X.

        Recomputes BatchNorm statistics on X (config.bn_recalibration), chooses the scored heads
        (config.head_selection, from the diagnostic on X_val/y_val), then sets head_stats_ and
        threshold_/offset_ from reference normal data (held-out normals if given, else X).
        """
        X = check_images(X, expected_shape=self.image_shape_)
        if X_val is not None:
            X_val = check_images(X_val, expected_shape=self.image_shape_, name="X_val")
            y_val = check_labels(y_val, len(X_val), name="y_val")
        self._check_selection_data(y_val)
        if self.config.bn_recalibration:
            recalibrate_batchnorm(self.model_, self.plan_, X, batch_size=self.config.score_batch_size, device=self.device_)
        trained = [h.name for h in self.plan_.heads]
        heads = [h for h in self.config.heads_for_score if h in trained] or trained  # GeoTrans: one joint head
        self.head_verdicts_ = {}
        if self.config.head_selection == "diagnostic":  # one extra pass over X_val, only when asked for
            self.head_verdicts_ = self._head_verdicts(X_val, y_val)
            heads = select_heads({h: self.head_verdicts_[h] for h in heads})
        self.selected_heads_ = tuple(heads)
        ref = X
        if X_val is not None and y_val.any():
            ref = X_val[torch.from_numpy(y_val)]
        self._fit_score_model(X)
        per_head = self.score_tasks(ref)
        self.head_counts_ = {h.name: int((self.plan_.labels[:, i] >= 0).sum()) for i, h in enumerate(self.plan_.heads)}
        self.head_stats_ = {h: (float(v.mean()), float(v.std()) or 1.0) for h, v in per_head.items()}
        scores = self._combine(per_head)
        self.threshold_ = float(np.quantile(scores, self.config.contamination))
        self.offset_ = self.threshold_
        return self

    def _head_verdicts(self, X_val: torch.Tensor, y_val: np.ndarray) -> dict[str, str]:
        """head -> task-suitability verdict on the held-out data, with the final (recalibrated) network."""
        acc = self._validation_accuracy(X_val, y_val)
        return {h.name: head_verdict(acc.get(f"acc_val_normal/{h.name}"), acc.get(f"acc_val_anomaly/{h.name}"),
                                     h.num_classes) for h in self.plan_.heads}

    def _fit_score_model(self, X: torch.Tensor) -> None:
        """Hook for methods whose score has its own fitted parameters (GeoTrans's Dirichlet)."""

    # ---- scoring ------------------------------------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "model_"):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet; call fit(X) or load(path) first")

    def _head_scores(self, X: torch.Tensor) -> dict[str, np.ndarray]:
        return score_images(self.model_, self.plan_, X, device=self.device_, batch_size=self.config.score_batch_size,
                            amp=self.config.amp, reduce=head_scores)

    def score_tasks(self, X) -> dict[str, np.ndarray]:
        """Per-head scores s_i (eq. 5): head name -> (N,) float array."""
        self._check_fitted()
        X = check_images(X, expected_shape=self.image_shape_)
        return self._head_scores(X)

    def _scored_heads(self, per_head: dict[str, np.ndarray]) -> list[str]:
        """The heads averaged in the score: selected at calibration (or configured), that `per_head` has."""
        chosen = getattr(self, "selected_heads_", None) or self.config.heads_for_score
        return [h for h in chosen if h in per_head] or list(per_head)

    def _combine(self, per_head: dict[str, np.ndarray]) -> np.ndarray:
        heads = self._scored_heads(per_head)
        return combine_heads(per_head, heads, norm=self.config.score_norm,
                             counts=getattr(self, "head_counts_", None), stats=getattr(self, "head_stats_", None))

    def score_samples(self, X) -> np.ndarray:
        """Normality score (eq. 6): mean of the per-head scores; higher = more normal. (N,) float64."""
        return self._combine(self.score_tasks(X))

    def score_samples_and_tasks(self, X) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """score_samples and score_tasks from one pass over X."""
        per_head = self.score_tasks(X)
        return self._combine(per_head), per_head

    def decision_function(self, X) -> np.ndarray:
        """score_samples - offset_: negative = anomaly at the fitted threshold."""
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        """+1 normal, -1 anomaly."""
        return np.where(self.decision_function(X) >= 0, 1, -1)

    def variant_probabilities(self, X) -> dict[str, np.ndarray]:
        """head -> (V, N, m) softmax outputs for every variant (diagnostics and custom scores)."""
        self._check_fitted()
        X = check_images(X, expected_shape=self.image_shape_)
        self.model_.eval()
        probs = variant_probs(self.model_, self.plan_, to_model_input(X, self.device_), amp=self.config.amp)
        return {h: p.cpu().numpy() for h, p in probs.items()}

    # ---- persistence --------------------------------------------------------------------------
    def _fitted_state(self) -> dict:
        return {
            "image_shape": list(self.image_shape_),
            "threshold": self.threshold_,
            "offset": self.offset_,
            "head_stats": self.head_stats_,
            "head_counts": self.head_counts_,
            "head_verdicts": self.head_verdicts_,
            "selected_heads": list(self.selected_heads_),
            "history": getattr(self, "history_", []),
            "train_seconds": getattr(self, "train_seconds_", None),
        }

    def _extra_tensors(self) -> dict[str, torch.Tensor]:
        """Hook: tensors a subclass's score needs (saved beside the weights)."""
        return {}

    def _load_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Hook: restore what `_extra_tensors` saved."""

    def to_bytes(self) -> bytes:
        """The detector file `save` writes, as bytes: to `ray.put` for Ray actors or to write to any storage."""
        self._check_fitted()
        perms = self.permutations_
        payload = {
            "format": FILE_FORMAT,
            "format_version": FILE_VERSION,
            "mtssad_version": __version__,
            "detector": type(self).__name__,
            "config": self.config.to_json(),
            "fitted": json.dumps(self._fitted_state()),
            "state_dict": {k: v.detach().cpu() for k, v in self.model_.state_dict().items()},
            "permutations": perms.clone() if perms is not None else torch.empty(0, dtype=torch.long),
            "extra": {k: v.detach().cpu() for k, v in self._extra_tensors().items()},
        }
        buf = io.BytesIO()
        torch.save(payload, buf)
        return buf.getvalue()

    def save(self, path) -> Path:
        """Write weights, config, permutations and threshold to one file, atomically."""
        from .results import atomic_write_bytes

        path = Path(path)
        atomic_write_bytes(path, self.to_bytes())
        return path

    @classmethod
    def load(cls, path, *, device: str | None = None):
        """Read a file written by `save` (a path), or its bytes (`to_bytes`). Code in it is never executed."""
        payload = read_detector_file(path)
        path = _source_name(path)
        kind = DETECTOR_CLASSES.get(payload["detector"])
        if kind is None or not issubclass(kind, cls):
            raise DetectorFileError(f"{path}: holds a {payload['detector']!r}, not a {cls.__name__}")
        try:
            config = DetectorConfig.from_json(payload["config"])
            fitted = json.loads(payload["fitted"])
        except (ValueError, TypeError) as e:
            raise DetectorFileError(f"{path}: its config cannot be read by this mtssad ({e})") from None
        if device is not None:
            config.device = device
        det = kind.__new__(kind)
        det.config = config
        perms = payload["permutations"] if payload["permutations"].numel() else None
        det.init_model(tuple(fitted["image_shape"]), permutations=perms)
        diff = _state_mismatch(det.model_.state_dict(), payload["state_dict"])
        if diff:  # e.g. weights saved for another grid, k or backbone than the config beside them
            c = det.config
            raise DetectorFileError(f"{path}: weights do not match its config (backbone {c.backbone}, grid "
                                    f"{c.grid[0]}x{c.grid[1]}, k {c.k}, tasks {','.join(c.tasks)}): {diff}")
        det.model_.load_state_dict(payload["state_dict"])
        det.threshold_, det.offset_ = fitted["threshold"], fitted["offset"]
        det.head_stats_ = {h: tuple(v) for h, v in fitted["head_stats"].items()}
        det.head_counts_ = fitted["head_counts"]
        det.head_verdicts_ = fitted.get("head_verdicts", {})
        det.selected_heads_ = tuple(fitted.get("selected_heads") or config.heads_for_score)
        det.history_ = fitted.get("history", [])
        det.train_seconds_ = fitted.get("train_seconds")
        det._load_extra_tensors({k: v.to(det.device_) for k, v in payload["extra"].items()})
        return det


def _state_mismatch(expected: dict, found, limit: int = 3) -> str:
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


def _source_name(source) -> str:
    return f"<{len(source)} bytes of a detector file>" if isinstance(source, (bytes, bytearray, memoryview)) else str(source)


def read_detector_file(path) -> dict:
    """torch.load(weights_only=True) of a path or bytes, format checked; every failure is a DetectorFileError naming it."""
    if isinstance(path, (bytes, bytearray, memoryview)):
        source, path = io.BytesIO(bytes(path)), _source_name(path)
    else:
        path = source = Path(path)
        if not path.is_file():
            raise DetectorFileError(f"{path}: no such detector file")
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle with code, random bytes: all "not readable"
        raise DetectorFileError(f"{path}: not a readable mtssad detector file ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FILE_FORMAT:
        raise DetectorFileError(f"{path}: not an mtssad detector file (no '{FILE_FORMAT}' marker)")
    if payload.get("format_version") != FILE_VERSION:
        raise DetectorFileError(
            f"{path}: written in detector file format {payload.get('format_version')} by mtssad "
            f"{payload.get('mtssad_version')}; this mtssad {__version__} reads format {FILE_VERSION}"
        )
    return payload
