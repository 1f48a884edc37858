"""Ray job: the CUB-200 fine-grained sweep: 200 normal classes x jigsaw grid x k, selected on validation.

    ray job submit --address http://127.0.0.1:8265 --working-dir . --runtime-env ray_jobs/runtime_env.yaml -- \
        python ray_jobs/cub200_sweep.py --data-root /mnt/mtssad/data --storage-path s3://$BUCKET/mtssad/runs \
        --out /mnt/mtssad/results/cub200 --use-gpu --gpus-per-trial 0.5

(cluster.yaml's layout; docs/aws.md.)

Defaults follow the paper (wrn-16-4, 32 px, grids 2x2 3x3 4x4, k in 3 6 12, >= 300 optimizer steps, the
fine-grained budget of docs/METHOD.md: --min-steps defaults to DetectorConfig's):
200 x (9 + 1) = 2000 configs in 200 class trials (the 9 jigsaw configs and, with --task-search, the
geometric heads alone). Each class trial asks Tune for its CPUs and GPU share
(--gpus-per-trial 0.5 packs two classes per GPU) and trains its configs one after another on it;
trials waiting for a GPU are demand the autoscaler sees, so no --max-concurrent-trials is needed.
On a multi-node cluster --storage-path must be shared (s3:// or NFS/EFS): the trials' small
checkpoints (finished rows, the best config's test scores) go there, and --resume after an
interruption continues each unfinished class at its next config. A class trial whose spot node is
reclaimed restarts on another node at its next config (--max-retries, default 3); if the sweep still
ends incomplete the job resumes it by itself (--auto-resume, default 2), then publishes what finished,
its report marked incomplete, and exits 6. Class trials train where Tune places them: with --use-gpu
they need GPU nodes (gpu_worker spot, or gpu_ondemand when spot capacity is short), never the head.
"""

import argparse
import sys

from mtssad.flags import add_data_args, add_method_args, add_output_args, log_level_of
from mtssad.config import DetectorConfig
from mtssad.distributed.cli import (add_auto_resume_arg, add_sweep_args, finish_ray_args, run_sweep_resuming,
                                    sweep_config_from_args)
from mtssad.logs import configure as configure_logging


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(p, dataset_default="cub200")
    add_method_args(p)
    add_output_args(p, "runs/cub200_sweep")
    add_sweep_args(p)
    add_auto_resume_arg(p)
    # the paper's backbone and epochs (DetectorConfig's, not the command line's CPU-sized ones) and its search
    p.set_defaults(backbone=DetectorConfig.backbone, epochs=DetectorConfig.epochs, grid_search=[(2, 2), (3, 3), (4, 4)],
                   k_search=[3, 6, 12], experiment_name="cub200")
    return finish_ray_args(p.parse_args(argv))


def main(argv=None) -> int:
    args = parse_args(argv)
    configure_logging(log_level_of(args))  # -v/-q/--log-level (from add_output_args)
    # resumes an incomplete sweep by itself (--auto-resume times); results, scores and report ->
    # STORAGE/<experiment>-results, also when it stays incomplete (report marked so, exit 6)
    return run_sweep_resuming(args, sweep_config_from_args(args), resumes=args.auto_resume)


if __name__ == "__main__":
    sys.exit(main())
