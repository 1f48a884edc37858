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


def mark_jigsaw_kept(rows: list[dict]) -> list[dict]:
    """Set `jigsaw_kept` on the selected rows of class trials that searched the task set (`task_search`):
    True when the chosen config trained the jigsaw head, False when its geometric heads alone won. Other rows
    get no such key (a column first written all-null would be typed float64 in results.parquet)."""
    out = []
    for r in rows:
        r = {k: v for k, v in r.items() if k != "jigsaw_kept"}
        if r.get("selected") and r.get("task_search"):
            r["jigsaw_kept"] = "jigsaw" in str(r.get("heads") or "").split(",")
        out.append(r)
    return out


def tasks_chosen_on_validation(frame, *, label: str = "ours[tasks]"):
    """The row "ours, tasks chosen on validation": per (dataset, class, seed, data selection), the candidate with
    the best val_auroc among `ours` with its jigsaw head and ours without it. Test AUROC is never read.

    frame: a DataFrame of result rows with val_auroc. Candidates with the jigsaw head: method "ours" whose heads
    include jigsaw (rows without a `heads` column: all of ours); without it: method "geometric" (`mtssad evaluate`
    rows) or ours rows whose heads lack jigsaw (the sweep's task search). Ties go to the jigsaw candidate
    listed first (the paper's method). Groups without both kinds are skipped. The returned rows are copies of the
    chosen candidate with method=`label`, `chosen` ("ours" or "geometric"), `jigsaw_kept`, the margin
    `val_auroc_jigsaw_minus_geometric`, and train/score seconds summed over the candidates (choosing needs all).
    """
    import pandas as pd

    if "val_auroc" not in frame:
        raise ValueError("tasks_chosen_on_validation: the rows have no val_auroc column (validation AUROC)")
    df = frame.copy()
    heads = df["heads"] if "heads" in df else pd.Series(None, index=df.index, dtype=object)
    has_jig = heads.map(lambda h: h is None or (isinstance(h, float) and h != h) or "jigsaw" in str(h).split(","))
    kind = pd.Series(None, index=df.index, dtype=object)
    kind[(df["method"] == "ours") & has_jig] = "ours"
    kind[(df["method"] == "geometric") | ((df["method"] == "ours") & ~has_jig)] = "geometric"
    df = df.assign(_kind=kind)[kind.notna()]
    keys = [k for k in ("dataset", "normal_class", "seed", "data") if k in df]
    out = []
    for _, g in df.groupby(keys, dropna=False, sort=False):
        if set(g["_kind"]) != {"ours", "geometric"}:
            continue
        g = g.sort_values("_kind", key=lambda k: k.map({"ours": 0, "geometric": 1}), kind="stable")
        best_i, best = None, None
        for i, v in zip(g.index, g["val_auroc"]):
            if is_better(v, best):
                best_i, best = i, v
        if best_i is None:  # every candidate's val_auroc NaN: no choice
            continue
        row = g.loc[best_i].drop("_kind").to_dict()
        top = {k: g.loc[g["_kind"] == k, "val_auroc"].max() for k in ("ours", "geometric")}
        row.update(method=label, chosen=g.at[best_i, "_kind"], jigsaw_kept=g.at[best_i, "_kind"] == "ours",
                   val_auroc_jigsaw_minus_geometric=float(top["ours"] - top["geometric"]))
        for col in ("train_seconds", "score_seconds"):
            if col in g:
                row[col] = float(g[col].sum())
        out.append(row)
    return pd.DataFrame(out)
