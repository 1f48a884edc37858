"""`MultiTaskDetector`: the paper's method as a scikit-learn estimator (BaseEstimator + OutlierMixin).

    det = MultiTaskDetector(backbone="wrn-10-1", epochs=5).fit(X_normal)
    s = det.score_samples(X_test)        # higher = more normal
    det.predict(X_test)                  # +1 normal, -1 anomaly (threshold_ from contamination)

The network (`mtssad.model`) knows nothing of fitting, thresholds or files;
subclasses (MHRot, GeoTrans in `mtssad.methods`) change the transform plan and
the score, not the machinery.
"""

from __future__ import annotations

import copy
import inspect
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.exceptions import NotFittedError

from .calibration import calibration_split, threshold_at, threshold_warning
from .config import DetectorConfig, config_defaults
from .detector_file import DetectorFileError, detector_bytes, load_detector, register_detector, write_detector_file
from .diagnostic import choose_on_validation, head_verdict, select_heads, validation_candidates
from .model import MultiHeadNet, count_parameters
from .scoring import STD_FLOOR, combine_heads, head_accuracy, head_scores, head_stats, score_images, variant_probs
from .train import fit_epochs, recalibrate_batchnorm, seed_everything, to_model_input
from .transforms import Jigsaw, Plan, build_tasks, multitask_plan
from .validation import (check_fit_size, check_image_shape, check_images, check_labels, check_selection_data,
                         check_stopping_data, resolve_device, unflatten_images)

__all__ = ["DetectorFileError", "FitData", "MultiTaskDetector", "init_signature", "register_detector"]

# The estimator's parameters with their defaults: DetectorConfig's fields (the one place their defaults and
# rules live), then image_shape, which says how X is given and is no part of the method.
PARAM_DEFAULTS = {**config_defaults(), "image_shape": None}


def init_signature(base: type | None, **changes) -> inspect.Signature:
    """`base.__init__`'s signature (`(self)` for None) with defaults changed or keyword-only parameters added.

    scikit-learn reads an estimator's parameters from its __init__ signature. An __init__ that
    takes **params sets this as its `__signature__` instead of spelling out two dozen keywords;
    get_params, clone and help() then see them all.
    """
    sig = inspect.Signature([inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)])
    sig = inspect.signature(base.__init__) if base is not None else sig
    params = [p.replace(default=changes.pop(p.name)) if p.name in changes else p for p in sig.parameters.values()]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=d) for name, d in changes.items()]
    return sig.replace(parameters=params)


@dataclass
class FitData:
    """A fit's inputs as `MultiTaskDetector.prepare_fit` checked them, for `fit` and Ray's `fit_ddp` alike."""

    config: DetectorConfig  # the parameters, validated once
    X: torch.Tensor  # (N, C, H, W) normal images to train on, calibration images removed
    X_val: torch.Tensor | None  # (N_val, C, H, W) held-out images: diagnostic, early stopping, their normals' threshold
    y_val: np.ndarray | None  # (N_val,) bool, True = normal
    X_calibration: torch.Tensor | None  # training normals held out (calibration_fraction) to set threshold_


@register_detector
class MultiTaskDetector(OutlierMixin, BaseEstimator):
    """Geometric (vertical, horizontal, rotation) + jigsaw heads on one Wide-ResNet (METHOD.md).

    Parameters: keyword-only, one per field of `mtssad.config.DetectorConfig` (each field's
    comment says why it exists; the signature is generated from its fields), stored unchanged
    and validated at `fit` (scikit-learn's convention; `det.config` validates on demand), plus

    image_shape : (C, H, W) or None
        Accept X as rows of C*H*W pixels, (N, C*H*W), for scikit-learn tools that pass 2-D
        arrays (Pipeline steps, GridSearchCV); images (N, C, H, W) are accepted as well.
        None: X must be images, (N, C, H, W) or (N, H, W).

    X: uint8 pixels 0-255 or floats in [0, 1]. `y` is ignored everywhere (one-class: fit on
    normal images only; scikit-learn's OneClassSVM does the same).

    Fitted attributes: model_ (the nn.Module), plan_ (its transforms), permutations_, device_,
    config_ (the DetectorConfig fitted with), image_shape_, n_features_in_ (= C*H*W), n_parameters_,
    history_, steps_trained_, best_step_, train_seconds_, threshold_ = offset_, threshold_source_
    ("X_val", "calibration" or "training"), n_threshold_images_, head_stats_, head_counts_,
    head_verdicts_, selected_heads_, head_selection_auroc_ (head_selection="validation": candidate
    head set -> its validation AUROC). `init_model` sets model_ to n_parameters_ (Ray workers train model_).

    Sign conventions (scikit-learn's, as OneClassSVM and IsolationForest):
    score_samples(X) higher = more normal; decision_function(X) = score_samples(X) - offset_,
    negative = anomaly; predict(X) +1 normal / -1 anomaly; fit_predict(X) = fit(X).predict(X).
    PyOD's names (higher = more anomalous) map as docs/sklearn.md says: PyOD's scores are -score_samples.

    threshold_ is the `contamination` quantile of held-out normal scores: X_val's normals when
    fit gets them, else a seeded `calibration_fraction` of X held out of training
    (`mtssad.calibration`); with calibration_fraction=0 and no X_val it falls back to the
    optimistic training scores, and predict() warns.

    sklearn's check_estimator passes every check that does not fit on tabular data (clone,
    get_params/set_params, repr, no validation in __init__, unfitted errors, sparse/complex/1-D input
    refused ...); docs/sklearn.md gives each other check's reason, tests/test_sklearn_api.py tests them.
    """

    def __init__(self, **params):
        unknown = [name for name in params if name not in PARAM_DEFAULTS]
        if unknown:
            raise TypeError(f"{type(self).__name__}.__init__() got an unexpected keyword argument {unknown[0]!r}")
        for name, default in PARAM_DEFAULTS.items():
            setattr(self, name, params.get(name, default))

    __init__.__signature__ = init_signature(None, **PARAM_DEFAULTS)  # (self, *, tasks=..., ..., image_shape=None)

    @classmethod
    def from_config(cls, config: DetectorConfig, **params):
        """An unfitted detector whose parameters are `config`'s fields (plus `params`, e.g. image_shape)."""
        return cls(**asdict(config), **params)

    # ---- parameters ---------------------------------------------------------------------------
    def _config_params(self) -> dict:
        """The DetectorConfig fields among the parameters; subclasses pin or check theirs here."""
        params = self.get_params(deep=False)
        return {k: params[k] for k in config_defaults()}

    @property
    def config(self) -> DetectorConfig:
        """The parameters as the typed, validated DetectorConfig (ValueError naming a bad one).

        Validated on the first access after a parameter changed (set_params or assignment); later
        accesses return a copy of that config. After fit, `config_` is the config the model was
        fitted with.
        """
        key = repr(sorted(self.get_params(deep=False).items()))  # repr: tells 1 from True and 3 from 3.0
        cached = self.__dict__.get("_config_cache")
        if cached is None or cached[0] != key:
            check_image_shape(self.image_shape)
            cached = self._config_cache = (key, DetectorConfig(**self._config_params()))
        return copy.copy(cached[1])

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "offset_")

    # ---- plan and network -------------------------------------------------------------------
    def _make_plan(self, side: tuple[int, int], permutations: torch.Tensor | None = None) -> Plan:
        c = self.config_
        tasks = build_tasks(c.tasks, side, grid=c.grid, k=c.k, margin=c.margin, shift=c.shift, seed=c.seed,
                            permutations=permutations)
        return multitask_plan(tasks)

    def init_model(self, image_shape: tuple[int, int, int], permutations: torch.Tensor | None = None):
        """Build config_, plan_ and an untrained model_ for images of (C, H, W); used by fit and by Ray workers."""
        c = self.config_ = self.config
        self.device_ = resolve_device(c.device)
        self.image_shape_ = tuple(int(v) for v in image_shape)
        self.n_features_in_ = int(np.prod(self.image_shape_))
        self.plan_ = self._make_plan(self.image_shape_[1:], permutations)
        heads = {h.name: h.num_classes for h in self.plan_.heads}
        self.model_ = MultiHeadNet(c.backbone, self.image_shape_[0], heads, c.dropout, c.channels_last).to(self.device_)
        self.n_parameters_ = count_parameters(self.model_)
        return self

    def _check_X(self, X, name: str = "X", *, fitting: bool = False) -> torch.Tensor:
        """X as (N, C, H, W) images: given as images, or as rows of C*H*W pixels with image_shape set.

        fitting=False: checked against the fitted image_shape_ (NotFittedError before fit).
        """
        shape = check_image_shape(self.image_shape)
        X = unflatten_images(X, shape, name)
        if fitting:
            return check_images(X, expected_shape=shape, name=name)
        self._check_fitted()
        return check_images(X, expected_shape=self.image_shape_, name=name)

    @property
    def permutations_(self) -> torch.Tensor | None:
        """The jigsaw permutations (k, n_h * n_w), identity first; None without a jigsaw head."""
        jig = [t for t in self.plan_.tasks if isinstance(t, Jigsaw)]
        return jig[0].permutations if jig else None

    # ---- fitting ------------------------------------------------------------------------------
    def fit(self, X, y=None, *, X_val=None, y_val=None, progress_callback=None):
        """Train on normal images X (y: ignored); return self.

        X_val/y_val (1 = normal, 0 = anomaly): held-out images for the per-epoch head
        diagnostic; their normals set threshold_. Without held-out normals a seeded
        `calibration_fraction` of X is held out of training to set threshold_.
        early_stopping="val_auroc" measures on X_val/y_val (normals and anomalies), "val_loss" on
        the held-out normals (X_val's, else the calibration images).
        progress_callback(steps_done, steps_planned): called after every epoch (a sweep's progress).
        """
        data = self.prepare_fit(X, X_val=X_val, y_val=y_val)
        generator = seed_everything(data.config.seed)
        self.init_model(tuple(data.X.shape[1:]))
        t0 = time.perf_counter()
        on_epoch = None
        if data.X_val is not None:
            on_epoch = lambda epoch, stats: stats.update(self.validation_accuracy(data.X_val, data.y_val))  # noqa: E731
        stopper = self.early_stopper(data.X, X_val=data.X_val, y_val=data.y_val, X_calibration=data.X_calibration)
        history = fit_epochs(self.model_, self.plan_, data.X, self.config_, device=self.device_, generator=generator,
                             on_epoch=on_epoch, stopper=stopper, progress_callback=progress_callback)
        self.record_training(history, stopper, seconds=time.perf_counter() - t0)
        return self.calibrate(data.X, X_val=data.X_val, y_val=data.y_val, X_calibration=data.X_calibration)

    def prepare_fit(self, X, *, X_val=None, y_val=None, name: str = "X") -> FitData:
        """Check a fit's inputs before any training and hold out the calibration images; `fit` and `fit_ddp` call it.

        Validates the parameters (scikit-learn's convention: at fit, not in __init__), the images
        (`name`: what errors call X), X_val/y_val, and that head selection and early stopping get the
        held-out data they need. The images keep their dtype.
        """
        config = self.config
        X = self._check_X(X, name, fitting=True)
        check_fit_size(X)
        if X_val is not None:
            X_val = check_images(unflatten_images(X_val, check_image_shape(self.image_shape), "X_val"),
                                 expected_shape=tuple(X.shape[1:]), name="X_val")
            y_val = check_labels(y_val, len(X_val), name="y_val")
        check_selection_data(config.head_selection, y_val)
        X_cal = None  # a seeded calibration_fraction of X sets threshold_ unless X_val's normals do
        if config.calibration_fraction > 0 and (y_val is None or not y_val.any()):
            fit_idx, cal_idx = calibration_split(len(X), config.calibration_fraction, config.seed)
            if len(cal_idx):
                X, X_cal = X[torch.from_numpy(fit_idx)], X[torch.from_numpy(cal_idx)]
        check_stopping_data(config.early_stopping, X_val, y_val, X_cal)
        return FitData(config, X, X_val, y_val, X_cal)

    def early_stopper(self, X: torch.Tensor, *, X_val=None, y_val=None, X_calibration=None):
        """The `mtssad.stopping.EarlyStopping` of `config_.early_stopping` for model_ (None for "none").

        X: the training images (BatchNorm is recomputed on them before each measurement);
        the held-out normals are X_val's normals, else X_calibration. Used by fit and by DDP rank 0.
        """
        from .stopping import EarlyStopping, held_out_metrics

        c = self.config_
        if c.early_stopping == "none":
            return None
        normals = X_calibration
        if y_val is not None and np.asarray(y_val).astype(bool).any():
            normals = X_val[torch.from_numpy(np.asarray(y_val).astype(bool))]
        measure = held_out_metrics(self.model_, self.plan_, device=self.device_, X_train=X, normals=normals,
                                   X_val=X_val if c.early_stopping == "val_auroc" else None, y_val=y_val,
                                   heads=c.heads_for_score, batch_size=c.score_batch_size)
        return EarlyStopping(measure, monitor=c.early_stopping, every=c.eval_every, patience=c.patience)

    def record_training(self, history: list, stopper=None, *, best_step: int | None = None,
                        seconds: float | None = None) -> None:
        """After training (fit, DDP workers): history_, steps_trained_ (optimizer steps run), best_step_ (the
        steps of the weights kept: `best_step`, else the stopper's best, else all) and train_seconds_."""
        self.history_ = history
        self.steps_trained_ = int(history[-1]["steps"]) if history else 0
        if best_step is None and stopper is not None:
            best_step = stopper.best_step
        self.best_step_ = int(best_step) if best_step else self.steps_trained_
        if seconds is not None:
            self.train_seconds_ = seconds

    def validation_accuracy(self, X_val: torch.Tensor, y_val: np.ndarray) -> dict:
        """Per-head accuracy on held-out normal and anomalous images (the task-suitability diagnostic)."""
        acc = score_images(self.model_, self.plan_, X_val, device=self.device_,
                           batch_size=self.config_.score_batch_size, amp=self.config_.amp, reduce=head_accuracy)
        out = {}
        for head in self.plan_.heads:
            out[f"num_classes/{head.name}"] = head.num_classes
            if y_val.any():
                out[f"acc_val_normal/{head.name}"] = float(acc[head.name][y_val].mean())
            if (~y_val).any():
                out[f"acc_val_anomaly/{head.name}"] = float(acc[head.name][~y_val].mean())
        return out

    def calibrate(self, X, *, X_val=None, y_val=None, X_calibration=None):
        """Finish a trained model on its normal training images X.

        Recomputes BatchNorm statistics on X (bn_recalibration), chooses the scored heads
        (head_selection: from the diagnostic on X_val/y_val, or by validation AUROC), then sets head_stats_ and
        threshold_/offset_ from reference normal images nobody trained on: X_calibration if
        given, else X_val's normals, else (optimistic; predict warns) X itself.
        """
        X = self._check_X(X)
        if X_val is not None:
            X_val = self._check_X(X_val, name="X_val")
            y_val = check_labels(y_val, len(X_val), name="y_val")
        if X_calibration is not None:
            X_calibration = self._check_X(X_calibration, name="X_calibration")
        c = self.config_
        check_selection_data(c.head_selection, y_val)
        acc = None
        if c.bn_recalibration:
            recalibrate_batchnorm(self.model_, self.plan_, X, batch_size=c.score_batch_size, device=self.device_)
            if X_val is not None:
                acc = self._record_final_diagnostic(X_val, y_val)
        trained = [h.name for h in self.plan_.heads]
        heads = [h for h in c.heads_for_score if h in trained] or trained  # GeoTrans: one joint head
        self.head_verdicts_ = {}
        if c.head_selection == "diagnostic":
            self.head_verdicts_ = self._head_verdicts(X_val, y_val, acc)
            heads = select_heads({h: self.head_verdicts_[h] for h in heads})
        self.selected_heads_ = tuple(heads)
        ref, self.threshold_source_ = X, "training"
        if X_calibration is not None:
            ref, self.threshold_source_ = X_calibration, "calibration"
        elif X_val is not None and y_val.any():
            ref, self.threshold_source_ = X_val[torch.from_numpy(y_val)], "X_val"
        self.n_threshold_images_ = len(ref)
        self._fit_score_model(X)
        per_head = self.score_tasks(ref)
        self.head_counts_ = {h.name: int((self.plan_.labels[:, i] >= 0).sum()) for i, h in enumerate(self.plan_.heads)}
        self.head_stats_, floored = head_stats(per_head, self.head_counts_)
        self.head_selection_auroc_ = {}
        if c.head_selection == "validation":  # after head_stats_: standardize's statistics enter the comparison
            self.selected_heads_, self.head_selection_auroc_ = self._heads_by_validation(heads, X_val, y_val)
        floored = [h for h in floored if h in self._scored_heads(per_head)]  # only heads the score uses
        if floored and c.score_norm == "standardize":
            warnings.warn(f"score_norm='standardize': head(s) {', '.join(floored)} scored the {len(ref)} reference "
                          f"normals ({self.threshold_source_} images) almost identically (std below "
                          f"{STD_FLOOR} x the head's transform count); their std was raised to that floor so "
                          "that float noise does not decide the score", UserWarning, stacklevel=2)
        scores = self._combine(per_head)
        self.threshold_ = threshold_at(scores, c.contamination)
        self.offset_ = self.threshold_
        return self

    def _heads_by_validation(self, heads, X_val: torch.Tensor, y_val: np.ndarray) -> tuple[tuple, dict]:
        """(heads with the best validation AUROC among `validation_candidates(heads)`, candidate -> AUROC).

        Each candidate is scored as score_samples would score it (eq. 6 with score_norm); the
        dropped heads stay trained, and score_tasks still reports them.
        """
        from .metrics import auroc

        per_head = self._head_scores(X_val)
        c = self.config_
        candidates = dict(validation_candidates(heads))
        aurocs = {name: auroc(y_val, combine_heads(per_head, hs, norm=c.score_norm, counts=self.head_counts_,
                                                   stats=self.head_stats_)) for name, hs in candidates.items()}
        return candidates[choose_on_validation(aurocs)], aurocs

    def _record_final_diagnostic(self, X_val: torch.Tensor, y_val: np.ndarray) -> dict:
        """The diagnostic of the network that is scored: held-out head accuracies after BatchNorm recalibration.

        They replace the last epoch's entries in history_ (which the report and head selection read);
        the last epoch's running-statistics values stay beside them as acc_val_*_running_bn/<head>.
        Earlier epochs keep their running-statistics values (one recalibration per epoch would
        cost a pass over the training variants each).
        """
        acc = self.validation_accuracy(X_val, y_val)
        history = getattr(self, "history_", None)
        if history:
            last = history[-1]
            for key in [k for k in last if k.startswith(("acc_val_normal/", "acc_val_anomaly/"))]:
                kind, head = key.split("/", 1)
                last[f"{kind}_running_bn/{head}"] = last.pop(key)
            last.update(acc)
            last["diagnostic"] = "after_bn_recalibration"
        return acc

    def _head_verdicts(self, X_val: torch.Tensor, y_val: np.ndarray, acc: dict | None = None) -> dict[str, str]:
        """head -> task-suitability verdict on the held-out data, with the final (recalibrated) network."""
        if acc is None:
            acc = self.validation_accuracy(X_val, y_val)
        return {h.name: head_verdict(acc.get(f"acc_val_normal/{h.name}"), acc.get(f"acc_val_anomaly/{h.name}"),
                                     h.num_classes) for h in self.plan_.heads}

    def _fit_score_model(self, X: torch.Tensor) -> None:
        """Hook for methods whose score has its own fitted parameters (GeoTrans's Dirichlet)."""

    # ---- scoring ------------------------------------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "model_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X) or load(path) first")

    def _head_scores(self, X: torch.Tensor) -> dict[str, np.ndarray]:
        return score_images(self.model_, self.plan_, X, device=self.device_, batch_size=self.config_.score_batch_size,
                            amp=self.config_.amp, reduce=head_scores)

    def score_tasks(self, X) -> dict[str, np.ndarray]:
        """Per-head scores s_i (eq. 5): head name -> (N,) float array."""
        return self._head_scores(self._check_X(X))

    def _scored_heads(self, per_head: dict[str, np.ndarray]) -> list[str]:
        """The heads averaged in the score: selected at calibration (or configured), that `per_head` has."""
        chosen = getattr(self, "selected_heads_", None) or self.config_.heads_for_score
        return [h for h in chosen if h in per_head] or list(per_head)

    def _combine(self, per_head: dict[str, np.ndarray]) -> np.ndarray:
        heads = self._scored_heads(per_head)
        return combine_heads(per_head, heads, norm=self.config_.score_norm,
                             counts=getattr(self, "head_counts_", None), stats=getattr(self, "head_stats_", None))

    def score_samples(self, X) -> np.ndarray:
        """Normality score (eq. 6): mean of the per-head scores; higher = more normal. (N,) float64."""
        return self._combine(self.score_tasks(X))

    def score_samples_and_tasks(self, X) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """score_samples and score_tasks from one pass over X."""
        per_head = self.score_tasks(X)
        return self._combine(per_head), per_head

    def decision_function(self, X) -> np.ndarray:
        """score_samples - offset_: negative = anomaly at the fitted threshold (warns if threshold_ is unreliable)."""
        return self._decision(X)

    def predict(self, X) -> np.ndarray:
        """+1 normal, -1 anomaly (decision_function >= 0 is normal)."""
        return np.where(self._decision(X) >= 0, 1, -1)

    def _decision(self, X) -> np.ndarray:
        if not hasattr(self, "offset_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet (no threshold_: init_model builds "
                                 "the network only); call fit(X) or load(path) first")
        scores = self.score_samples(X)
        why = threshold_warning(getattr(self, "threshold_source_", None), getattr(self, "n_threshold_images_", None),
                                self.config_.contamination)
        if why:
            warnings.warn(why, UserWarning, stacklevel=3)  # points at the caller of predict / decision_function
        return scores - self.offset_

    def variant_probabilities(self, X) -> dict[str, np.ndarray]:
        """head -> (V, N, m) softmax outputs for every variant (diagnostics and custom scores)."""
        X = self._check_X(X)
        self.model_.eval()
        probs = variant_probs(self.model_, self.plan_, to_model_input(X, self.device_), amp=self.config_.amp)
        return {h: p.cpu().numpy() for h, p in probs.items()}

    # ---- persistence: the file format lives in mtssad.detector_file ---------------------------
    def _extra_tensors(self) -> dict[str, torch.Tensor]:
        """Hook: tensors a subclass's score needs (saved beside the weights)."""
        return {}

    def _load_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Hook: restore what `_extra_tensors` saved."""

    def to_bytes(self) -> bytes:
        """The detector file `save` writes, as bytes: to `ray.put` for Ray actors or to write to any storage."""
        self._check_fitted()
        return detector_bytes(self, self._extra_tensors())

    def save(self, path) -> Path:
        """Write weights, config, permutations and threshold to one file, atomically."""
        return write_detector_file(path, self.to_bytes())

    @classmethod
    def load(cls, path, *, device: str | None = None):
        """Read a file written by `save` (a path), or its bytes (`to_bytes`). Code in it is never executed."""
        det, extra = load_detector(cls, path, device=device)
        det._load_extra_tensors(extra)
        return det
