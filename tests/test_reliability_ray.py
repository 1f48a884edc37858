"""Faults under Ray: a Ray Data scoring actor dies mid-way; a Train checkpoint is corrupt or from another config.

The worker-kill and driver-restore drills of Ray Train and the Tune sweep resume are in
tests/test_ray_train.py and tests/test_ray_tune.py (slow); docs/reliability.md lists them all.
"""

import os
from pathlib import Path

import numpy as np
import pytest

import mtssad.distributed.data as rd
from conftest import make_images
from mtssad import DetectorConfig
from ray_fixtures import TINY_RAY, ray_local  # noqa: F401


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_ray_data_scoring_survives_an_actor_killed_mid_way(ray_local, fitted_tiny, tmp_path, monkeypatch):
    """The first actor hard-exits (os._exit, as a crash or OOM kill would) during its 3rd batch, once (marker
    file). Ray Data's actor pools default to max_restarts=-1 / max_task_retries=-1 (Ray 2.60), so the actor is
    restarted and its task rerun: every image is scored exactly once and the scores equal the local ones."""
    path = fitted_tiny.save(tmp_path / "det.pt")
    marker = str(tmp_path / "actor-killed")

    class DyingScorer(rd.DetectorScorer):  # local class: pickled by value, so the actors can rebuild it
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.calls = 0

        def __call__(self, batch):
            self.calls += 1
            if self.calls == 3 and not os.path.exists(marker):
                Path(marker).write_text(str(os.getpid()))
                os._exit(1)
            return super().__call__(batch)

    monkeypatch.setattr(rd, "DetectorScorer", DyingScorer)
    X = np.concatenate([make_images(30, seed=11), make_images(30, kind="anomaly", seed=12)])
    df = rd.score_with_ray_data(path, X, np.r_[np.ones(30, int), np.zeros(30, int)], num_actors=1, batch_size=4,
                                block_size=10, num_cpus=0.5, out_dir=tmp_path / "scores")
    assert os.path.exists(marker), "the fault was not injected"
    assert len(df) == len(X) and not df["index"].duplicated().any()
    assert set(df["index"]) == set(range(len(X)))
    assert np.allclose(df["score"].to_numpy(), fitted_tiny.score_samples(X), atol=1e-6)
    import pandas as pd

    assert sorted(pd.read_parquet(tmp_path / "scores")["index"]) == list(range(len(X)))


def _corrupt(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_train_resume_refuses_other_config_and_names_a_corrupt_checkpoint(ray_local, tiny_data, tmp_path):
    """A finished run rerun by name with k, grid or backbone changed is refused with the fields named (not
    resumed into wrong weights); a truncated checkpoint state file is reported by path."""
    from mtssad.distributed.train import STATE_FILE, CheckpointError, train_detector_ddp

    X = tiny_data["train"]
    common = dict(num_workers=1, storage_path=str(tmp_path / "ray"), name="run", max_failures=0,
                  controller_failure_limit=0)
    cfg = {**TINY_RAY, "epochs": 1}
    train_detector_ddp(X, DetectorConfig(**cfg), **common)
    with pytest.raises(CheckpointError, match=r"different config \(k: 3 in the checkpoint, 2 in this run\)") as e:
        train_detector_ddp(X, DetectorConfig(**{**cfg, "k": 2}), **common)
    assert "\n" not in str(e.value) and "run/checkpoint_" in str(e.value)
    with pytest.raises(CheckpointError, match=r"backbone: 'wrn-10-1' in the checkpoint, 'wrn-16-1'.*"
                                              r"grid: \[2, 2\] in the checkpoint, \[3, 2\] in this run"):
        train_detector_ddp(X, DetectorConfig(**{**cfg, "grid": (3, 2), "backbone": "wrn-16-1"}), **common)
    states = sorted((tmp_path / "ray" / "run").glob(f"checkpoint_*/{STATE_FILE}"))
    assert states
    for s in states:
        _corrupt(s)
    with pytest.raises(CheckpointError, match=rf"checkpoint_.*{STATE_FILE}: not a readable mtssad training checkpoint") as e:
        train_detector_ddp(X, DetectorConfig(**cfg), **common)
    assert "\n" not in str(e.value) and "Traceback" not in str(e.value)  # one clean line, not a worker traceback
