import os

import numpy as np
import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray binds to loopback only
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

TINY = dict(backbone="wrn-10-1", grid=(2, 2), k=3, margin=1, epochs=2, min_steps=0, batch_size=8, progress=False,
            device="cpu")  # min_steps=0: tests fit in seconds; the budget rule has its own test


def make_images(n, *, kind="normal", side=16, seed=0):
    """uint8 (n, 1, side, side): 'normal' = a bright bar in the upper half, 'anomaly' = uniform noise."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 40, size=(n, 1, side, side)).astype(np.uint8)
    if kind == "normal":
        for i in range(n):  # fixture construction only
            r = rng.integers(2, side // 2 - 2)
            x[i, 0, r:r + 3, 2:side - 2] = 220
    else:
        x = rng.integers(0, 256, size=(n, 1, side, side)).astype(np.uint8)
    return x


@pytest.fixture(scope="session")
def tiny_data():
    return {
        "train": make_images(40, seed=1),
        "test_normal": make_images(12, seed=2),
        "test_anomaly": make_images(12, kind="anomaly", seed=3),
    }


@pytest.fixture(scope="session")
def fitted_tiny(tiny_data):
    from mtssad import MultiTaskDetector

    return MultiTaskDetector(**TINY).fit(tiny_data["train"])
