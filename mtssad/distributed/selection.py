"""Model selection of a sweep: the validation set configs are compared on, and the choice per class.

Selection never sees the test split. The validation set is carved from the TRAINING split
(`mtssad.protocols.one_vs_all_data`): the normal class's held-out images, and anomalies from
the other classes' training images. `one_vs_all_data` gives as many anomalies as held-out
normals (6 + 6 = 12 images for a ~30-image CUB class), too few to rank 9 configs. Other
classes' training images are plentiful, so the selection set takes

    anomalies = min(VAL_ANOMALY_RATIO x held-out normals, VAL_MAX_ANOMALIES, all other-class images)

drawn seeded and stratified over the other classes (CUB: 6 normals + 30 anomalies; digits:
25 + 125). The per-epoch task diagnostic, head selection and calibration keep
`one_vs_all_data`'s own validation split, as `mtssad evaluate` does, so their cost and
their results do not change with the selection set.
"""

from __future__ import annotations

import numpy as np

from ..diagnostic import AUROC_TIE as TIE  # one tie rule for configs and head sets

VAL_ANOMALY_RATIO = 5  # anomalies per held-out normal in the selection set: AUROC's error shrinks with both sides
VAL_MAX_ANOMALIES = 1000  # bounds the scoring cost per config on large data sets (CIFAR: 1000 held-out normals)


def selection_set(train_images: np.ndarray, train_labels: np.ndarray, normal_class: int, X_val: np.ndarray,
                  y_val: np.ndarray, *, seed: int = 0, ratio: float = VAL_ANOMALY_RATIO,
                  max_anomalies: int = VAL_MAX_ANOMALIES) -> tuple[np.ndarray, np.ndarray]:
    """(X_sel, y_sel): the held-out normals of (X_val, y_val) + more anomalies from other classes' training images.

    train_images: (N, C, H, W) the TRAINING split; y_val: 1 = normal. Returns images (M, C, H, W)
    and labels (M,) with 1 = normal, normals first.
    """
    from ..data import stratified_subset

    y_val = np.asarray(y_val).astype(bool)
    normals = X_val[y_val]  # (n_held, C, H, W)
    if len(normals) == 0:
        raise ValueError("selection_set: the validation split has no held-out normal image; use val_fraction > 0")
    labels = np.asarray(train_labels)
    others = np.flatnonzero(labels != normal_class)
    n = int(min(round(ratio * len(normals)), max_anomalies, len(others)))
    if n < 1:
        raise ValueError(f"selection_set: no anomaly to validate on (ratio={ratio}, max_anomalies={max_anomalies}, "
                         f"{len(others)} other-class training images)")
    idx = others[stratified_subset(labels[others], n, seed)]
    X_sel = np.concatenate([normals, train_images[idx]])  # (n_held + n, C, H, W)
    y_sel = np.r_[np.ones(len(normals), int), np.zeros(n, int)]
    return X_sel, y_sel




def select_by_validation(rows: list[dict], by=("dataset", "normal_class", "method")) -> list[dict]:
    """Set `selected` on each row: True for the best val_auroc in its group (first wins ties; NaN never)."""
    best: dict[tuple, int] = {}
    for i, r in enumerate(rows):
        key = tuple(r.get(b) for b in by)
        if is_better(r.get("val_auroc", float("nan")), rows[best[key]]["val_auroc"] if key in best else None):
            best[key] = i
    chosen = set(best.values())
    return [{**r, "selected": i in chosen} for i, r in enumerate(rows)]


def is_better(val_auroc: float, best: float | None) -> bool:
    """The rule of `select_by_validation` and the class trials: better by more than TIE (first wins ties), NaN never."""
    return val_auroc == val_auroc and (best is None or val_auroc > best + TIE)
