"""Evaluation protocols: one-vs-all and out-of-distribution, one run -> one result row.

The split a method is fitted on and the split it is scored on never overlap:
fitting uses the normal class's TRAINING images (minus a held-out part), the
validation set is carved from the training split only (held-out normals plus
other classes' training images), and the test split is only ever scored.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field

import numpy as np

from .data import DataError, ImageDataset, validation_split
from .methods import METHODS, make_method, trains_jigsaw
from .config import DetectorConfig, expand_tasks
from .metrics import anomaly_metrics, auroc


@dataclass
class RunOutput:
    """What one (dataset, normal class, method, config) run produces."""

    row: dict  # one results.parquet row
    scores: dict[str, np.ndarray]  # per test image: label, is_normal, score, score_<head>
    history: list[dict] = field(default_factory=list)  # per-epoch diagnostic of neural methods


def score_with_heads(det, X) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(normality score, per-head scores) with one pass over X where the method supports it."""
    if hasattr(det, "score_samples_and_tasks"):
        return det.score_samples_and_tasks(X)
    return det.score_samples(X), {}


# The protocols rank by AUROC and never use predict()'s threshold: fit on every training normal,
# as the paper does, instead of holding some out to calibrate the threshold (mtssad.calibration).
PROTOCOL_PARAMS = {"calibration_fraction": 0.0}


def method_config(method: str, det) -> dict:
    """The full configuration of a fitted method, as stored in the results' `config` column."""
    params = det.get_params() if hasattr(det, "get_params") else {}
    params = {k: PROTOCOL_PARAMS.get(k, v) for k, v in params.items()  # what evaluate_method fits with
              if k not in ("progress", "device", "score_batch_size", "channels_last", "image_shape")}
    for key in ("tasks", "score_heads"):  # one spelling per set of heads: ("geometric", "jigsaw") = all four
        if params.get(key) is not None:
            params[key] = expand_tasks(params[key])
    return {"method": method, **params}


def score_fitted(det, X_test, is_normal_test, *, X_val=None, y_val=None, labels_test=None) -> tuple[dict, dict]:
    """Metrics (+ per-head and validation AUROCs) and per-image scores of a fitted detector."""
    t0 = time.perf_counter()
    score, heads = score_with_heads(det, X_test)
    row, scores = metrics_of_scores(det, score, heads, is_normal_test, labels_test=labels_test,
                                    score_seconds=time.perf_counter() - t0)
    if X_val is not None and y_val is not None and 0 < np.sum(y_val) < len(y_val):
        row["val_auroc"] = auroc(y_val, score_with_heads(det, X_val)[0])
    return row, scores


def metrics_of_scores(det, score, heads: dict, is_normal_test, *, labels_test=None, score_seconds: float = 0.0
                 ) -> tuple[dict, dict]:
    """Metrics and per-image score columns from test scores already computed (here or on a DDP rank 0).

    score: (N,) normality scores of the test images; heads: head -> (N,) per-head scores.
    """
    row = anomaly_metrics(is_normal_test, score)
    row.update(score_seconds=score_seconds, n_test=len(score))
    for h, s in heads.items():
        row[f"auroc_head_{h}"] = auroc(is_normal_test, s)
    if getattr(det, "head_verdicts_", None) or getattr(det, "head_selection_auroc_", None):
        row["selected_heads"] = ",".join(det.selected_heads_)  # head_selection: which heads the score used
    for name, a in (getattr(det, "head_selection_auroc_", None) or {}).items():  # "validation": what it rested on
        row[f"val_auroc_heads_{name}"] = a
    scores = {"index": np.arange(len(score)), "is_normal": np.asarray(is_normal_test, bool), "score": score}
    if labels_test is not None:
        scores["label"] = np.asarray(labels_test)
    scores.update({f"score_{h}": s for h, s in heads.items()})
    return row, scores


def evaluate_method(method: str, params: dict, *, X_fit, X_test, is_normal_test, X_val=None, y_val=None,
                    labels_test=None) -> tuple[dict, dict, object]:
    """Fit `method` on X_fit, score X_test (and X_val): metrics dict, per-image scores, fitted detector."""
    det = make_method(method, **{**params, **PROTOCOL_PARAMS})
    t0 = time.perf_counter()
    det.fit(X_fit, X_val=X_val, y_val=y_val)
    train_s = time.perf_counter() - t0
    row, scores = score_fitted(det, X_test, is_normal_test, X_val=X_val, y_val=y_val, labels_test=labels_test)
    row.update(train_seconds=train_s, n_train=len(X_fit), **training_record(det))
    return row, scores, det


def training_record(det) -> dict:
    """Optimizer steps a neural fit trained and the step of the weights it kept (early stopping); {} otherwise.

    Absent rather than None for the pixel baselines: a results column first written all-null is typed float.
    """
    if getattr(det, "steps_trained_", None) is None:
        return {}
    return {"steps_trained": int(det.steps_trained_), "best_step": int(det.best_step_)}


def data_identity(ds: ImageDataset, **extra) -> dict:
    """The data selection behind a row (load_dataset's arguments + extra, e.g. val_fraction): part of its key.

    A data set built by hand (no load_dataset arguments) is identified by a hash of its arrays instead.
    """
    sel = dict(ds.selection)
    if not sel:
        h = hashlib.sha1()
        for a in (ds.train_images, ds.train_labels, ds.test_images, ds.test_labels):
            h.update(str(a.shape).encode())
            h.update(memoryview(a.tobytes()))
        sel = {"dataset": ds.name, "content_sha1": h.hexdigest()}
    return {**sel, **extra}


def describe_config(method: str, params: dict, det) -> dict:
    """Row identity columns (grid, k, config) for a method and its parameters (unset grid/k: DetectorConfig's)."""
    cfg = method_config(method, det)
    jig = trains_jigsaw(method, params)
    grid = params.get("grid", DetectorConfig.grid)
    return {
        "method": method,
        "grid": f"{grid[0]}x{grid[1]}" if jig else None,
        "k": int(params.get("k", DetectorConfig.k)) if jig else None,
        "config": json.dumps(cfg, sort_keys=True, default=list),
    }


def result_row(method: str, params: dict, det, *, dataset: str, normal_class: str, seed: int, split: str, data,
               metrics: dict | None = None, **columns) -> dict:
    """One results.parquet row, as every protocol writes it (one-vs-all, OOD, a sweep's config, the OOD job).

    metrics first (anomaly_metrics, per-head AUROCs, timings), then the row's identity -- method, grid, k,
    config (describe_config), dataset, normal_class, seed, split and data (the data selection) -- then the
    protocol's own `columns`, in the order given.
    """
    row = dict(metrics or {})
    row.update(describe_config(method, params, det), dataset=dataset, normal_class=normal_class, seed=seed,
               split=split, data=data)
    row.update(columns)
    return row


@dataclass
class OneVsAllData:
    """The images of one one-vs-all run: fit on X_fit, validate on X_val/y_val, score the whole test split."""

    X_fit: np.ndarray  # (n_fit, C, H, W) the normal class's training images minus the held-out part
    X_val: np.ndarray | None  # held-out normals + other classes' TRAINING images (None when val_fraction = 0)
    y_val: np.ndarray | None  # (n_val,) 1 = normal
    X_test: np.ndarray  # the whole test split
    is_normal_test: np.ndarray  # (n_test,) bool


def check_class_size(ds: ImageDataset, normal_class: int, *, val_fraction: float,
                     validation_optional: bool = True) -> None:
    """Enough training images of the normal class for a fit (>= 2, BatchNorm) plus >= 1 held out for validation.

    The message names the CLI flags that change the count (users meet it as `mtssad evaluate/sweep`).
    """
    n = int(np.sum(ds.train_labels == normal_class))
    need = 3 if val_fraction > 0 else 2
    if n >= need:
        return
    name = ds.class_names[normal_class]
    if n == 0:
        raise DataError(f"{ds.name}: normal class {name!r} has no training images; raise --max-train "
                        "(a stratified subset of the whole training split) or choose other --classes")
    why = ("2 to fit (BatchNorm needs 2) + 1 held out by --val-fraction" if val_fraction > 0 else
           "2 to fit (BatchNorm needs 2)")
    fix = "raise --max-train"
    if val_fraction > 0 and validation_optional:  # a sweep selects on validation data: it cannot drop it
        fix += " or pass --val-fraction 0 (no validation split)"
    raise DataError(f"{ds.name}: normal class {name!r} has {n} training image(s); one-vs-all needs {need} "
                    f"({why}): {fix}, or choose other --classes")


def one_vs_all_data(ds: ImageDataset, normal_class: int, *, seed: int = 0, val_fraction: float = 0.2) -> OneVsAllData:
    """Split `ds` for one normal class; the test split's anomalies never reach fitting or validation."""
    labels = ds.train_labels
    check_class_size(ds, normal_class, val_fraction=val_fraction)
    if val_fraction > 0:
        fit_idx, val_idx = validation_split(labels, normal_class, fraction=val_fraction, seed=seed)
        X_val, y_val = ds.train_images[val_idx], (labels[val_idx] == normal_class).astype(int)
    else:
        fit_idx, X_val, y_val = np.flatnonzero(labels == normal_class), None, None
    is_normal = ds.test_labels == normal_class
    if is_normal.all() or not is_normal.any():
        raise DataError(f"{ds.name}: the test split needs both class {ds.class_names[normal_class]!r} and others; "
                        "raise --max-test or choose other --classes")
    return OneVsAllData(ds.train_images[fit_idx], X_val, y_val, ds.test_images, is_normal)


def one_vs_all(ds: ImageDataset, normal_class: int, method: str, params: dict, *, seed: int = 0,
               val_fraction: float = 0.2) -> RunOutput:
    """Train on one class's training images, score the whole test split (normal = that class)."""
    d = one_vs_all_data(ds, normal_class, seed=seed, val_fraction=val_fraction)
    row, scores, det = evaluate_method(
        method, {**params, "seed": seed}, X_fit=d.X_fit, X_test=d.X_test,
        is_normal_test=d.is_normal_test, X_val=d.X_val, y_val=d.y_val, labels_test=ds.test_labels,
    )
    row = result_row(method, params, det, metrics=row, dataset=ds.name, normal_class=ds.class_names[normal_class],
                     seed=seed, split="test", data=data_identity(ds, val_fraction=val_fraction))
    return RunOutput(row, scores, list(getattr(det, "history_", [])))


def ood_data_identity(ds_in: ImageDataset, ds_out: ImageDataset) -> dict:
    """The data selection of an OOD row: both data sets'."""
    return {"in": data_identity(ds_in), "out": data_identity(ds_out)}


def out_of_distribution(ds_in: ImageDataset, ds_out: ImageDataset, method: str, params: dict, *,
                        seed: int = 0) -> RunOutput:
    """Train on all of `ds_in`'s training images; score its test set (normal) against `ds_out`'s (anomalies)."""
    if ds_in.test_images.shape[1:] != ds_out.test_images.shape[1:]:
        raise ValueError(
            f"OOD images must match: {ds_in.name} is {ds_in.test_images.shape[1:]} (C, H, W), "
            f"{ds_out.name} is {ds_out.test_images.shape[1:]}; load both with the same --side and --channels"
        )
    X_test = np.concatenate([ds_in.test_images, ds_out.test_images])
    is_normal = np.r_[np.ones(len(ds_in.test_images), bool), np.zeros(len(ds_out.test_images), bool)]
    row, scores, det = evaluate_method(method, {**params, "seed": seed}, X_fit=ds_in.train_images,
                                       X_test=X_test, is_normal_test=is_normal)
    row = result_row(method, params, det, metrics=row, dataset=f"{ds_in.name}-vs-{ds_out.name}",
                     normal_class="all", seed=seed, split="ood", data=ood_data_identity(ds_in, ds_out))
    return RunOutput(row, scores, list(getattr(det, "history_", [])))
