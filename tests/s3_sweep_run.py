"""Drivers of the S3 sweep test: an interrupted `mtssad sweep`, and Ray Data scoring, on s3:// storage.

    python tests/s3_sweep_run.py crash 1 -- sweep --storage-path s3://bucket/p ...   # the fault drill
    python tests/s3_sweep_run.py score s3://bucket/p                                    # Ray Data on S3

crash N: `mtssad sweep ARGS` exactly as the command runs it, but every class trial's first start
raises after N configs (`SweepConfig(crash_after_configs=N)`, the engine's fault drill) and Tune does not
retry it (--max-retries 0): the sweep ends incomplete, its finished configs in S3. Prints the exit
status as JSON; the test then resumes with the plain `mtssad sweep ... --resume`.

score URI: fits a tiny detector, saves it to URI/detectors/c0.pt, and scores images with
`score_with_ray_data` reading the detector from there (each actor, through pyarrow) and writing the
scores to URI/scores/c0 (Parquet); prints how they compare with the local `score_samples`.
AWS_* in the environment point pyarrow at the S3 API; a private 2-CPU Ray (loopback) is used.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace


def crash(after: int, argv: list[str]) -> dict:
    import mtssad.distributed.tune as tune_mod
    from mtssad.cli import main

    real_run_sweep = tune_mod.run_sweep
    tune_mod.run_sweep = lambda dataset, config: real_run_sweep(dataset, replace(config, crash_after_configs=after))
    return {"exit": main([*argv, "--max-retries", "0"])}  # Tune does not restart the crashed trials


def score(uri: str) -> dict:
    import numpy as np
    import pandas as pd
    import ray

    from mtssad.data import load_dataset
    from mtssad.detector import MultiTaskDetector
    from mtssad.distributed.data import score_with_ray_data
    from mtssad.distributed.storage import filesystem, join_uri, write_bytes

    ds = load_dataset("digits", side=16)
    X = ds.train_images[ds.train_labels == 0][:64]  # (64, C, 16, 16) uint8
    det = MultiTaskDetector(backbone="wrn-10-1", epochs=1, min_steps=0, batch_size=16, grid=(2, 2), k=3,
                            device="cpu", progress=False).fit(X)
    X_test = ds.test_images[:40]
    local = det.score_samples(X_test)
    det_uri = write_bytes(join_uri(uri, "detectors", "c0.pt"), det.to_bytes())
    out_dir = join_uri(uri, "scores", "c0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        df = score_with_ray_data(det_uri, X_test, labels=ds.test_labels[:40], num_actors=1, batch_size=16,
                                 out_dir=out_dir)
    finally:
        ray.shutdown()
    fs, path = filesystem(out_dir)
    written = pd.read_parquet(path, filesystem=fs).sort_values("index").reset_index(drop=True)
    return {"detector": det_uri, "rows": len(df), "written_rows": len(written),
            "max_abs_diff": float(np.max(np.abs(df["score"].to_numpy() - local))),
            "written_max_abs_diff": float(np.max(np.abs(written["score"].to_numpy() - local)))}


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "crash":
        sep = sys.argv.index("--")
        result = crash(int(sys.argv[2]), sys.argv[sep + 1:])
    elif mode == "score":
        result = score(sys.argv[2])
    else:
        raise SystemExit(f"unknown mode {mode!r}; expected crash or score")
    print(json.dumps(result))  # the result this command exists to print
