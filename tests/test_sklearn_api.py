"""The detectors as scikit-learn estimators: clone, set_params, Pipeline, GridSearchCV, pickling, checks."""

import inspect
import pickle
import warnings
from dataclasses import fields

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import check_estimator
from sklearn.utils.validation import check_is_fitted

from conftest import make_images
from mtssad import DetectorConfig, MultiTaskDetector
from mtssad.calibration import calibration_split, threshold_at, threshold_warning
from mtssad.config import GEOMETRIC_TASKS
from mtssad.methods import make_method
from mtssad.methods.geotrans import GeoTransDetector
from mtssad.methods.mhrot import MHRotDetector
from mtssad.methods.pixels import IForestDetector, OCSVMDetector

# Tiny fits hold out only a few calibration images; that warning is tested on its own below.
pytestmark = pytest.mark.filterwarnings("ignore:threshold_ was set on only:UserWarning")

NET = dict(backbone="wrn-10-1", grid=(2, 2), k=3, margin=1, epochs=1, min_steps=0, batch_size=8, progress=False,
           device="cpu")
NEURAL = (MultiTaskDetector, MHRotDetector, GeoTransDetector)
PIXEL = (OCSVMDetector, IForestDetector)

_TABULAR = ("fits on a tabular array (n_samples, 1-10 features) of arbitrary real values: the detectors need "
            "images (N, C, H, W) with pixels in [0, 1] or 0-255 (a network also needs H, W >= 4), so the fit is "
            "refused before the property checked is reached; tested on images in this file instead")
# sklearn.utils.estimator_checks that cannot apply to an image detector, and why. Every other check passes.
SKLEARN_CHECKS_NOT_APPLICABLE = {
    **{name: _TABULAR for name in (
        "check_fit_score_takes_y", "check_estimators_overwrite_params", "check_dont_overwrite_parameters",
        "check_estimators_fit_returns_self", "check_readonly_memmap_input", "check_n_features_in_after_fitting",
        "check_estimators_dtypes", "check_pipeline_consistency", "check_estimators_pickle",
        "check_f_contiguous_array_estimator", "check_outliers_fit_predict", "check_outliers_train",
        "check_classifier_data_not_an_array", "check_methods_sample_order_invariance",
        "check_methods_subset_invariance", "check_dict_unchanged", "check_fit_idempotent",
        "check_fit_check_is_fitted", "check_n_features_in", "check_fit2d_predict1d",
        "check_estimators_nan_inf",  # raises on NaN/inf as asked, then must fit finite tabular data
    )},
    "check_positive_only_tag_during_fit": "fits on iris (150, 4), centered: tabular, with negative values",
    "check_dtype_object": "fits an object-dtype array of numbers; images must be a numeric array",
    "check_estimators_empty_data_messages": "expects sklearn's tabular wording '0 feature(s) (shape=(n, 0))'; "
                                            "the detector says which image shape it expects",
    "check_fit2d_1sample": "expects the wording '1 sample' for a (1, 10) table; the detector names the image shape",
    "check_fit2d_1feature": "expects the wording '1 feature(s)' for a (10, 1) table; "
                            "the detector names the image shape",
}


def auroc_scorer(estimator, X, y):
    """GridSearchCV scoring for a one-class detector: AUROC of score_samples on labelled images (1 = normal)."""
    return roc_auc_score(y, estimator.score_samples(X))


def to_unit(X):
    return X / 255.0


@pytest.fixture(scope="module")
def images():
    X = make_images(16, side=12, seed=1)  # (16, 1, 12, 12) uint8 bars
    X_test = np.concatenate([make_images(8, side=12, seed=2), make_images(8, kind="anomaly", side=12, seed=3)])
    y_test = np.r_[np.ones(8), np.zeros(8)].astype(int)
    return X, X_test, y_test


@pytest.fixture(scope="module")
def fitted(images):
    X = images[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return {cls.__name__: (cls(**NET) if cls in NEURAL else cls()).fit(X) for cls in NEURAL + PIXEL}


@pytest.mark.parametrize("cls", NEURAL)
def test_constructor_takes_every_config_field_with_its_default(cls):
    sig = inspect.signature(cls.__init__).parameters
    defaults = {f.name: f.default for f in fields(DetectorConfig)}
    expected = set(defaults) | {"image_shape"} | ({"geotrans_score"} if cls is GeoTransDetector else set())
    assert set(sig) - {"self"} == expected
    assert all(p.kind is p.KEYWORD_ONLY for name, p in sig.items() if name != "self")
    for name, default in defaults.items():
        want = GEOMETRIC_TASKS if (name == "tasks" and cls is not MultiTaskDetector) else default
        assert sig[name].default == want, name
    assert cls().config == DetectorConfig(**({"tasks": GEOMETRIC_TASKS} if cls is not MultiTaskDetector else {}))


def test_parameters_are_generated_from_detector_config_and_unknown_ones_are_refused():
    assert set(MultiTaskDetector().get_params()) == {f.name for f in fields(DetectorConfig)} | {"image_shape"}
    assert MultiTaskDetector.from_config(DetectorConfig(k=5, grid=(2, 2))).get_params()["k"] == 5
    with pytest.raises(TypeError, match="MultiTaskDetector.__init__\\(\\) got an unexpected keyword argument 'kk'"):
        MultiTaskDetector(kk=3)


def test_config_is_validated_once_per_parameter_change_and_once_per_fit(monkeypatch):
    built = []
    original = DetectorConfig.__post_init__
    monkeypatch.setattr(DetectorConfig, "__post_init__", lambda self: built.append(1) or original(self))
    det = MultiTaskDetector(**NET)
    assert det.config == det.config and len(built) == 1
    det.config.k = 99  # a copy: the detector's parameters and config are unchanged
    assert det.config.k == 3 and len(built) == 1
    det.set_params(k=2)
    assert det.config.k == 2 and len(built) == 2
    det.batch_size = True  # an assignment counts as a change too (True == 1, but it is not an integer)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1; got True"):
        det.config  # noqa: B018
    built.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        MultiTaskDetector(**NET).fit(make_images(8, side=12), X_val=make_images(4, side=12), y_val=np.ones(4))
    assert len(built) == 1


@pytest.mark.parametrize("cls", NEURAL + PIXEL)
def test_clone_set_params_and_a_short_repr(cls):
    est = cls(seed=3, contamination=0.1)
    twin = clone(est)
    assert twin is not est and twin.get_params() == est.get_params()
    assert twin.set_params(seed=5) is twin and twin.seed == 5 and est.seed == 3
    assert repr(est) == f"{cls.__name__}(contamination=0.1, seed=3)"
    bad = cls(contamination=0.7)  # stored unchanged; refused at fit (scikit-learn's convention)
    assert bad.contamination == 0.7
    with pytest.raises(ValueError, match=r"contamination must be in \(0, 0.5\); got 0.7"):
        bad.fit(make_images(4, side=12))


def test_config_reflects_set_params_and_config_is_what_was_fitted(fitted):
    det = clone(fitted["MultiTaskDetector"]).set_params(k=2, lr=0.05)
    assert det.config.k == 2 and det.config.lr == 0.05 and det.config.grid == (2, 2)
    assert fitted["MultiTaskDetector"].config_.k == 3


@pytest.mark.parametrize("cls", NEURAL + PIXEL)
def test_unfitted_raises_not_fitted_error(cls, images):
    est = cls(**NET) if cls in NEURAL else cls()
    for method in ("score_samples", "decision_function", "predict", "score_tasks"):
        if method == "score_tasks" and cls in PIXEL:
            continue  # no heads: {} without looking at X
        with pytest.raises(NotFittedError, match="not fitted"):
            getattr(est, method)(images[1])
    with pytest.raises(NotFittedError):
        check_is_fitted(est)


@pytest.mark.parametrize("cls", NEURAL + PIXEL)
def test_sklearn_estimator_checks_pass_where_images_allow(cls):
    results = check_estimator(cls(), on_fail=None, on_skip=None)
    failed = {r["check_name"] for r in results if r["status"] == "failed"}
    passed = {r["check_name"] for r in results if r["status"] == "passed"}
    assert failed == set(SKLEARN_CHECKS_NOT_APPLICABLE)
    assert {"check_estimator_cloneable", "check_estimator_repr", "check_no_attributes_set_in_init",
            "check_estimators_unfitted", "check_do_not_raise_errors_in_init_or_set_params", "check_set_params",
            "check_get_params_invariance", "check_parameters_default_constructible", "check_mixin_order",
            "check_fit1d", "check_complex_data", "check_estimator_sparse_matrix"} <= passed


@pytest.mark.parametrize("name", ["MultiTaskDetector", "MHRotDetector", "GeoTransDetector", "OCSVMDetector",
                                  "IForestDetector"])
def test_pickle_and_joblib_round_trips_score_identically(fitted, images, tmp_path, name):
    est, X_test = fitted[name], images[1]
    expected = est.score_samples(X_test)
    back = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(back.score_samples(X_test), expected)
    joblib.dump(est, tmp_path / "est.joblib")
    again = joblib.load(tmp_path / "est.joblib")
    np.testing.assert_array_equal(again.score_samples(X_test), expected)
    assert again.threshold_ == est.threshold_ and again.get_params() == est.get_params()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        np.testing.assert_array_equal(again.predict(X_test), est.predict(X_test))


@pytest.mark.parametrize("name", ["MultiTaskDetector", "OCSVMDetector"])
def test_image_versions_of_the_tabular_checks(fitted, images, name):
    """What check_estimator's tabular checks verify, on images: fitted state, n_features_in_, params untouched,
    subset invariance, fit_predict, fit idempotent."""
    est, X_test = fitted[name], images[1]
    check_is_fitted(est)
    assert est.n_features_in_ == 1 * 12 * 12
    fresh = clone(est)
    assert fresh.get_params() == est.get_params()  # fit did not change a parameter
    s = est.score_samples(X_test)
    assert s.dtype == np.float64 and s.shape == (16,)
    np.testing.assert_allclose(est.score_samples(X_test[5:9]), s[5:9], rtol=1e-5)  # batch-independent scores
    np.testing.assert_allclose(est.decision_function(X_test), s - est.offset_)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        labels = fresh.fit_predict(images[0])
        assert labels.shape == (16,) and set(labels) <= {-1, 1}
        np.testing.assert_allclose(fresh.score_samples(X_test), s, rtol=1e-5)  # same seed: same fit


def test_flattened_input_with_image_shape_in_a_pipeline(images):
    X, X_test, y_test = images
    flat = X.reshape(len(X), -1)
    pipe = Pipeline([("scale", FunctionTransformer(to_unit)),
                     ("det", MultiTaskDetector(**NET, image_shape=(1, 12, 12)))])
    pipe.fit(flat)
    direct = MultiTaskDetector(**NET).fit(X / 255.0)
    np.testing.assert_allclose(pipe.score_samples(X_test.reshape(16, -1)), direct.score_samples(X_test / 255.0),
                               rtol=1e-5)
    assert set(pipe.predict(X_test.reshape(16, -1))) <= {-1, 1}
    assert pipe.named_steps["det"].n_features_in_ == 144
    with pytest.raises(ValueError, match=r"X has 143 features per row; image_shape=\(1, 12, 12\) expects "
                                         r"C\*H\*W = 144 pixels"):
        pipe.score_samples(X_test.reshape(16, -1)[:, :143])
    with pytest.raises(ValueError, match=r"pass image_shape=\(C, H, W\) to the detector"):
        MultiTaskDetector(**NET).fit(flat)
    with pytest.raises(ValueError, match="image_shape must be None or"):
        MultiTaskDetector(**NET, image_shape=(12, 12)).fit(flat)


def test_grid_search_picks_parameters_by_validation_auroc(images):
    X, X_val, y_val = images
    X_all, y_all = np.concatenate([X, X_val]), np.r_[np.ones(len(X), int), y_val]
    cv = [(np.arange(len(X)), np.arange(len(X), len(X_all)))]  # fit on normals only, score labelled images
    search = GridSearchCV(OCSVMDetector(), {"nu": [0.05, 0.5], "gamma": ["scale", 10.0]}, scoring=auroc_scorer,
                          cv=cv, refit=False).fit(X_all, y_all)
    for params, score in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"]):
        manual = roc_auc_score(y_val, OCSVMDetector(**params).fit(X).score_samples(X_val))
        assert score == pytest.approx(manual)
    assert search.best_score_ == max(search.cv_results_["mean_test_score"])
    neural = GridSearchCV(MultiTaskDetector(**NET), {"k": [2, 3]}, scoring=auroc_scorer, cv=cv, refit=False)
    neural.fit(X_all, y_all)
    assert neural.best_params_["k"] in (2, 3) and np.isfinite(neural.cv_results_["mean_test_score"]).all()


def test_make_method_returns_estimators_and_validates_at_once():
    det = make_method("geotrans", geotrans_score="softmax", image_shape=(1, 16, 16), **NET)
    assert isinstance(det, GeoTransDetector) and det.image_shape == (1, 16, 16)
    assert clone(det).geotrans_score == "softmax"
    with pytest.raises(ValueError, match="k must satisfy"):
        make_method("ours", **{**NET, "k": 99})


# ---- predict()'s threshold: held-out normals, not the optimistic training scores ----------------------------

def test_calibration_split_is_seeded_disjoint_and_leaves_two_to_train():
    fit_idx, cal_idx = calibration_split(40, 0.2, 0)
    assert len(cal_idx) == 8 and len(fit_idx) == 32 and not set(fit_idx) & set(cal_idx)
    assert np.array_equal(calibration_split(40, 0.2, 0)[1], cal_idx)
    assert not np.array_equal(calibration_split(40, 0.2, 1)[1], cal_idx)
    assert [len(calibration_split(n, 0.2, 0)[1]) for n in (2, 3, 5, 10)] == [0, 1, 1, 2]
    assert len(calibration_split(10, 0.0, 0)[1]) == 0


def test_threshold_at_flags_contamination_of_new_normals_on_average():
    """Exchangeable scores: with n = 39 references and q = 0.05, a new score falls below the threshold 5% of the
    time; np.quantile's default would flag (0.05 * 38 + 1) / 40 = 7.25%."""
    rng = np.random.default_rng(0)
    ref, new = rng.random((20000, 39)), rng.random(20000)
    ours = np.mean(new < np.array([threshold_at(r, 0.05) for r in ref]))
    linear = np.mean(new < np.quantile(ref, 0.05, axis=1))
    assert abs(ours - 0.05) < 0.005 and abs(linear - 0.0725) < 0.006


def test_threshold_warnings_say_why_and_what_to_do():
    assert threshold_warning("X_val", 100, 0.05) is None and threshold_warning(None, None, 0.05) is None
    msg = threshold_warning("training", 160, 0.05)
    assert "optimistic" in msg and "X_val" in msg and "calibration_fraction" in msg
    msg = threshold_warning("calibration", 8, 0.05)
    assert "only 8 held-out normal image(s)" in msg and "about 11%" in msg and "at least 19" in msg


def test_fit_without_held_out_data_holds_out_a_calibration_fraction(images, fitted):
    X, X_test, _ = images
    det = fitted["MultiTaskDetector"]
    fit_idx, cal_idx = calibration_split(len(X), 0.2, NET.get("seed", 0))
    assert det.threshold_source_ == "calibration" and det.n_threshold_images_ == len(cal_idx) == 3
    # trained on the rest only: the same network as a fit on X[fit_idx] that holds nothing out
    plain = MultiTaskDetector(**NET, calibration_fraction=0.0).fit(X[fit_idx])
    np.testing.assert_allclose(plain.score_samples(X_test), det.score_samples(X_test), rtol=1e-5)
    assert det.threshold_ == pytest.approx(threshold_at(det.score_samples(X[cal_idx]), 0.05), rel=1e-6)
    assert plain.threshold_source_ == "training"
    with pytest.warns(UserWarning, match="optimistic: predict\\(\\) flags more than contamination=0.05"):
        plain.predict(X_test)


def test_held_out_normals_in_x_val_set_the_threshold_and_nothing_is_held_out(images):
    X, X_val, y_val = images
    det = OCSVMDetector().fit(X, X_val=X_val, y_val=y_val)
    assert det.threshold_source_ == "X_val" and det.n_threshold_images_ == 8
    assert det.threshold_ == threshold_at(det.score_samples(X_val[:8]), 0.05)
    with pytest.warns(UserWarning, match="only 8 held-out normal image"):  # 8 < 19: the minimum flags ~11%
        det.predict(X_val)
    same = OCSVMDetector(calibration_fraction=0.0).fit(X)  # X_val's normals given: all of X was fitted on
    np.testing.assert_array_equal(same.score_samples(X_val), det.score_samples(X_val))


def test_loaded_detector_keeps_its_threshold_source_and_parameters(fitted, tmp_path):
    det = clone(fitted["GeoTransDetector"]).set_params(geotrans_score="softmax", image_shape=(1, 12, 12))
    det.fit(make_images(8, side=12, seed=4))
    back = MultiTaskDetector.load(det.save(tmp_path / "g.pt"))
    assert type(back) is GeoTransDetector and back.get_params() == det.get_params()
    assert back.threshold_source_ == "calibration" and back.n_threshold_images_ == det.n_threshold_images_
    flat = make_images(3, side=12, seed=5).reshape(3, -1)
    np.testing.assert_array_equal(back.score_samples(flat), det.score_samples(flat))
