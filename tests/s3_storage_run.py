"""A small Tune run and a Ray Train run whose storage is an s3:// URI (the S3 test's driver).

    python tests/s3_storage_run.py s3://bucket/prefix     # AWS_* env points at the S3 API

Both report a checkpoint, so the storage gets experiment state, results and checkpoint files.
Runs in its own process with a private 2-CPU Ray (loopback), which it shuts down.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path


def _trial(config: dict) -> None:
    from ray import tune

    with tempfile.TemporaryDirectory() as d:
        Path(d, "state.json").write_text(json.dumps(config))
        tune.report({"score": float(config["x"])}, checkpoint=tune.Checkpoint.from_directory(d))


def _train_loop(config: dict) -> None:
    import ray.train

    with tempfile.TemporaryDirectory() as d:
        Path(d, "model.txt").write_text("weights")
        ray.train.report({"loss": 0.5}, checkpoint=ray.train.Checkpoint.from_directory(d))


def main(storage_path: str) -> dict:
    import ray
    from ray import train, tune
    from ray.train.torch import TorchTrainer

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        tuned = tune.Tuner(_trial, param_space={"x": tune.grid_search([1, 2])},
                           run_config=tune.RunConfig(name="tune_s3", storage_path=storage_path, verbose=0)).fit()
        trained = TorchTrainer(_train_loop, scaling_config=train.ScalingConfig(num_workers=1),
                               run_config=train.RunConfig(name="train_s3", storage_path=storage_path)).fit()
    finally:
        ray.shutdown()
    return {"tune_errors": len(tuned.errors), "tune_scores": sorted(r.metrics["score"] for r in tuned),
            "train_checkpoint": trained.checkpoint.path if trained.checkpoint else None}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))  # the result this command exists to print
