"""Ray job: out-of-distribution detection: train on every class of one data set, score another's test set.

    ray job submit --address http://127.0.0.1:8265 --working-dir . --runtime-env ray_jobs/runtime_env.yaml -- \
        python ray_jobs/ood.py --dataset cifar10 --ood-dataset svhn --data-root /mnt/mtssad/data --methods rotnet ours \
        --use-gpu --num-workers 2 --score-actors 2 --storage-path s3://$BUCKET/mtssad/runs --out /mnt/mtssad/results/ood

Training: Ray Train (DDP) on all of --dataset's training images, finished on rank 0. Scoring: the
detector (sent through the object store) on a Ray Data actor pool over the in-distribution test set
(normal) + the OOD test set (anomalies). Detectors and Ray Data's Parquet scores go to the run's
storage (--storage-path: s3://... or a shared mount on a multi-node cluster); rows and per-image
scores to OUTDIR, which is then copied to STORAGE/ood-results.
"""

import argparse
import os
import sys

from mtssad.flags import add_data_args, add_method_args, add_output_args, log_level_of
from mtssad.distributed.cli import add_ray_args, finish_ray_args, publish_results, storage_of
from mtssad.distributed.session import ray_session
from mtssad.logs import configure as configure_logging


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(p, dataset_default="cifar10")
    p.add_argument("--ood-dataset", required=True, help="the out-of-distribution data set (e.g. svhn)")
    p.add_argument("--ood-data-root", default=None, help="its root (default: --data-root)")
    add_method_args(p)
    add_output_args(p, "runs/ood")
    add_ray_args(p)
    p.add_argument("--score-actors", type=int, default=1, help="Ray Data scoring actors (default: %(default)s)")
    p.add_argument("--score-gpus", type=float, default=None,
                   help="GPUs per scoring actor (default: 1 with --use-gpu, else 0)")
    return finish_ray_args(p.parse_args(argv))


def main(argv=None) -> int:
    import numpy as np

    from mtssad.flags import load_from_args, method_params
    from mtssad.distributed.data import score_with_ray_data
    from mtssad.distributed.storage import join_uri, write_bytes
    from mtssad.distributed.train import ddp_workers, train_detector_ddp
    from mtssad.methods import METHODS, make_method
    from mtssad.metrics import anomaly_metrics, auroc
    from mtssad.protocols import PROTOCOL_PARAMS, describe_config, ood_data_identity, result_row
    from mtssad.results import ResultsStore, file_name, run_name

    args = parse_args(argv)
    configure_logging(log_level_of(args))  # -v/-q/--log-level (from add_output_args)
    params = method_params(args)
    ds_in = load_from_args(args)
    ds_out = load_from_args(args, name=args.ood_dataset, root=args.ood_data_root or args.data_root,
                            channels=ds_in.train_images.shape[1])
    X_test = np.concatenate([ds_in.test_images, ds_out.test_images])
    is_normal = np.r_[np.ones(len(ds_in.test_images), bool), np.zeros(len(ds_out.test_images), bool)]
    store = ResultsStore(args.out)
    storage = storage_of(args)
    score_gpus = args.score_gpus if args.score_gpus is not None else (1.0 if args.use_gpu else 0.0)
    with ray_session(args.ray_address, local=args.local, num_cpus=args.num_cpus, storage_path=storage):
        for m in args.methods:
            if not METHODS[m].neural:
                print(f"{m}: not a neural method; use `mtssad ood` for it")
                continue
            det = make_method(m, **{**params, "seed": args.seed, **PROTOCOL_PARAMS})  # as `mtssad ood`
            # the Train run (resumed by name) and the detector file are this config's and data selection's only
            name = file_name(["ood", ds_in.name, m, f"s{args.seed}"],
                             [describe_config(m, params, det)["config"], ood_data_identity(ds_in, ds_out)])
            workers = args.num_workers or max(1, ddp_workers(None, len(ds_in.train_images)))  # left open: by size
            det = train_detector_ddp(ds_in.train_images, det, num_workers=workers, use_gpu=args.use_gpu,
                                     storage_path=storage, name=name, max_failures=args.max_failures)
            path = write_bytes(join_uri(storage, "detectors", f"{name}.pt"), det.to_bytes())
            df = score_with_ray_data(det, X_test, is_normal.astype(int), num_actors=args.score_actors,
                                     num_gpus=score_gpus, out_dir=join_uri(storage, "scores", name))
            metrics = anomaly_metrics(is_normal, df["score"].to_numpy())
            metrics.update({f"auroc_head_{c[6:]}": auroc(is_normal, df[c].to_numpy())
                            for c in df.columns if c.startswith("score_")})
            row = result_row(m, params, det, metrics=metrics, dataset=f"{ds_in.name}-vs-{ds_out.name}",
                             normal_class="all", seed=args.seed, split="ood", data=ood_data_identity(ds_in, ds_out),
                             n_train=len(ds_in.train_images), n_test=len(X_test), train_seconds=det.train_seconds_)
            store.write_scores(run_name(row), df.rename(columns={"label": "is_normal"}))
            store.append([row])
            print(f"{row['dataset']} / {m}: AUROC {100 * row['auroc']:.1f}; detector {path}", flush=True)
    publish_results(args, name="ood")
    print(f"results: {os.path.join(args.out, 'results.parquet')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
