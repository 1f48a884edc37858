"""Baselines: MHRot (eq. 4), GeoTrans (72 transforms, Dirichlet score), OCSVM and IForest on pixels."""

import itertools

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from conftest import make_images
from mtssad.detector import MultiTaskDetector
from mtssad.methods import make_method
from mtssad.methods.geotrans import GeoTransDetector, dirichlet_stats, fit_dirichlet, inv_digamma
from mtssad.methods.mhrot import MHRotDetector, eq4_scores
from mtssad.transforms import build_tasks, composed_plan

NET = dict(backbone="wrn-10-1", epochs=1, min_steps=0, batch_size=8, progress=False, device="cpu")


@pytest.fixture(scope="module")
def data():
    return make_images(12, seed=1), np.concatenate([make_images(4, seed=2), make_images(4, kind="anomaly", seed=3)])


@pytest.fixture(scope="module")
def fitted(data):
    X, _ = data
    return {name: make_method(name, **NET).fit(X) for name in ("mhrot", "geotrans")}


@pytest.mark.parametrize("name, heads", [("mhrot", {"vertical", "horizontal", "rotation"}), ("geotrans", {"geotrans"})])
def test_neural_baselines_fit_and_score_shapes(fitted, data, name, heads):
    det = fitted[name]
    s, per_head = det.score_samples(data[1]), det.score_tasks(data[1])
    assert s.shape == (8,) and np.isfinite(s).all()
    assert set(per_head) == heads and all(v.shape == (8,) for v in per_head.values())
    assert det.predict(data[1]).shape == (8,)


def test_mhrot_plan_has_36_distinct_labelled_compositions():
    det = MHRotDetector(**NET).init_model((1, 16, 16))
    plan = det.plan_
    assert plan.num_variants == 36 and plan.head_names == ("vertical", "horizontal", "rotation")
    assert plan.labels.tolist() == [list(c) for c in itertools.product(range(3), range(3), range(4))]
    xv = plan.make(torch.rand(2, 1, 16, 16), train=False).view(36, 2, -1)
    assert len({xv[v].numpy().tobytes() for v in range(36)}) == 36


def test_geotrans_plan_has_72_distinct_transforms():
    det = GeoTransDetector(**NET).init_model((1, 16, 16))
    plan = det.plan_
    assert plan.num_variants == 72 and plan.head_names == ("geotrans",)
    assert plan.labels.view(-1).tolist() == list(range(72))
    xv = plan.make(torch.rand(2, 1, 16, 16), train=False).view(72, 2, -1)
    assert len({xv[v].numpy().tobytes() for v in range(72)}) == 72
    assert torch.equal(xv[36], torch.flip(xv[0].view(2, 16, 16), dims=(2,)).view(2, -1))  # flip is the outer factor


def test_mhrot_eq4_equals_hand_computation_on_stub_outputs():
    plan = composed_plan(build_tasks(("vertical", "horizontal", "rotation"), (16, 16)))
    g = torch.Generator().manual_seed(0)
    probs = {h.name: torch.rand(36, 5, h.num_classes, generator=g).softmax(-1) for h in plan.heads}
    expected = np.zeros(5)
    for n in range(5):
        for v, (a, b, r) in enumerate(itertools.product(range(3), range(3), range(4))):
            expected[n] += probs["vertical"][v, n, a] + probs["horizontal"][v, n, b] + probs["rotation"][v, n, r]
    np.testing.assert_allclose(eq4_scores(probs, plan).numpy(), expected, rtol=1e-6)
    # the detector's score_samples path (per-head sums, then _combine) gives eq. 4 too
    per_head = {h: torch.stack([probs[h][v, :, plan.labels[v, i]] for v in range(36)]).sum(0).numpy()
                for i, h in enumerate(plan.head_names)}
    np.testing.assert_allclose(MHRotDetector(**NET).init_model((1, 16, 16))._combine(per_head), expected, rtol=1e-6)


@pytest.mark.parametrize("method", ["newton", "fixed-point"])
def test_dirichlet_fit_recovers_known_parameters(method):
    """5000 draws from Dir([2, 5, 1, 0.5]): the MLE is within 10% of each alpha (its std is ~2-3% here)."""
    alpha = np.array([2.0, 5.0, 1.0, 0.5])
    p = np.random.default_rng(0).dirichlet(alpha, size=5000)
    fit = fit_dirichlet(*dirichlet_stats(p), method=method)
    assert np.all(np.abs(fit - alpha) / alpha < 0.10), fit
    # vectorized over a leading axis: two independent fits at once
    both = fit_dirichlet(*dirichlet_stats(np.stack([p, p[:, ::-1]], axis=1)), method=method)
    np.testing.assert_allclose(both[0], fit, rtol=1e-6)
    np.testing.assert_allclose(both[1], fit[::-1], rtol=1e-6)


def test_newton_and_fixed_point_reach_the_same_maximum():
    p = np.random.default_rng(1).dirichlet([0.3, 40.0, 3.0], size=300)
    stats = dirichlet_stats(p)
    np.testing.assert_allclose(fit_dirichlet(*stats), fit_dirichlet(*stats, method="fixed-point", max_iter=20000),
                               rtol=1e-4)


def test_inv_digamma_inverts_digamma():
    from scipy.special import digamma

    x = np.array([1e-3, 0.1, 0.5, 1.0, 3.0, 50.0])
    np.testing.assert_allclose(inv_digamma(digamma(x)), x, rtol=1e-8)


@pytest.mark.parametrize("name", ["mhrot", "geotrans"])
def test_save_load_round_trip_gives_identical_scores(fitted, data, tmp_path, name):
    det = fitted[name]
    loaded = MultiTaskDetector.load(det.save(tmp_path / f"{name}.pt"))
    assert type(loaded) is type(det) and loaded.get_params() == det.get_params()
    np.testing.assert_array_equal(loaded.score_samples(data[1]), det.score_samples(data[1]))
    assert loaded.threshold_ == det.threshold_


def test_geotrans_softmax_option_persists_and_scores_true_class_sum(data, tmp_path):
    det = make_method("geotrans", geotrans_score="softmax", **NET).fit(data[0])  # one epoch is enough
    probs = det.variant_probabilities(data[1])["geotrans"]  # (72, N, 72)
    np.testing.assert_allclose(det.score_samples(data[1]), probs[np.arange(72), :, np.arange(72)].sum(0), rtol=1e-5)
    loaded = MultiTaskDetector.load(det.save(tmp_path / "g.pt"))
    assert loaded.geotrans_score == "softmax" and not hasattr(loaded, "dirichlet_alpha_")
    with pytest.raises(ValueError, match="geotrans_score must be one of"):
        GeoTransDetector(geotrans_score="gauss").fit(data[0])  # scikit-learn convention: validated at fit


def test_fixed_task_baselines_reject_other_tasks():
    with pytest.raises(ValueError, match="MHRot always uses the vertical, horizontal and rotation"):
        MHRotDetector(tasks=("jigsaw",)).fit(make_images(4))  # scikit-learn convention: validated at fit
    assert make_method("mhrot", tasks=("jigsaw",), **NET).config.tasks == ("vertical", "horizontal", "rotation")


@pytest.mark.parametrize("name", ["ocsvm", "iforest"])
@pytest.mark.parametrize("pca", [None, 5])
def test_pixel_baselines_fit_and_score(data, name, pca):
    X, X_test = data
    det = make_method(name, pca_components=pca, seed=0, backbone="wrn-10-1").fit(X)  # neural params are dropped
    s = det.score_samples(X_test)
    assert s.shape == (8,) and s.dtype == np.float64 and np.isfinite(s).all()
    assert det.score_tasks(X_test) == {} and set(det.predict(X_test)) <= {-1, 1}
    assert det.get_params()["pca_components"] == pca
    assert s[:4].mean() > s[4:].mean()  # bars look more normal than uniform noise


@pytest.mark.parametrize("name", ["ocsvm", "iforest"])
def test_pixel_baselines_reject_bad_shapes(data, name):
    X = data[0]
    det = make_method(name)
    with pytest.raises(ValueError, match=r"expected X of shape \(N, C, H, W\)"):
        det.fit(X.reshape(12, -1))
    with pytest.raises(NotFittedError, match="not fitted"):
        det.score_samples(X)
    det.fit(X)
    with pytest.raises(ValueError, match=r"fitted on 1 channel\(s\) of 16x16"):
        det.score_samples(make_images(3, side=12))
    with pytest.raises(ValueError, match=r"pca_components must be an integer in \[1, 10\] \(min of the 10 images it is fitted on, 2 held out"):
        make_method(name, pca_components=100).fit(X)
