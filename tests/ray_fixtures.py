"""Session-scoped local Ray for the `ray` tests: import with `from ray_fixtures import ray_local  # noqa: F401`.

Loopback only (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, set in conftest.py), 2 logical CPUs, no
dashboard, and fail-fast Train worker-group starts. The fixture always calls ray.shutdown(),
which stops only the processes this ray.init started (never `ray stop`).
"""

import os

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "20")  # an unschedulable group fails, never hangs
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

TINY_RAY = dict(backbone="wrn-10-1", grid=(2, 2), k=3, margin=1, epochs=2, min_steps=0, batch_size=8,
                progress=False, device="cpu")  # min_steps=0: exactly `epochs` epochs on tiny data


def _start_local_ray(ray) -> None:
    # TRAIN_DRIVER: 1 lets a test cap Tune trial drivers to one at a time, also on resume (RAY_NOTES §1)
    ray.init(address="local", num_cpus=2, resources={"TRAIN_DRIVER": 1}, include_dashboard=False,
             log_to_driver=False)
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = True


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    _start_local_ray(ray)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture()
def no_ray_in_this_process():
    """For a test whose child process starts a Ray head with a job server: this process's Ray (the session's,
    if an earlier test started it) is shut down for the test and started again after it. Two Rays on one
    machine both bind the dashboard agent's fixed port 52365 (ray.init cannot move it); the second agent dies
    and that head never takes a job ("No available agent to submit job")."""
    ray = pytest.importorskip("ray")
    was_running = ray.is_initialized()
    if was_running:
        ray.shutdown()
    try:
        yield
    finally:
        if was_running:
            _start_local_ray(ray)
