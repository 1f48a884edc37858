"""Ray job: one-vs-all evaluation of one method configuration, every normal class a Tune trial.

    ray job submit --address http://127.0.0.1:8265 --working-dir . --runtime-env ray_jobs/runtime_env.yaml -- \
        python ray_jobs/one_vs_all.py --dataset cifar10 --data-root /mnt/mtssad/data --use-gpu \
        --storage-path s3://$BUCKET/mtssad/runs --out /mnt/mtssad/results/cifar10
    python ray_jobs/one_vs_all.py --local --dataset digits --classes 0 --epochs 1 --out runs/smoke

Joins the running cluster ($RAY_ADDRESS, set by `ray job submit`); --local starts a private 2-CPU Ray.
Each class is a Tune class trial that trains on its own device (--cpus-per-trial, --use-gpu
--gpus-per-trial; with --use-gpu each class trains on its own GPU, so the ten cifar10 classes run on
up to ten GPU nodes at once; --num-workers 2+ trains with Ray Train DDP instead and then needs
--max-concurrent-trials on a cluster that starts with no GPU) and is scored on the
whole test split; rows go to OUTDIR/results.parquet (mtssad.results.ResultsStore), copied to
STORAGE/one_vs_all-results when --storage-path is elsewhere (s3://... on a multi-node cluster).
"""

import argparse
import sys

from mtssad.flags import add_data_args, add_method_args, add_output_args, log_level_of
from mtssad.distributed.cli import (add_auto_resume_arg, add_ray_args, finish_ray_args, run_sweep_resuming,
                                    sweep_config_from_args)
from mtssad.logs import configure as configure_logging


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(p)
    add_method_args(p)
    add_output_args(p, "runs/one_vs_all")
    add_ray_args(p)
    p.add_argument("--experiment-name", default="one_vs_all", help="fixed Tune experiment name (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="finish an interrupted run of the same name")
    add_auto_resume_arg(p)
    return finish_ray_args(p.parse_args(argv))


def main(argv=None) -> int:
    args = parse_args(argv)
    configure_logging(log_level_of(args))  # -v/-q/--log-level (from add_output_args)
    # resumes an incomplete run by itself (--auto-resume times); results, scores and report ->
    # STORAGE/<experiment>-results, also when it stays incomplete (report marked so, exit 6)
    config = sweep_config_from_args(args, grids=[tuple(args.grid)], ks=[args.k])  # one config: --grid and --k
    return run_sweep_resuming(args, config, resumes=args.auto_resume)


if __name__ == "__main__":
    sys.exit(main())
