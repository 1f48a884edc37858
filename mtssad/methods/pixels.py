"""Shallow baselines on raw pixels: One-Class SVM and Isolation Forest (scikit-learn).

Images are flattened and scaled to [0, 1]; an optional PCA (`pca_components`), fitted
on the training images, reduces them first. Parameter choices:

- OCSVM: RBF kernel, nu = 0.1, gamma = "scale" (1 / (D * Var(X))). The literature's
  numbers (GeoTrans paper) grid-searched nu and gamma *on the test set*, which a
  one-class protocol cannot do; we fix these common defaults instead.
- IForest: 100 trees (sklearn's and Liu et al.'s default), random_state = seed.

Same API as the neural detectors, as scikit-learn estimators (BaseEstimator +
OutlierMixin): fit(X, X_val=, y_val=), score_samples (higher = normal, sklearn's
convention), score_tasks -> {} (no heads), decision_function, predict (+1 / -1,
threshold_ at the `contamination` quantile of held-out normal scores: X_val's normals,
else a seeded `calibration_fraction` of X held out of the fit, as for the neural
detectors, mtssad.calibration), `image_shape` to take rows of C*H*W pixels.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.exceptions import NotFittedError
from sklearn.svm import OneClassSVM

from ..calibration import calibration_split, threshold_at, threshold_warning
from ..validation import check_image_shape, check_images, check_labels, unflatten_images
from . import register_method


def flatten_pixels(X: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) uint8 or [0, 1] float -> (N, C*H*W) float32 in [0, 1]."""
    x = X.flatten(1).float()
    return (x / 255.0 if X.dtype == torch.uint8 else x).numpy()


class PixelDetector(OutlierMixin, BaseEstimator):
    """A scikit-learn novelty detector on flattened pixels; subclasses say which estimator.

    Parameters (keyword-only, stored unchanged, validated at fit): pca_components (None or
    an int, PCA fitted on the training images first), contamination (anomaly fraction that
    sets threshold_), calibration_fraction (training images held out to set threshold_
    when fit gets no held-out normals; 0 = threshold on training scores, predict warns),
    seed, image_shape ((C, H, W) to accept X as rows of C*H*W pixels). Sign conventions and
    their PyOD equivalents: as `mtssad.detector.MultiTaskDetector`.
    """

    def __init__(self, *, pca_components: int | None = None, contamination: float = 0.05,
                 calibration_fraction: float = 0.2, seed: int = 0, image_shape=None):
        self.pca_components = pca_components
        self.contamination = contamination
        self.calibration_fraction = calibration_fraction
        self.seed = seed
        self.image_shape = image_shape

    def _estimator(self):
        raise TypeError(f"{type(self).__name__} must define _estimator()")

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "offset_")

    def _features(self, X: torch.Tensor) -> np.ndarray:
        f = flatten_pixels(X)
        return self.pca_.transform(f) if self.pca_ is not None else f

    def _check_X(self, X, name: str = "X", *, fitting: bool = False) -> torch.Tensor:
        shape = check_image_shape(self.image_shape)
        X = unflatten_images(X, shape, name)
        if fitting:
            return check_images(X, expected_shape=shape, name=name)
        if not hasattr(self, "estimator_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X) first")
        return check_images(X, expected_shape=self.image_shape_, name=name)

    def fit(self, X, y=None, *, X_val=None, y_val=None):
        """Fit on normal images X (y: ignored); held-out normals in X_val (y_val = 1) set the threshold if given."""
        X = self._check_X(X, fitting=True)
        if len(X) < 2:
            raise ValueError(f"fit needs at least 2 normal images; got {len(X)}")
        if not 0 < self.contamination < 0.5:
            raise ValueError(f"contamination must be in (0, 0.5); got {self.contamination}")
        if not 0 <= self.calibration_fraction < 1:
            raise ValueError(f"calibration_fraction must be in [0, 1); got {self.calibration_fraction!r}")
        normal = None
        if X_val is not None:
            X_val = check_images(unflatten_images(X_val, check_image_shape(self.image_shape), "X_val"),
                                 expected_shape=tuple(X.shape[1:]), name="X_val")
            normal = check_labels(y_val, len(X_val), name="y_val")
        X_cal = None
        if self.calibration_fraction > 0 and (normal is None or not normal.any()):
            fit_idx, cal_idx = calibration_split(len(X), self.calibration_fraction, self.seed)
            if len(cal_idx):
                X, X_cal = X[torch.from_numpy(fit_idx)], X[torch.from_numpy(cal_idx)]
        self.image_shape_ = tuple(X.shape[1:])
        self.n_features_in_ = int(np.prod(self.image_shape_))
        f = flatten_pixels(X)
        self.pca_ = None
        if self.pca_components is not None:
            limit = min(f.shape)
            if not isinstance(self.pca_components, int) or not 1 <= self.pca_components <= limit:
                held = f", {len(X_cal)} held out for calibration" if X_cal is not None else ""
                raise ValueError(f"pca_components must be an integer in [1, {limit}] (min of the {f.shape[0]} images "
                                 f"it is fitted on{held}, and {f.shape[1]} pixels) or None; "
                                 f"got {self.pca_components!r}")
            self.pca_ = PCA(n_components=self.pca_components, random_state=self.seed).fit(f)
            f = self.pca_.transform(f)
        self.estimator_ = self._estimator().fit(f)
        ref, self.threshold_source_ = self.estimator_.score_samples(f), "training"
        if X_cal is not None:
            ref, self.threshold_source_ = self.score_samples(X_cal), "calibration"
        elif normal is not None and normal.any():
            ref, self.threshold_source_ = self.score_samples(X_val[torch.from_numpy(normal)]), "X_val"
        self.n_threshold_images_ = len(ref)
        self.threshold_ = self.offset_ = threshold_at(ref, self.contamination)
        return self

    def score_samples(self, X) -> np.ndarray:
        """(N,) float64, higher = more normal."""
        X = self._check_X(X)
        return self.estimator_.score_samples(self._features(X)).astype(np.float64)

    def score_tasks(self, X) -> dict[str, np.ndarray]:
        """No self-supervised heads: always {}."""
        return {}

    def decision_function(self, X) -> np.ndarray:
        """score_samples - offset_: negative = anomaly. Warns when threshold_ is untrustworthy."""
        return self._decision(X)

    def predict(self, X) -> np.ndarray:
        """+1 normal, -1 anomaly."""
        return np.where(self._decision(X) >= 0, 1, -1)

    def _decision(self, X) -> np.ndarray:
        scores = self.score_samples(X)
        why = threshold_warning(self.threshold_source_, self.n_threshold_images_, self.contamination)
        if why:
            warnings.warn(why, UserWarning, stacklevel=3)  # points at the caller of predict / decision_function
        return scores - self.offset_


@register_method("ocsvm", neural=False, description="One-Class SVM (RBF, nu=0.1, gamma='scale') on raw pixels")
class OCSVMDetector(PixelDetector):
    def __init__(self, *, nu: float = 0.1, gamma: str | float = "scale", pca_components: int | None = None,
                 contamination: float = 0.05, calibration_fraction: float = 0.2, seed: int = 0, image_shape=None):
        super().__init__(pca_components=pca_components, contamination=contamination,
                         calibration_fraction=calibration_fraction, seed=seed, image_shape=image_shape)
        self.nu, self.gamma = nu, gamma

    def _estimator(self):
        return OneClassSVM(kernel="rbf", nu=self.nu, gamma=self.gamma)


@register_method("iforest", neural=False, description="Isolation Forest (100 trees) on raw pixels")
class IForestDetector(PixelDetector):
    def __init__(self, *, n_estimators: int = 100, pca_components: int | None = None, contamination: float = 0.05,
                 calibration_fraction: float = 0.2, seed: int = 0, image_shape=None):
        super().__init__(pca_components=pca_components, contamination=contamination,
                         calibration_fraction=calibration_fraction, seed=seed, image_shape=image_shape)
        self.n_estimators = n_estimators

    def _estimator(self):
        return IsolationForest(n_estimators=self.n_estimators, random_state=self.seed)
