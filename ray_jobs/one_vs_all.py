"""Ray job: one-vs-all evaluation of one method configuration, every normal class a Tune trial.

    ray job submit --address http://<head>:8265 --working-dir . -- \
        python ray_jobs/one_vs_all.py --dataset digits --classes 0 1 --epochs 5 --out /shared/runs/digits
    python ray_jobs/one_vs_all.py --local --dataset digits --classes 0 --epochs 1 --out runs/smoke

Each class is a Tune class trial that trains on its own device (--cpus-per-trial, --use-gpu
--gpus-per-trial; --num-workers 2+ trains with Ray Train DDP instead) and is scored on the
whole test split; rows go to OUTDIR/results.parquet (mtssad.results.ResultsStore).
"""

import argparse
import sys

from mtssad.cli import add_data_args, add_method_args, add_output_args
from mtssad.distributed.cli import add_ray_args, finish_ray_args, run_sweep_from_args


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(p)
    add_method_args(p)
    add_output_args(p, "runs/one_vs_all")
    add_ray_args(p)
    p.add_argument("--experiment-name", default="one_vs_all", help="fixed Tune experiment name (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="finish an interrupted run of the same name")
    return finish_ray_args(p.parse_args(argv))


def main(argv=None) -> int:
    args = parse_args(argv)
    run_sweep_from_args(args, grids=[f"{args.grid[0]}x{args.grid[1]}"], ks=[args.k])
    return 0


if __name__ == "__main__":
    sys.exit(main())
