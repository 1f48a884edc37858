"""The GPU sweep the autoscaling test runs against the simulated cluster, as one swappable function.

    RAY_ADDRESS=127.0.0.1:PORT python tests/cluster_sweep.py --trials 2 --storage-path s3://bucket/runs

Each trial asks Tune for {"CPU": 1, "GPU": 1}, as issue 13's class trials do, so the autoscaler sees
GPU demand and starts GPU nodes; each row says which node and GPU the trial ran on. Once the
class-trial engine (issue 13) is merged, `run_gpu_sweep` can call
mtssad.distributed.run_sweep(dataset, classes=[0, 1], grids=["2x2"], ks=[3], params=tiny,
use_gpu=True, gpus_per_trial=1, storage_path=..., name=...) instead, provided that (a) its rows
carry `node_id` (ray.get_runtime_context().get_node_id() in the class trial) and (b) a trial given
a fake GPU trains on the CPU when torch sees no CUDA (its trial_device() picks "cuda" from the
assigned GPU alone).
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def gpu_probe(config: dict) -> dict:
    """A trial: hold the GPU briefly (so trials overlap and need separate nodes), say where it ran."""
    import ray

    time.sleep(config["hold_s"])
    return {"trial": config["i"], "node_id": ray.get_runtime_context().get_node_id(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}


def run_gpu_sweep(*, n_trials: int, storage_path: str, name: str = "gpu_sweep", hold_s: float = 3.0) -> list[dict]:
    """n_trials GPU trials on the connected cluster; their rows (trial, node_id, gpu_ids)."""
    from ray import tune

    tuner = tune.Tuner(
        tune.with_resources(gpu_probe, {"CPU": 1, "GPU": 1}),
        param_space={"i": tune.grid_search(list(range(n_trials))), "hold_s": hold_s},
        run_config=tune.RunConfig(name=name, storage_path=storage_path, verbose=0),
    )
    results = tuner.fit()
    if results.errors:
        raise RuntimeError(f"{len(results.errors)} trial(s) failed: {results.errors[0]!r}")
    keys = ("trial", "node_id", "gpu_ids")
    return sorted(({k: r.metrics[k] for k in keys} for r in results), key=lambda row: row["trial"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=2)
    p.add_argument("--storage-path", required=True)
    p.add_argument("--name", default="gpu_sweep")
    p.add_argument("--hold-s", type=float, default=3.0)
    a = p.parse_args(argv)
    import ray

    ray.init(log_to_driver=False)  # RAY_ADDRESS: the simulated cluster
    try:
        rows = run_gpu_sweep(n_trials=a.trials, storage_path=a.storage_path, name=a.name, hold_s=a.hold_s)
        head = ray.get_runtime_context().get_node_id()
    finally:
        ray.shutdown()
    print(json.dumps({"driver_node_id": head, "rows": rows}))  # the result this command exists to print
    return 0


if __name__ == "__main__":
    sys.exit(main())
