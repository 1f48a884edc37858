"""Threshold-free and presentation-attack metrics for anomaly scores.

Convention everywhere: `is_normal` is a boolean / 0-1 array (1 = normal, the
bona fide class) and `score` a float array, higher = more normal (sklearn's
`score_samples` convention). Every function validates its inputs once and
raises ValueError saying what it got and what it expected.

Terms follow ISO/IEC 30107-3 (presentation attack detection), which the paper
uses for SiW-M (Table 5):
- BPCER: fraction of normal (bona fide) samples rejected (score < threshold);
- APCER: fraction of anomalies (attacks) accepted (score >= threshold);
- EER: the error rate where BPCER == APCER.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

__all__ = ["anomaly_metrics", "apcer_at_bpcer", "aupr", "auroc", "eer"]


def _check(is_normal, score) -> tuple[np.ndarray, np.ndarray]:
    """Validate the public inputs; return (bool labels, float64 scores)."""
    y = np.asarray(is_normal)
    s = np.asarray(score)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"expected 1-D is_normal and score; got shapes {y.shape} and {s.shape}")
    if len(y) != len(s):
        raise ValueError(f"expected is_normal and score of the same length; got {len(y)} and {len(s)}")
    if y.dtype != bool:
        if not np.issubdtype(y.dtype, np.number) or not np.isin(y, (0, 1)).all():
            raise ValueError(f"expected is_normal as booleans or 0/1; got values {np.unique(y)[:5].tolist()}")
        y = y.astype(bool)
    if not np.issubdtype(s.dtype, np.number) or np.issubdtype(s.dtype, np.complexfloating):
        raise ValueError(f"expected real-valued scores; got dtype {s.dtype}")
    s = s.astype(np.float64)
    if not np.isfinite(s).all():
        bad = int(np.flatnonzero(~np.isfinite(s))[0])
        raise ValueError(f"expected finite scores; got {s[bad]} at index {bad} "
                         f"({int((~np.isfinite(s)).sum())} non-finite of {len(s)})")
    n_norm = int(y.sum())
    if n_norm == 0 or n_norm == len(y):
        raise ValueError(f"expected both normal and anomalous samples; got {n_norm} normal "
                         f"and {len(y) - n_norm} anomalous")
    return y, s


def auroc(is_normal, score) -> float:
    """Area under the ROC curve with normal as the positive class (0.5 = chance, 1 = perfect)."""
    y, s = _check(is_normal, score)
    return float(roc_auc_score(y, s))


def aupr(is_normal, score) -> float:
    """AUPR-out: average precision with ANOMALIES as the positive class, ranked by -score.

    This is the variant that is informative when anomalies are the minority the
    user hunts for (the one-vs-all test sets have ~90% anomalies, so AUPR-in
    would sit near 1 for any ranking). Average precision (step interpolation,
    sklearn's `average_precision_score`), not the trapezoidal area.
    """
    y, s = _check(is_normal, score)
    return float(average_precision_score(~y, -s))


def eer(is_normal, score) -> float:
    """Equal error rate: where the rejection rate of normals equals the acceptance rate of anomalies.

    From sklearn's ROC (normal positive): BPCER = 1 - TPR, APCER = FPR. The ROC
    has a point per distinct threshold; between the two points where
    BPCER - APCER changes sign, both are interpolated linearly and the crossing
    is returned (the mean of the two rates there, which are equal up to rounding).
    """
    y, s = _check(is_normal, score)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    bpcer, apcer = 1.0 - tpr, fpr  # bpcer falls from 1 to 0, apcer rises from 0 to 1
    diff = bpcer - apcer  # non-increasing, from 1 to -1
    i = int(np.flatnonzero(diff <= 0)[0])  # first point where rejecting normals no longer dominates
    if diff[i] == 0 or i == 0:
        return float((bpcer[i] + apcer[i]) / 2)
    t = diff[i - 1] / (diff[i - 1] - diff[i])  # in (0, 1]: where the segment crosses zero
    b = bpcer[i - 1] + t * (bpcer[i] - bpcer[i - 1])
    a = apcer[i - 1] + t * (apcer[i] - apcer[i - 1])
    return float((a + b) / 2)


def apcer_at_bpcer(is_normal, score, bpcer: float = 0.05) -> float:
    """APCER at a fixed BPCER: fraction of anomalies accepted when `bpcer` of normals are rejected.

    The threshold is the lower `bpcer` quantile of the normal scores taken as an
    order statistic, the floor(bpcer * n_normal)-th smallest (0-based): exactly
    floor(bpcer * n_normal) normals lie strictly below it when scores are
    distinct, so at most `bpcer` of normals are rejected. A sample is accepted
    when score >= threshold. Ties: anomalies that tie with the threshold are
    ACCEPTED (counted in APCER, the pessimistic side for the detector), and
    normals that tie with it are accepted too, so ties can only lower the
    realised BPCER below the target, never raise it.
    """
    if isinstance(bpcer, bool) or not isinstance(bpcer, (int, float)) or not 0 <= bpcer < 1:
        raise ValueError(f"expected 0 <= bpcer < 1; got {bpcer!r}")
    y, s = _check(is_normal, score)
    normal = np.sort(s[y])
    threshold = normal[int(np.floor(bpcer * len(normal) + 1e-9))]  # 1e-9: 0.05 * 20 must be 1, not 0.999..
    return float(np.mean(s[~y] >= threshold))


def anomaly_metrics(is_normal, score) -> dict[str, float]:
    """All four metrics as fractions in [0, 1]: auroc, aupr (AUPR-out), eer, apcer_at_5bpcer."""
    y, s = _check(is_normal, score)
    return {
        "auroc": auroc(y, s),
        "aupr": aupr(y, s),
        "eer": eer(y, s),
        "apcer_at_5bpcer": apcer_at_bpcer(y, s, 0.05),
    }
