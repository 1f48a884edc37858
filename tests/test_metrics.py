import numpy as np
import pytest

from mtssad.metrics import anomaly_metrics, apcer_at_bpcer, aupr, auroc, eer


def test_perfect_separation():
    is_normal = [1, 1, 1, 0, 0]
    score = [3.0, 2.0, 1.5, 0.0, -1.0]
    m = anomaly_metrics(is_normal, score)
    assert m == {"auroc": 1.0, "aupr": 1.0, "eer": 0.0, "apcer_at_5bpcer": 0.0}


def test_reversed_scores():
    is_normal = np.array([True, True, False, False])
    score = np.array([0.0, 1.0, 2.0, 3.0])
    assert auroc(is_normal, score) == 0.0
    assert eer(is_normal, score) == 1.0
    assert apcer_at_bpcer(is_normal, score) == 1.0


def test_eer_interpolates_between_roc_points():
    # normals 3, 2, 1; anomalies 2.5, 0. (BPCER, APCER) per threshold: 3 -> (2/3, 0),
    # 2.5 -> (2/3, 1/2), 2 -> (1/3, 1/2). BPCER - APCER goes 1/6 -> -1/6: the crossing is
    # halfway, BPCER = 2/3 - 1/6 = 1/2 = APCER.
    is_normal = [1, 1, 1, 0, 0]
    score = [3.0, 2.0, 1.0, 2.5, 0.0]
    assert eer(is_normal, score) == pytest.approx(0.5)
    assert auroc(is_normal, score) == pytest.approx(4 / 6)


def test_eer_exact_crossing():
    # normals 4, 3, 1; anomalies 2, 0, -1: at threshold 2, one normal of 3 rejected and one anomaly of 3 accepted.
    assert eer([1, 1, 1, 0, 0, 0], [4, 3, 1, 2, 0, -1]) == pytest.approx(1 / 3)


def test_apcer_at_bpcer_threshold_and_ties():
    # 20 normals scored 1..20: 5% BPCER -> threshold = 2nd smallest normal score = 2 (one normal rejected).
    # Anomalies 0.5, 1.5 are rejected; 2 ties with the threshold and is accepted; 25 is accepted -> 2/4.
    is_normal = np.r_[np.ones(20), np.zeros(4)]
    score = np.r_[np.arange(1, 21), [0.5, 1.5, 2.0, 25.0]]
    assert apcer_at_bpcer(is_normal, score, 0.05) == 0.5
    # bpcer = 0: threshold is the lowest normal score (1) -> anomalies 1.5, 2, 25 accepted.
    assert apcer_at_bpcer(is_normal, score, 0.0) == 0.75
    assert anomaly_metrics(is_normal, score)["apcer_at_5bpcer"] == 0.5


def test_aupr_is_out_with_anomalies_positive():
    # one anomaly ranked first (lowest score), the other below a normal: AP = (1/1 + 2/3) / 2.
    is_normal = [1, 1, 0, 0]
    score = [3.0, 1.0, 0.0, 2.0]
    assert aupr(is_normal, score) == pytest.approx((1 + 2 / 3) / 2)


@pytest.mark.parametrize(
    "is_normal, score, match",
    [
        ([1, 0, 1], [0.1, 0.2], "same length"),
        ([[1, 0]], [[0.1, 0.2]], "1-D"),
        ([1, 0], [0.1, np.nan], "finite"),
        ([1, 0], [0.1, np.inf], "finite"),
        ([1, 1], [0.1, 0.2], "both normal and anomalous"),
        ([0, 0], [0.1, 0.2], "both normal and anomalous"),
        ([1, 2], [0.1, 0.2], "0/1"),
        ([1, 0], ["a", "b"], "real-valued"),
    ],
)
def test_invalid_inputs(is_normal, score, match):
    with pytest.raises(ValueError, match=match):
        anomaly_metrics(is_normal, score)


def test_bad_bpcer():
    with pytest.raises(ValueError, match="bpcer"):
        apcer_at_bpcer([1, 0], [1.0, 0.0], bpcer=1.5)
