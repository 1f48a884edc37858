"""Ray job: the CUB-200 fine-grained sweep: 200 normal classes x jigsaw grid x k, selected on validation.

    ray job submit --address http://<head>:8265 --working-dir . -- \
        python ray_jobs/cub200_sweep.py --data-root ~/data/CUB_200_2011 --use-gpu --gpus-per-trial 0.5 \
        --max-concurrent-trials 16 --storage-path s3://<bucket>/mtssad-ray --out ~/results/cub200

Defaults follow the paper (wrn-16-4, 32 px, grids 2x2 3x3 4x4, k in 3 6 12): 200 x 9 = 1800
trials. On a multi-node cluster --storage-path must be shared (s3:// or NFS/EFS): every trial's
checkpoints go there, and --resume after an interruption reruns only unfinished trials.
Partial GPUs (--gpus-per-trial 0.5) pack two small trials per GPU. --max-concurrent-trials should
be (GPUs the autoscaler may start) / gpus-per-trial: the workers' placement groups are outside Tune's
accounting. Drivers can be pinned to the on-demand head with --driver-resource TRAIN_DRIVER.
"""

import argparse
import sys

from mtssad.cli import add_data_args, add_method_args, add_output_args
from mtssad.distributed.cli import add_sweep_args, ray_session


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(p, dataset_default="cub200")
    add_method_args(p)
    add_output_args(p, "runs/cub200_sweep")
    add_sweep_args(p)
    p.add_argument("--driver-resource", default=None, help="custom resource every trial driver takes 1 of (e.g. TRAIN_DRIVER)")
    p.add_argument("--local", action="store_true", help="start a small local Ray (2 CPUs unless --num-cpus)")
    p.set_defaults(backbone="wrn-16-4", epochs=15, grid_search=["2x2", "3x3", "4x4"], k_search=[3, 6, 12],
                   experiment_name="cub200")
    args = p.parse_args(argv)
    if args.local and args.num_cpus is None:
        args.num_cpus = 2
    return args


def main(argv=None) -> int:
    import os

    from mtssad.cli import load_from_args, method_params
    from mtssad.data import resolve_classes
    from mtssad.distributed.tune import classes_summary, run_sweep

    args = parse_args(argv)
    ds = load_from_args(args)
    storage = args.storage_path or os.path.join(os.path.abspath(args.out), "ray")
    print(f"{ds.name}: {len(ds.class_names)} classes, {len(ds.train_images)} train / {len(ds.test_images)} test", flush=True)
    with ray_session(args.ray_address, local=args.local or not args.ray_address, num_cpus=args.num_cpus):
        rows = run_sweep(
            ds, classes=resolve_classes(ds, args.classes), methods=args.methods, grids=args.grid_search,
            ks=args.k_search, params=method_params(args), seed=args.seed, val_fraction=args.val_fraction,
            num_workers=args.num_workers, use_gpu=args.use_gpu, cpus_per_trial=args.cpus_per_trial,
            gpus_per_trial=args.gpus_per_trial, max_concurrent_trials=args.max_concurrent_trials,
            driver_resources={args.driver_resource: 1} if args.driver_resource else None,
            storage_path=storage, name=args.experiment_name, resume=args.resume, max_failures=args.max_failures,
            out=args.out)
    print(classes_summary(rows))
    print(f"{len(rows)} rows in {os.path.join(args.out, 'results.parquet')}; Tune state and checkpoints in {storage}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
