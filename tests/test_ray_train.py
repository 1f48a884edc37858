"""Ray Train (V2) DDP training: sharding, a 2-worker fit giving the local detector type, resume paths."""

import time

import numpy as np
import pytest
import torch

from conftest import make_images
from mtssad import DetectorConfig, MultiTaskDetector
from mtssad.distributed.ddp_worker import _checkpoint_due
from mtssad.distributed.train import (DDP_MIN_FIT_IMAGES, STATE_FILE, check_ddp_resources, ddp_workers, fit_ddp,
                                      train_detector_ddp, use_ddp)
from mtssad.train import batch_order
from ray_fixtures import TINY_RAY, ray_local  # noqa: F401


@pytest.mark.parametrize("n,batch,world", [(40, 8, 2), (41, 8, 2), (42, 8, 4), (37, 9, 3), (10, 8, 1)])
def test_batch_order_splits_each_global_batch_disjointly_with_equal_steps(n, batch, world):
    batches = batch_order(n, batch, torch.Generator().manual_seed(0), world)
    assert torch.equal(torch.sort(torch.cat(batches)).values, torch.arange(n))  # every image once per epoch
    for b in batches:
        shares = [b[r::world] for r in range(world)]
        assert all(len(s) >= 1 for s in shares)  # every rank steps on every global batch (DDP needs it)
        assert len(torch.unique(torch.cat(shares))) == len(b)


def test_one_worker_shards_like_the_local_loop():
    a = batch_order(41, 8, torch.Generator().manual_seed(3), 1)
    b = batch_order(41, 8, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and len(a) == len(b)


def _auroc(det, normal, anomaly):
    from sklearn.metrics import roc_auc_score

    s = np.r_[det.score_samples(normal), det.score_samples(anomaly)]
    return roc_auc_score(np.r_[np.ones(len(normal)), np.zeros(len(anomaly))], s)


@pytest.mark.parametrize("num_workers,n,expected", [(2, 10, 2), (4, 10, 4), (1, 10**6, 0), (None, 30, 0),
                                                     (None, DDP_MIN_FIT_IMAGES - 1, 0), (None, DDP_MIN_FIT_IMAGES, 2)])
def test_ddp_is_chosen_when_asked_or_from_the_fit_set_size(num_workers, n, expected):
    assert ddp_workers(num_workers, n) == expected
    assert use_ddp(num_workers, n) == (expected >= 2)
    assert use_ddp(None, 500, threshold=400) and not use_ddp(None, 300, threshold=400)


def test_fractional_gpus_with_ddp_are_refused_before_ray_starts(tiny_data, tmp_path):
    ray = pytest.importorskip("ray")
    ray_was_up = ray.is_initialized()
    check_ddp_resources(1, True, {"GPU": 0.5})  # one rank may share a GPU (no NCCL peer)
    check_ddp_resources(2, True, {"GPU": 2})
    check_ddp_resources(2, False, {"CPU": 0.5})
    for bad in ({"GPU": 0.5}, {"CPU": 1, "GPU": 1.5}):
        with pytest.raises(ValueError, match=r"DDP with 2 workers needs whole GPUs per worker; got GPU=.* NCCL"):
            train_detector_ddp(tiny_data["train"], DetectorConfig(**TINY_RAY), num_workers=2, use_gpu=True,
                               resources_per_worker=bad, storage_path=str(tmp_path), name="never")
    assert ray.is_initialized() == ray_was_up and not (tmp_path / "never").exists()


@pytest.mark.parametrize("every,epochs,due", [(5, 3, [2]), (2, 5, [1, 3, 4]), (1, 3, [0, 1, 2]), (5, 12, [4, 9, 11])])
def test_checkpoints_every_n_epochs_and_at_the_end(every, epochs, due):
    assert [e for e in range(epochs) if _checkpoint_due(e, epochs, every)] == due


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_two_gloo_workers_train_a_loadable_detector(ray_local, tiny_data, tmp_path):
    X = tiny_data["train"]
    X_val = np.concatenate([make_images(6, seed=7), make_images(6, kind="anomaly", seed=8)])
    y_val = np.r_[np.ones(6, int), np.zeros(6, int)]
    X_test = np.concatenate([tiny_data["test_normal"], tiny_data["test_anomaly"]])
    t0 = time.perf_counter()
    fit = fit_ddp(
        X, DetectorConfig(**{**TINY_RAY, "epochs": 3}), num_workers=2, resources_per_worker={"CPU": 1},
        storage_path=str(tmp_path / "ray"), name="ddp2", controller_failure_limit=0, X_val=X_val, y_val=y_val,
        checkpoint_every=2, score_sets={"val": X_val, "test": X_test})
    det = fit.detector
    print(f"2-worker TorchTrainer fit: {time.perf_counter() - t0:.1f}s")
    assert type(det) is MultiTaskDetector
    assert det.ray_run_["world_size"] == 2 and det.ray_run_["starts"] == [0]
    assert [h["epoch"] for h in det.history_] == [0, 1, 2]
    assert det.history_[-1]["loss"] < det.history_[0]["loss"]
    assert "acc_val_normal/jigsaw" in det.history_[-1]  # the head diagnostic, computed on rank 0
    # checkpoints after epoch 1 (every 2: resumable, with the optimizer) and at the end (weights only)
    stored = sorted((tmp_path / "ray" / "ddp2").glob(f"checkpoint_*/{STATE_FILE}"))
    states = [torch.load(p, weights_only=True) for p in stored]
    assert sorted(st["epoch"] for st in states) == [1, 2]
    assert {st["epoch"]: "optimizer" in st for st in states} == {1: True, 2: False}
    # jigsaw permutations come from config.seed: the same as a locally built detector's
    local = MultiTaskDetector(**{**TINY_RAY, "epochs": 3}).init_model(X.shape[1:])
    assert torch.equal(det.permutations_, local.permutations_)
    # rank 0 calibrated and scored; the caller's detector (loaded from rank 0's bytes) scores the same
    assert fit.device == "cpu" and set(fit.scores) == {"val", "test"}
    assert np.allclose(fit.scores["test"], det.score_samples(X_test), atol=1e-6)
    assert np.allclose(fit.head_scores["val"]["rotation"], det.score_tasks(X_val)["rotation"], atol=1e-6)
    assert _auroc(det, tiny_data["test_normal"], tiny_data["test_anomaly"]) > 0.8
    path = det.save(tmp_path / "det.pt")
    back = MultiTaskDetector.load(path)
    assert np.allclose(back.score_samples(X_test), det.score_samples(X_test))
    assert back.threshold_ == det.threshold_ and len(back.history_) == 3


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_workers_stop_early_together_and_keep_rank_0s_best_weights(ray_local, tiny_data, tmp_path):
    """eval_every (3 steps) is more than an epoch (2 global steps of 20 of the 40 images, 2 workers): rank 0 measures every
    other epoch and the other rank must join exactly those stop decisions (a mismatch hangs the all-reduce).
    patience 1 on the validation AUROC, which the tiny data saturates early, stops it before its planned 20 epochs."""
    X_val = np.concatenate([make_images(6, seed=7), make_images(6, kind="anomaly", seed=8)])
    y_val = np.r_[np.ones(6, int), np.zeros(6, int)]
    cfg = DetectorConfig(**{**TINY_RAY, "epochs": 20, "batch_size": 20, "early_stopping": "val_auroc", "eval_every": 3,
                            "patience": 1})
    fit = fit_ddp(tiny_data["train"], cfg, num_workers=2, resources_per_worker={"CPU": 1},
                  storage_path=str(tmp_path / "ray"), name="es2", controller_failure_limit=0, X_val=X_val, y_val=y_val,
                  checkpoint_every=4)
    det = fit.detector
    measured = [h for h in det.history_ if "stop/val_auroc" in h]
    schedule, next_at = [], 3  # 2 global steps an epoch; a measurement at the first epoch end at or past next_at
    for epoch in range(20):
        if 2 * (epoch + 1) >= next_at:
            schedule.append(2 * (epoch + 1))
            next_at = (2 * (epoch + 1) // 3 + 1) * 3
    assert [h["steps"] for h in measured] == schedule[:len(measured)] and len(measured) >= 2
    assert len(det.history_) < 20 and det.steps_trained_ == det.history_[-1]["steps"] == measured[-1]["steps"]
    aurocs = [h["stop/val_auroc"] for h in measured]
    assert det.best_step_ == measured[int(np.argmax(aurocs))]["steps"]  # the kept weights: the first best measurement
    final = [torch.load(p, weights_only=True) for p in (tmp_path / "ray" / "es2").glob(f"checkpoint_*/{STATE_FILE}")]
    last = max(final, key=lambda st: st["epoch"])
    assert last["stopped_early"] and last["best_step"] == det.best_step_


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_one_worker_reproduces_local_fit_and_two_workers_track_it(ray_local, tiny_data, tmp_path):
    """1 worker = MultiTaskDetector.fit (same seeds and generator; losses equal up to thread-order rounding).
    2 workers: same init and global batches, but per-rank BatchNorm statistics and dropout/offset streams;
    the loss falls 10-25x in 4 epochs (since the jigsaw identity is a puzzle too; it was ~80x with the raw image),
    so only the first epoch (mostly at the shared init) is compared (10%), and both curves must end below 15% of
    their first epoch."""
    cfg = {**TINY_RAY, "epochs": 4}
    # A worker of 1 CPU runs 1 torch thread (Ray sets OMP_NUM_THREADS); the local reference must too:
    # oneDNN's NHWC (channels_last) kernels round differently with 2 threads, and 4 epochs amplify it to ~10%.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = MultiTaskDetector(**cfg).fit(tiny_data["train"])
    finally:
        torch.set_num_threads(threads)
    curves = {}
    for nw in (1, 2):
        det = train_detector_ddp(tiny_data["train"], DetectorConfig(**cfg), num_workers=nw,
                                 storage_path=str(tmp_path), name=f"w{nw}", controller_failure_limit=0)
        curves[nw] = np.array([h["loss"] for h in det.history_])
    ref = np.array([h["loss"] for h in local.history_])
    print("local", ref, "1 worker", curves[1], "2 workers", curves[2])
    assert np.allclose(curves[1], ref, rtol=2e-2)
    assert abs(curves[2][0] - curves[1][0]) < 0.1 * curves[1][0]
    assert curves[2][-1] < 0.15 * curves[2][0] and curves[1][-1] < 0.15 * curves[1][0]


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_killed_worker_resumes_from_checkpoint_and_rerun_by_name_resumes(ray_local, tiny_data, tmp_path):
    import ray.train

    from mtssad.distributed.faults import KillWorkerAfterEpoch

    X = np.concatenate([tiny_data["train"]] * 4)  # slower epochs: the kill lands mid-epoch
    cfg = DetectorConfig(**{**TINY_RAY, "epochs": 4})
    common = dict(num_workers=2, resources_per_worker={"CPU": 1}, storage_path=str(tmp_path / "ray"),
                  controller_failure_limit=0, checkpoint_every=1)  # a resumable checkpoint after every epoch
    # worker-level fault tolerance: rank 1 is SIGKILLed after epoch 0's report; the group restarts
    det = train_detector_ddp(X, cfg, name="ft", max_failures=2,
                             callbacks=[KillWorkerAfterEpoch(0, tmp_path / "killed-ft", rank=1)], **common)
    assert (tmp_path / "killed-ft").exists()
    starts = det.ray_run_["starts"]
    assert len(starts) == 2 and starts[0] == 0 and starts[1] >= 1, starts
    assert [h["epoch"] for h in det.history_] == [0, 1, 2, 3]
    # driver-level restore: no retries -> the run fails; running the same name again resumes it
    with pytest.raises(ray.train.TrainingFailedError):
        train_detector_ddp(X, cfg, name="again", max_failures=0,
                           callbacks=[KillWorkerAfterEpoch(1, tmp_path / "killed-again", rank=1)], **common)
    det2 = train_detector_ddp(X, cfg, name="again", max_failures=0, **common)
    assert det2.ray_run_["starts"][0] == 0 and det2.ray_run_["starts"][1] >= 2, det2.ray_run_["starts"]
    assert [h["epoch"] for h in det2.history_] == [0, 1, 2, 3]
    # a finished run rerun by name is not retrained: same weights
    det3 = train_detector_ddp(X, cfg, name="again", max_failures=0, **common)
    X_test = tiny_data["test_anomaly"]
    assert np.allclose(det3.score_samples(X_test), det2.score_samples(X_test))


@pytest.mark.ray
@pytest.mark.timeout(60)
def test_a_trial_without_gpus_keeps_its_detector_copy_on_cpu(ray_local):
    """Ray 2.60 shows every GPU to tasks that reserved none: device="auto" must not pick one there."""
    from mtssad.distributed.train import _driver_device, _gpus_reserved_here

    @ray_local.remote(num_cpus=0.5)
    def inside():
        return _gpus_reserved_here(), _driver_device("auto"), _driver_device("cpu")

    assert ray_local.get(inside.remote()) == (0.0, "cpu", "cpu")
    assert _gpus_reserved_here() is None  # the test process is a driver, not a Ray worker
