"""Shallow baselines on raw pixels: One-Class SVM and Isolation Forest (scikit-learn).

Images are flattened and scaled to [0, 1]; an optional PCA (`pca_components`), fitted
on the training images, reduces them first. Parameter choices:

- OCSVM: RBF kernel, nu = 0.1, gamma = "scale" (1 / (D * Var(X))). The literature's
  numbers (GeoTrans paper) grid-searched nu and gamma *on the test set*, which a
  one-class protocol cannot do; we fix these common defaults instead.
- IForest: 100 trees (sklearn's and Liu et al.'s default), random_state = seed.

Same API as the neural detectors: fit(X, X_val=, y_val=), score_samples (higher =
normal, sklearn's convention), score_tasks -> {} (no heads), decision_function,
predict (+1 / -1, threshold_ at the `contamination` quantile of normal scores).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.svm import OneClassSVM

from ..validation import check_images, check_labels
from . import register_method


def flatten_pixels(X: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) uint8 or [0, 1] float -> (N, C*H*W) float32 in [0, 1]."""
    x = X.flatten(1).float()
    return (x / 255.0 if X.dtype == torch.uint8 else x).numpy()


class PixelDetector:
    """A scikit-learn novelty detector on flattened pixels; subclasses say which estimator."""

    def __init__(self, *, pca_components: int | None = None, contamination: float = 0.05, seed: int = 0):
        self.pca_components = pca_components
        self.contamination = contamination
        self.seed = seed

    def _estimator(self):
        raise TypeError(f"{type(self).__name__} must define _estimator()")

    def get_params(self, deep: bool = True) -> dict:
        return {"pca_components": self.pca_components, "contamination": self.contamination, "seed": self.seed}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    def _features(self, X: torch.Tensor) -> np.ndarray:
        f = flatten_pixels(X)
        return self.pca_.transform(f) if self.pca_ is not None else f

    def fit(self, X, y=None, *, X_val=None, y_val=None):
        """Fit on normal images X; held-out normals in X_val (y_val = 1) set the threshold if given."""
        X = check_images(X)
        if len(X) < 2:
            raise ValueError(f"fit needs at least 2 normal images; got {len(X)}")
        if not 0 < self.contamination < 0.5:
            raise ValueError(f"contamination must be in (0, 0.5); got {self.contamination}")
        self.image_shape_ = tuple(X.shape[1:])
        f = flatten_pixels(X)
        self.n_features_in_ = f.shape[1]
        self.pca_ = None
        if self.pca_components is not None:
            limit = min(f.shape)
            if not isinstance(self.pca_components, int) or not 1 <= self.pca_components <= limit:
                raise ValueError(f"pca_components must be an integer in [1, {limit}] (min of images, pixels) "
                                 f"or None; got {self.pca_components!r}")
            self.pca_ = PCA(n_components=self.pca_components, random_state=self.seed).fit(f)
            f = self.pca_.transform(f)
        self.estimator_ = self._estimator().fit(f)
        ref = self.estimator_.score_samples(f)
        if X_val is not None:
            X_val = check_images(X_val, expected_shape=self.image_shape_, name="X_val")
            normal = check_labels(y_val, len(X_val), name="y_val")
            if normal.any():
                ref = self.score_samples(X_val[torch.from_numpy(normal)])
        self.threshold_ = self.offset_ = float(np.quantile(ref, self.contamination))
        return self

    def score_samples(self, X) -> np.ndarray:
        """(N,) float64, higher = more normal."""
        if not hasattr(self, "estimator_"):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet; call fit(X) first")
        X = check_images(X, expected_shape=self.image_shape_)
        return self.estimator_.score_samples(self._features(X)).astype(np.float64)

    def score_tasks(self, X) -> dict[str, np.ndarray]:
        """No self-supervised heads: always {}."""
        return {}

    def decision_function(self, X) -> np.ndarray:
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        """+1 normal, -1 anomaly."""
        return np.where(self.decision_function(X) >= 0, 1, -1)


@register_method("ocsvm", neural=False, description="One-Class SVM (RBF, nu=0.1, gamma='scale') on raw pixels")
class OCSVMDetector(PixelDetector):
    def __init__(self, *, nu: float = 0.1, gamma: str | float = "scale", pca_components: int | None = None,
                 contamination: float = 0.05, seed: int = 0):
        super().__init__(pca_components=pca_components, contamination=contamination, seed=seed)
        self.nu, self.gamma = nu, gamma

    def get_params(self, deep: bool = True) -> dict:
        return {**super().get_params(deep), "nu": self.nu, "gamma": self.gamma}

    def _estimator(self):
        return OneClassSVM(kernel="rbf", nu=self.nu, gamma=self.gamma)


@register_method("iforest", neural=False, description="Isolation Forest (100 trees) on raw pixels")
class IForestDetector(PixelDetector):
    def __init__(self, *, n_estimators: int = 100, pca_components: int | None = None, contamination: float = 0.05,
                 seed: int = 0):
        super().__init__(pca_components=pca_components, contamination=contamination, seed=seed)
        self.n_estimators = n_estimators

    def get_params(self, deep: bool = True) -> dict:
        return {**super().get_params(deep), "n_estimators": self.n_estimators}

    def _estimator(self):
        return IsolationForest(n_estimators=self.n_estimators, random_state=self.seed)
