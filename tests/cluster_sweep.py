"""The class-trial sweep the autoscaling test runs against the simulated cluster (the test's driver).

    RAY_ADDRESS=127.0.0.1:PORT python tests/cluster_sweep.py --classes 0 1 --storage-path s3://bucket/runs

The real `run_sweep` (mtssad.distributed.tune), tiny: digits at side 16, one config (2x2, k 3) per
class, wrn-10-1, 1 epoch, no step floor. Each class trial asks Tune for {"CPU": 1, "GPU": 1}
(use_gpu, gpus_per_trial=1), so with a GPU-less head the autoscaler sees GPU demand and starts GPU
nodes. The fake GPUs have no CUDA behind them: without cpu_fallback the trial would fail at once
(`resources.trial_device`); asked for, it logs a warning and trains on the CPU. Prints the rows' node ids,
devices and counters as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys

TINY = dict(backbone="wrn-10-1", epochs=1, min_steps=0, batch_size=16)


def run_gpu_sweep(*, classes: list[int], storage_path: str, name: str = "gpu_sweep") -> list[dict]:
    """One config per class on the connected cluster, each class trial on 1 (fake) GPU; the rows."""
    from mtssad.data import load_dataset
    from mtssad.distributed.tune import run_sweep
    from mtssad.distributed.sweep_config import SweepConfig

    ds = load_dataset("digits", side=16)
    rows = run_sweep(ds, SweepConfig(classes=classes, grids=["2x2"], ks=[3], params=TINY, use_gpu=True,
                                     gpus_per_trial=1, storage_path=storage_path, name=name,
                                     cpu_fallback=True))  # fake GPUs: asked-for CPU fallback
    keys = ("normal_class", "grid", "k", "node_id", "device", "trial_id", "trial_start", "fit_index", "selected",
            "val_auroc", "auroc")
    return [{k: r.get(k) for k in keys} for r in rows]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, nargs="+", default=[0, 1])
    p.add_argument("--storage-path", required=True)
    p.add_argument("--name", default="gpu_sweep")
    a = p.parse_args(argv)
    import ray

    ray.init(log_to_driver=False)  # RAY_ADDRESS: the simulated cluster
    try:
        rows = run_gpu_sweep(classes=a.classes, storage_path=a.storage_path, name=a.name)
        head = ray.get_runtime_context().get_node_id()
    finally:
        ray.shutdown()
    print(json.dumps({"driver_node_id": head, "rows": rows}, default=str))  # the result this command exists to print
    return 0


if __name__ == "__main__":
    sys.exit(main())
