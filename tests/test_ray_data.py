"""Ray Data batch scoring: the callable class alone, then an actor pool equal to local scoring."""

import time

import numpy as np
import pandas as pd
import pytest

from mtssad.distributed.data import DetectorScorer, _detector_ref, score_with_ray_data
from ray_fixtures import ray_local  # noqa: F401


@pytest.fixture()
def saved_tiny(fitted_tiny, tmp_path):
    return fitted_tiny.save(tmp_path / "det.pt")


def _test_images(tiny_data):
    return np.concatenate([tiny_data["test_normal"], tiny_data["test_anomaly"]])


def test_scorer_class_scores_a_batch_like_the_detector(fitted_tiny, saved_tiny, tiny_data):
    X = _test_images(tiny_data)
    X.setflags(write=False)  # Ray Data batches are read-only views
    out = DetectorScorer(saved_tiny)({"image": X, "index": np.arange(100, 100 + len(X))})
    assert out["index"].tolist() == list(range(100, 124))
    assert np.allclose(out["score"], fitted_tiny.score_samples(X), atol=1e-6)
    tasks = fitted_tiny.score_tasks(X)
    assert set(out) == {"index", "score"} | {f"score_{h}" for h in tasks}
    assert np.allclose(out["score_jigsaw"], tasks["jigsaw"], atol=1e-6)


def test_scorer_loads_the_detector_from_bytes_or_a_storage_uri(fitted_tiny, saved_tiny, tiny_data):
    X = _test_images(tiny_data)
    batch = {"image": X, "index": np.arange(len(X)), "label": np.r_[np.ones(12, int), np.zeros(12, int)]}
    for source in (fitted_tiny.to_bytes(), f"file://{saved_tiny}"):
        out = DetectorScorer(source)(batch)
        assert np.allclose(out["score"], fitted_tiny.score_samples(X), atol=1e-6)
        assert out["label"].tolist() == batch["label"].tolist()  # labels pass through to the Parquet rows


@pytest.mark.ray
def test_actors_get_the_detector_through_the_object_store_or_a_uri(ray_local, fitted_tiny, saved_tiny):
    import ray

    for driver_side in (fitted_tiny, fitted_tiny.to_bytes(), saved_tiny, str(saved_tiny), f"file://{saved_tiny}"):
        ref = _detector_ref(driver_side)  # never a path of the driver's disk
        assert isinstance(ref, ray.ObjectRef) and ray.get(ref) == saved_tiny.read_bytes()
    assert _detector_ref("s3://bucket/run/det.pt") == "s3://bucket/run/det.pt"  # each actor reads the storage


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_ray_data_actor_pool_scores_equal_local_scores(ray_local, fitted_tiny, saved_tiny, tiny_data, tmp_path):
    X = _test_images(tiny_data)
    labels = np.r_[np.ones(12, int), np.zeros(12, int)]
    t0 = time.perf_counter()
    df = score_with_ray_data(fitted_tiny, X, labels, num_actors=2, batch_size=5, block_size=7,
                             num_cpus=0.5, out_dir=f"file://{tmp_path}/scores")  # Ray Data writes it, as to s3://
    print(f"Ray Data scoring of {len(X)} images on 2 actors: {time.perf_counter() - t0:.1f}s")
    assert df["index"].tolist() == list(range(len(X)))
    assert np.allclose(df["score"].to_numpy(), fitted_tiny.score_samples(X), atol=1e-6)
    assert np.allclose(df["score_rotation"].to_numpy(), fitted_tiny.score_tasks(X)["rotation"], atol=1e-6)
    assert df["label"].tolist() == labels.tolist()
    back = pd.read_parquet(tmp_path / "scores").sort_values("index")
    assert np.allclose(back["score"].to_numpy(), df["score"].to_numpy())
    assert back["label"].tolist() == labels.tolist()
    # rerun into the same directory overwrites (no duplicated rows)
    assert score_with_ray_data(saved_tiny, X, labels, num_actors=1, batch_size=64, num_cpus=0.5,
                               out_dir=tmp_path / "scores", return_frame=False) is None
    assert len(pd.read_parquet(tmp_path / "scores")) == len(X)
