"""Head selection by the task-suitability diagnostic (METHOD.md: an option beyond the paper)."""

import numpy as np
import pytest
from conftest import TINY

from mtssad import MultiTaskDetector
from mtssad.diagnostic import head_verdict, select_heads


@pytest.mark.parametrize("normal, anomaly, n, verdict", [
    (0.36, 0.30, 3, "too hard"),  # within 0.05 of chance 1/3
    (0.30, None, 4, "too hard"),  # label-free: only held-out normals needed for "too hard"
    (0.99, 0.985, 4, "too easy"),
    (0.99, 0.60, 4, "suited"),
    (0.70, None, 4, "unknown (no anomalous held-out data)"),
    (None, None, 4, "unknown (no held-out accuracy)"),
])
def test_head_verdict(normal, anomaly, n, verdict):
    assert head_verdict(normal, anomaly, n) == verdict


def test_select_heads_keeps_order_and_never_returns_nothing():
    v = {"vertical": "suited", "rotation": "too hard", "jigsaw": "unknown (no anomalous held-out data)",
         "horizontal": "too easy"}
    assert select_heads(v) == ("vertical", "jigsaw")
    assert select_heads({"a": "too hard", "b": "too easy"}) == ("a", "b")


def _val(tiny_data):
    X_val = np.concatenate([tiny_data["test_normal"], tiny_data["test_anomaly"]])
    return X_val, np.r_[np.ones(12), np.zeros(12)].astype(int)


def test_diagnostic_selection_drops_unsuited_heads_from_the_score(tiny_data, tmp_path, monkeypatch):
    def accuracies(self, X_val, y_val):  # rotation at chance on normals, jigsaw perfect on everything
        acc = {"vertical": (0.9, 0.5), "horizontal": (0.8, 0.6), "rotation": (0.26, 0.25), "jigsaw": (1.0, 1.0)}
        out = {}
        for h in self.plan_.heads:
            out[f"num_classes/{h.name}"] = h.num_classes
            out[f"acc_val_normal/{h.name}"], out[f"acc_val_anomaly/{h.name}"] = acc[h.name]
        return out

    monkeypatch.setattr(MultiTaskDetector, "validation_accuracy", accuracies)
    X_val, y_val = _val(tiny_data)
    det = MultiTaskDetector(**TINY, head_selection="diagnostic").fit(tiny_data["train"], X_val=X_val, y_val=y_val)
    assert det.head_verdicts_ == {"vertical": "suited", "horizontal": "suited", "rotation": "too hard",
                                  "jigsaw": "too easy"}
    assert det.selected_heads_ == ("vertical", "horizontal")
    X = tiny_data["test_anomaly"]
    per_head = det.score_tasks(X)
    np.testing.assert_allclose(det.score_samples(X), (per_head["vertical"] + per_head["horizontal"]) / 2, rtol=1e-6)
    assert not np.allclose(det.score_samples(X), np.mean(list(per_head.values()), axis=0))
    # the choice travels with the saved detector
    loaded = MultiTaskDetector.load(det.save(tmp_path / "d.pt"))
    assert loaded.selected_heads_ == ("vertical", "horizontal") and loaded.head_verdicts_ == det.head_verdicts_
    np.testing.assert_allclose(loaded.score_samples(X), det.score_samples(X), rtol=1e-6)


def test_diagnostic_selection_on_a_real_fit_is_consistent(tiny_data):
    X_val, y_val = _val(tiny_data)
    det = MultiTaskDetector(**TINY, head_selection="diagnostic").fit(tiny_data["train"], X_val=X_val, y_val=y_val)
    assert set(det.head_verdicts_) == {"vertical", "horizontal", "rotation", "jigsaw"}
    assert det.selected_heads_ == select_heads(det.head_verdicts_)
    plain = MultiTaskDetector(**TINY).fit(tiny_data["train"], X_val=X_val, y_val=y_val)
    assert plain.selected_heads_ == ("vertical", "horizontal", "rotation", "jigsaw") and plain.head_verdicts_ == {}


def test_diagnostic_selection_needs_held_out_normals(tiny_data):
    det = MultiTaskDetector(**TINY, head_selection="diagnostic")
    with pytest.raises(ValueError, match="needs held-out normal images"):
        det.fit(tiny_data["train"])
    assert not hasattr(det, "model_")  # refused before any training
    X_val = tiny_data["test_anomaly"]
    with pytest.raises(ValueError, match="at least one normal image"):
        det.fit(tiny_data["train"], X_val=X_val, y_val=np.zeros(len(X_val), int))


def test_head_selection_config_errors():
    X = np.zeros((4, 1, 16, 16), np.uint8)
    with pytest.raises(ValueError, match="head_selection must be one of"):
        MultiTaskDetector(**TINY, head_selection="best").fit(X)  # scikit-learn convention: validated at fit
    with pytest.raises(ValueError, match="not both"):
        MultiTaskDetector(**TINY, score_heads=("rotation",), head_selection="diagnostic").config


def test_ray_training_refuses_diagnostic_selection_before_starting(tiny_data, tmp_path):
    pytest.importorskip("ray")
    from mtssad.distributed import train_detector_ddp

    with pytest.raises(ValueError, match="needs held-out normal images"):  # raised before any Ray call
        train_detector_ddp(tiny_data["train"], {**TINY, "head_selection": "diagnostic"},
                           storage_path=str(tmp_path), name="never-started")
    assert not (tmp_path / "never-started").exists()


# ---- head_selection="validation": all heads or the geometric ones, by validation AUROC ----

def _fake_head_scores(jigsaw_helps: bool):
    """Per-head scores that make the choice known: geometric heads track normality (the bright bar) with
    noise; the jigsaw head is perfect (jigsaw_helps) or reversed (noise that hurts the mean)."""
    def head_scores(self, X):
        x = X.numpy() if hasattr(X, "numpy") else np.asarray(X)
        normal = _bar(x)  # 1 = has the normal bar
        rng = np.random.default_rng(len(x))
        out = {h: normal + rng.normal(0, 0.8, len(x)) for h in ("vertical", "horizontal", "rotation")}
        out["jigsaw"] = 3 * normal if jigsaw_helps else -3 * normal
        return out
    return head_scores


def _bar(x):
    """1 for images with make_images' bright horizontal bar (a row of >= 10 pixels at 220), else 0."""
    rows = (x[:, 0] == 220).sum(axis=2)  # (N, H)
    return (rows.max(axis=1) >= 10).astype(float)


@pytest.mark.parametrize("jigsaw_helps, chosen", [(False, ("vertical", "horizontal", "rotation")),
                                                  (True, ("vertical", "horizontal", "rotation", "jigsaw"))])
def test_validation_selection_keeps_the_head_set_with_the_best_validation_auroc(tiny_data, monkeypatch, tmp_path,
                                                                                jigsaw_helps, chosen):
    from mtssad.metrics import auroc

    monkeypatch.setattr(MultiTaskDetector, "_head_scores", _fake_head_scores(jigsaw_helps))
    X_val, y_val = _val(tiny_data)
    det = MultiTaskDetector(**TINY, head_selection="validation").fit(tiny_data["train"], X_val=X_val, y_val=y_val)
    assert det.selected_heads_ == chosen
    a = det.head_selection_auroc_
    assert set(a) == {"all", "geometric"}
    assert (a["geometric"] > a["all"]) == (not jigsaw_helps)
    per_head = det.score_tasks(X_val)  # the dropped head is still scored and reported
    assert set(per_head) == {"vertical", "horizontal", "rotation", "jigsaw"}
    assert a["geometric"] == pytest.approx(auroc(y_val, np.mean([per_head[h] for h in chosen[:3]], axis=0)))
    np.testing.assert_allclose(det.score_samples(X_val), np.mean([per_head[h] for h in chosen], axis=0))
    loaded = MultiTaskDetector.load(det.save(tmp_path / "d.pt"))  # the choice travels with the file
    assert loaded.selected_heads_ == chosen and loaded.head_selection_auroc_ == a


def test_validation_selection_row_records_heads_and_what_they_rested_on(tiny_data, monkeypatch):
    from mtssad.protocols import score_fitted

    monkeypatch.setattr(MultiTaskDetector, "_head_scores", _fake_head_scores(False))
    X_val, y_val = _val(tiny_data)
    det = MultiTaskDetector(**TINY, head_selection="validation").fit(tiny_data["train"], X_val=X_val, y_val=y_val)
    row, scores = score_fitted(det, X_val, y_val.astype(bool))
    assert row["selected_heads"] == "vertical,horizontal,rotation"
    assert row["val_auroc_heads_geometric"] > row["val_auroc_heads_all"]
    assert "score_jigsaw" in scores and "auroc_head_jigsaw" in row


def test_validation_selection_on_a_real_fit_is_consistent(tiny_data):
    from mtssad.diagnostic import choose_on_validation
    from mtssad.metrics import auroc

    X_val, y_val = _val(tiny_data)
    det = MultiTaskDetector(**TINY, head_selection="validation").fit(tiny_data["train"], X_val=X_val, y_val=y_val)
    per_head = det.score_tasks(X_val)
    geo = ("vertical", "horizontal", "rotation")
    expect = {"all": auroc(y_val, np.mean(list(per_head.values()), axis=0)),
              "geometric": auroc(y_val, np.mean([per_head[h] for h in geo], axis=0))}
    assert det.head_selection_auroc_ == pytest.approx(expect)
    assert det.selected_heads_ == (geo if choose_on_validation(expect) == "geometric" else geo + ("jigsaw",))
    assert det.head_verdicts_ == {}  # the diagnostic did not decide


def test_validation_selection_without_a_jigsaw_head_has_nothing_to_choose(tiny_data):
    X_val, y_val = _val(tiny_data)
    det = MultiTaskDetector(**TINY, tasks="geometric", head_selection="validation").fit(
        tiny_data["train"], X_val=X_val, y_val=y_val)
    assert det.selected_heads_ == ("vertical", "horizontal", "rotation") and list(det.head_selection_auroc_) == ["all"]


def test_validation_selection_needs_labelled_anomalies(tiny_data):
    det = MultiTaskDetector(**TINY, head_selection="validation")
    with pytest.raises(ValueError, match="needs labelled validation data.*got no X_val"):
        det.fit(tiny_data["train"])
    X_val = tiny_data["test_normal"]
    with pytest.raises(ValueError, match="12 normal and 0 anomalous"):
        det.fit(tiny_data["train"], X_val=X_val, y_val=np.ones(len(X_val), int))
    assert not hasattr(det, "model_")  # refused before any training


def test_choose_on_validation_ties_go_to_the_first_and_nan_never_wins():
    from mtssad.diagnostic import choose_on_validation, validation_candidates

    assert choose_on_validation({"all": 0.9, "geometric": 0.9 + 1e-12}) == "all"
    assert choose_on_validation({"all": float("nan"), "geometric": 0.6}) == "geometric"
    assert choose_on_validation({"all": 0.7, "geometric": 0.71}) == "geometric"
    with pytest.raises(ValueError, match="no candidate"):
        choose_on_validation({"all": float("nan")})
    assert validation_candidates(("rotation", "jigsaw")) == [("all", ("rotation", "jigsaw")), ("geometric", ("rotation",))]
    assert validation_candidates(("jigsaw",)) == [("all", ("jigsaw",))]


def test_evaluate_with_validation_head_selection_records_the_choice_and_refuses_no_validation(tmp_path, capsys):
    import pandas as pd

    from mtssad.cli import main

    fast = ["--max-train", "300", "--max-test", "150", "--epochs", "1", "--min-steps", "0", "--quiet",
            "--backbone", "wrn-10-1"]
    code = main(["evaluate", "--head-selection", "validation", "--val-fraction", "0", "--out", str(tmp_path / "o"), *fast])
    assert code == 2 and "--head-selection validation needs a validation split" in capsys.readouterr().err
    out = tmp_path / "sel"
    assert main(["evaluate", "--classes", "0", "--head-selection", "validation", "--out", str(out), *fast]) == 0
    row = pd.read_parquet(out / "results.parquet").iloc[0]
    a, g = row["val_auroc_heads_all"], row["val_auroc_heads_geometric"]
    expect = "vertical,horizontal,rotation" if g > a + 1e-9 else "vertical,horizontal,rotation,jigsaw"
    assert row["selected_heads"] == expect and '"head_selection": "validation"' in row["config"]
    assert not pd.isna(row["auroc_head_jigsaw"])  # the jigsaw head's own score is reported either way
