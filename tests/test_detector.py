import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import TINY, make_images
from sklearn.exceptions import NotFittedError

from mtssad import DetectorFileError, MultiTaskDetector
from mtssad.calibration import calibration_split, threshold_at
from mtssad.scoring import head_scores
from mtssad.train import to_model_input
from mtssad.transforms import build_tasks, multitask_plan


def test_score_is_eq5_eq6_on_stub_head_outputs():
    plan = multitask_plan(build_tasks(("vertical", "horizontal", "rotation", "jigsaw"), (16, 16), grid=(2, 2),
                                      margin=1))
    g = torch.Generator().manual_seed(0)
    probs = {h.name: torch.rand(11, 2, h.num_classes, generator=g).softmax(-1) for h in plan.heads}
    s = head_scores(probs, plan)
    v, hz, r, j = (probs[n] for n in ("vertical", "horizontal", "rotation", "jigsaw"))
    assert torch.allclose(s["vertical"], v[0, :, 0] + v[1, :, 1] + v[2, :, 2])
    assert torch.allclose(s["horizontal"], hz[0, :, 0] + hz[3, :, 1] + hz[4, :, 2])
    assert torch.allclose(s["rotation"], r[0, :, 0] + r[5, :, 1] + r[6, :, 2] + r[7, :, 3])
    assert torch.allclose(s["jigsaw"], j[8, :, 0] + j[9, :, 1] + j[10, :, 2])


def test_identity_dedup_equals_naive_13_output_score(fitted_tiny, tiny_data):
    det = fitted_tiny
    X = np.concatenate([tiny_data["test_normal"], tiny_data["test_anomaly"]])
    model = det.model_.eval()
    x = to_model_input(torch.from_numpy(X), torch.device("cpu"))
    per_head = []
    with torch.no_grad():
        for i, task in enumerate(det.plan_.tasks):  # naive: every transform of every head, raw image re-run each time
            variants = task.all_variants(x, train=False)  # (m, N, C, H, W)
            probs = [model(variants[j])[task.name].softmax(1)[:, j] for j in range(task.num_classes)]
            per_head.append(torch.stack(probs).sum(0))
    naive = torch.stack(per_head).mean(0).numpy()
    assert np.allclose(det.score_samples(X), naive, atol=1e-5)
    assert det.plan_.num_variants == 1 + 2 + 2 + 3 + 3  # the jigsaw identity is a puzzle of its own


def test_detector_separates_tiny_anomalies_and_loss_decreases(tiny_data):
    det = MultiTaskDetector(**{**TINY, "epochs": 6}).fit(tiny_data["train"])
    losses = [h["loss"] for h in det.history_]
    assert losses[-1] < losses[0]
    sn, sa = det.score_samples(tiny_data["test_normal"]), det.score_samples(tiny_data["test_anomaly"])
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(np.r_[np.ones(12), np.zeros(12)], np.r_[sn, sa]) > 0.8
    assert set(det.history_[0]) >= {"loss", "acc_train/jigsaw", "acc_train/rotation", "epoch", "lr"}


def test_api_shapes_predict_and_threshold(fitted_tiny, tiny_data):
    X = tiny_data["test_anomaly"]
    tasks = fitted_tiny.score_tasks(X)
    assert set(tasks) == {"vertical", "horizontal", "rotation", "jigsaw"}
    assert all(v.shape == (12,) for v in tasks.values())
    assert np.allclose(fitted_tiny.score_samples(X), np.mean(list(tasks.values()), axis=0))
    assert fitted_tiny.decision_function(X).shape == (12,)
    assert set(np.unique(fitted_tiny.predict(X))) <= {-1, 1}
    # no X_val: threshold_ is the contamination quantile of a seeded fifth of the training images held out of training
    _, cal_idx = calibration_split(40, 0.2, 0)
    assert fitted_tiny.threshold_source_ == "calibration" and fitted_tiny.n_threshold_images_ == len(cal_idx) == 8
    held_out = fitted_tiny.score_samples(make_images(40, seed=1)[cal_idx])
    assert fitted_tiny.threshold_ == threshold_at(held_out, 0.05) == held_out.min()  # 8 images: 0.05 * 9 < 1


def test_seed_determinism_and_seed_sensitivity(tiny_data):
    a = MultiTaskDetector(**TINY, seed=3).fit(tiny_data["train"]).score_samples(tiny_data["test_normal"])
    b = MultiTaskDetector(**TINY, seed=3).fit(tiny_data["train"]).score_samples(tiny_data["test_normal"])
    c = MultiTaskDetector(**TINY, seed=4).fit(tiny_data["train"]).score_samples(tiny_data["test_normal"])
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_save_load_round_trip_identical_scores(fitted_tiny, tiny_data, tmp_path):
    path = fitted_tiny.save(tmp_path / "det.pt")
    loaded = MultiTaskDetector.load(path)
    X = tiny_data["test_anomaly"]
    assert np.array_equal(loaded.score_samples(X), fitted_tiny.score_samples(X))
    assert loaded.threshold_ == fitted_tiny.threshold_
    assert torch.equal(loaded.permutations_, fitted_tiny.permutations_)
    assert loaded.config == fitted_tiny.config


def test_load_rejects_corrupt_truncated_and_foreign_files(fitted_tiny, tmp_path):
    good = fitted_tiny.save(tmp_path / "det.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(DetectorFileError, match="trunc.pt: not a readable mtssad detector file"):
        MultiTaskDetector.load(tmp_path / "trunc.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model at all")
    with pytest.raises(DetectorFileError, match="junk.pt"):
        MultiTaskDetector.load(tmp_path / "junk.pt")
    torch.save({"format": "mtssad-detector", "format_version": 99, "mtssad_version": "9.9"}, tmp_path / "new.pt")
    with pytest.raises(DetectorFileError, match="format 99 by mtssad 9.9"):
        MultiTaskDetector.load(tmp_path / "new.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(DetectorFileError, match="not an mtssad detector file"):
        MultiTaskDetector.load(tmp_path / "other.pt")
    with pytest.raises(DetectorFileError, match="no such detector file"):
        MultiTaskDetector.load(tmp_path / "missing.pt")


def test_load_never_runs_code_from_the_file(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (exec, ("open(r'%s', 'w').write('pwned')" % (tmp_path / "flag"),))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"format": "mtssad-detector", "x": Evil()}, f)
    with pytest.raises(DetectorFileError):
        MultiTaskDetector.load(tmp_path / "evil.pt")
    assert not (tmp_path / "flag").exists()


def test_refusing_a_code_carrying_file_gives_no_advice_to_load_it_unsafely(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, ("open(r'%s', 'w').write('pwned')" % (tmp_path / "flag"),))

    torch.save({"format": "mtssad-detector", "x": Evil()}, tmp_path / "evil.pt")  # a real torch zip with a payload
    with pytest.raises(DetectorFileError) as e:
        MultiTaskDetector.load(tmp_path / "evil.pt")
    msg = str(e.value)
    assert "evil.pt: not a readable mtssad detector file" in msg and "GLOBAL exec" in msg  # what was refused
    assert "nothing in it was executed" in msg
    for advice in ("weights_only", "Re-running", "trust", "safe_globals"):
        assert advice not in msg
    assert not (tmp_path / "flag").exists()


@pytest.mark.parametrize("bad,msg", [
    (np.zeros((4, 16)), r"shape \(N, C, H, W\) or \(N, H, W\); got shape \(4, 16\)"),
    (np.zeros((0, 1, 16, 16), np.uint8), "empty"),
    (np.full((3, 1, 16, 16), np.nan, np.float32), "NaN or inf pixels in 3"),
    (np.full((3, 1, 16, 16), 7.0, np.float32), r"scaled to \[0, 1\]"),
    (np.zeros((3, 16, 16, 3), np.uint8), "channels-last"),
])
def test_bad_inputs_raise_clear_errors(fitted_tiny, bad, msg):
    with pytest.raises(ValueError, match=msg):
        fitted_tiny.score_samples(bad)


def test_wrong_channels_or_size_at_score_time(fitted_tiny):
    with pytest.raises(ValueError, match=r"fitted on 1 channel\(s\) of 16x16"):
        fitted_tiny.score_samples(np.zeros((2, 3, 16, 16), np.uint8))
    with pytest.raises(ValueError, match=r"fitted on 1 channel\(s\) of 16x16"):
        fitted_tiny.score_samples(np.zeros((2, 1, 20, 20), np.uint8))


def test_image_smaller_than_grid_and_unfitted():
    with pytest.raises(ValueError, match="too small for a 3x3 jigsaw grid"):
        MultiTaskDetector(**{**TINY, "grid": (3, 3)}).fit(np.zeros((4, 1, 5, 5), np.uint8))
    with pytest.raises(NotFittedError, match="not fitted"):
        MultiTaskDetector(**TINY).score_samples(np.zeros((2, 1, 16, 16), np.uint8))


def test_held_out_validation_records_the_task_diagnostic(tiny_data):
    X_val = np.concatenate([tiny_data["test_normal"], tiny_data["test_anomaly"]])
    y_val = np.r_[np.ones(12), np.zeros(12)].astype(int)
    det = MultiTaskDetector(**{**TINY, "score_norm": "standardize"}).fit(tiny_data["train"], X_val=X_val, y_val=y_val)
    last = det.history_[-1]
    for head in ("vertical", "horizontal", "rotation", "jigsaw"):
        assert 0 <= last[f"acc_val_normal/{head}"] <= 1 and 0 <= last[f"acc_val_anomaly/{head}"] <= 1
    # standardized on the held-out normals: their per-head z-scores have mean 0
    z = det.score_samples(tiny_data["test_normal"])
    assert abs(z.mean()) < 1e-3  # float32 head scores, float64 stats


def test_standardize_does_not_let_a_saturated_heads_float_noise_decide_the_score():
    """A head that gives every reference normal its maximum (std ~1e-8) would, divided by that std, rank the
    test images by float noise; the floor keeps the informative head in charge."""
    from mtssad.scoring import STD_FLOOR, combine_heads, head_stats

    rng = np.random.default_rng(0)
    ref = {"rotation": rng.normal(3.0, 0.3, 200), "jigsaw": 3.0 - np.abs(rng.normal(0, 1e-9, 200))}
    counts = {"rotation": 4, "jigsaw": 3}
    stats, floored = head_stats(ref, counts)
    assert floored == ["jigsaw"] and stats["jigsaw"][1] == STD_FLOOR * 3 and stats["rotation"][1] > 0.2
    # normals high on rotation, anomalies low; the saturated head differs by noise only (anomalies slightly higher)
    test = {"rotation": np.r_[np.full(5, 3.2), np.full(5, 2.0)],
            "jigsaw": np.r_[np.full(5, 3 - 1e-8), np.full(5, 3.0)]}
    z = combine_heads(test, ["rotation", "jigsaw"], norm="standardize", stats=stats)
    assert z[:5].min() > z[5:].max()  # without the floor the jigsaw noise (z ~ -16 for normals) would invert ranks
    raw_sd = {h: (float(v.mean()), float(v.std())) for h, v in ref.items()}
    z_raw = combine_heads(test, ["rotation", "jigsaw"], norm="standardize", stats=raw_sd)
    assert z_raw[:5].max() < z_raw[5:].min()  # the failure the floor prevents, shown on the same numbers


def test_prepare_fit_checks_before_training_and_holds_out_the_calibration_normals():
    det = MultiTaskDetector(**TINY)
    X = make_images(20)
    data = det.prepare_fit(X)
    assert data.config == det.config and data.X_val is None and data.y_val is None
    fit_idx, cal_idx = calibration_split(20, det.calibration_fraction, det.seed)
    assert torch.equal(data.X, torch.from_numpy(X[fit_idx])) and torch.equal(data.X_calibration,
                                                                            torch.from_numpy(X[cal_idx]))
    with_val = det.prepare_fit(X, X_val=make_images(4, seed=1), y_val=[1, 1, 0, 0])
    assert len(with_val.X) == 20 and with_val.X_calibration is None  # X_val's normals set threshold_
    assert with_val.y_val.tolist() == [True, True, False, False]
    with pytest.raises(ValueError, match="X_train has NaN or inf pixels"):
        det.prepare_fit(np.full((4, 1, 16, 16), np.nan, np.float32), name="X_train")
    with pytest.raises(ValueError, match='early_stopping="val_auroc" needs labelled held-out images'):
        det.set_params(early_stopping="val_auroc").prepare_fit(X)
    assert not hasattr(det, "model_")  # nothing trained, nothing built


def test_import_mtssad_does_not_import_ray():
    code = "import sys, mtssad, mtssad.detector, mtssad.train, mtssad.scoring; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_step_budget_adds_whole_epochs_until_min_steps(tiny_data):
    from mtssad.train import planned_epochs

    cfg = MultiTaskDetector(**TINY).config
    assert planned_epochs(4, cfg) == 2  # min_steps=0: the epochs as given
    cfg.min_steps = 10
    assert planned_epochs(4, cfg) == 3  # ceil(10 / 4) whole epochs
    assert planned_epochs(100, cfg) == 2  # big sets: epochs already exceed the budget
    spe = math.ceil(len(tiny_data["train"]) / 8)  # steps an epoch at batch 8
    det = MultiTaskDetector(**{**TINY, "epochs": 1, "min_steps": 2 * spe + 1}).fit(tiny_data["train"])
    assert len(det.history_) == 3  # two epochs fall one step short: a third whole epoch
    assert det.history_[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # the cosine reached 0 at the real last step


def test_final_diagnostic_is_measured_after_batchnorm_recalibration(tiny_data):
    X_val = np.concatenate([tiny_data["test_normal"], tiny_data["test_anomaly"]])
    y_val = np.r_[np.ones(12), np.zeros(12)].astype(int)
    det = MultiTaskDetector(**TINY).fit(tiny_data["train"], X_val=X_val, y_val=y_val)
    last = det.history_[-1]
    assert last["diagnostic"] == "after_bn_recalibration"
    assert "acc_val_normal_running_bn/jigsaw" in last  # the pre-recalibration figure is kept beside it
    again = det.validation_accuracy(torch.from_numpy(X_val), y_val.astype(bool))  # the scored network, now
    for head in ("vertical", "horizontal", "rotation", "jigsaw"):
        assert last[f"acc_val_normal/{head}"] == again[f"acc_val_normal/{head}"]
        assert last[f"acc_val_anomaly/{head}"] == again[f"acc_val_anomaly/{head}"]


def test_held_out_diagnostic_is_recorded_at_most_twenty_times_and_always_last():
    from mtssad.train import DIAGNOSTIC_POINTS, diagnostic_epoch

    assert all(diagnostic_epoch(e, 5) for e in range(5))  # few epochs: every one
    marked = [e for e in range(300) if diagnostic_epoch(e, 300)]  # a CUB class: 300 one-step epochs
    assert len(marked) == DIAGNOSTIC_POINTS and marked[-1] == 299 and marked[0] == 14
    marked = [e for e in range(41) if diagnostic_epoch(e, 41)]
    assert len(marked) <= DIAGNOSTIC_POINTS + 1 and marked[-1] == 40
