"""What a sweep's class trials ask Tune for, and how many run at once.

In-process class trials (the default, num_workers <= 1): a trial trains on its own device, so
it asks Tune for exactly what it uses, `{"CPU": c, "GPU": g}` through `tune.with_resources`
(fractional g: several small classes share one GPU). Tune then schedules trials by resources,
and trials waiting for a GPU are resource demand the autoscaler sees: no concurrency cap is
needed, on a cluster that starts with 0 GPUs too.

DDP class trials (num_workers >= 2): the trial is a 1-CPU driver whose `TorchTrainer` workers
get their own placement group OUTSIDE Tune's accounting (RAY_NOTES §1, issue #54305), so
concurrency is capped here by what the cluster's CPUs (and GPUs) allow.
"""

from __future__ import annotations

import logging

IN_PROCESS, DDP = "in_process", "ddp"

log = logging.getLogger(__name__)


def class_trial_resources(*, num_workers: int, use_gpu: bool, cpus_per_trial, gpus_per_trial, driver_cpus: float,
                      driver_resources: dict | None, max_concurrent_trials, cluster: dict,
                      ray_train: bool = False) -> dict:
    """Tune resources of one class trial, its DDP workers' resources, and the trial concurrency.

    ray_train: train every config with Ray Train even with 1 worker (the pre-class-trial cost per
    config: benchmarks/sweep_overhead.py; or to check a cluster's Train set-up).
    Returns {"mode", "trial_resources", "resources_per_worker", "max_concurrent_trials", "note"};
    max_concurrent_trials None = as many as Tune can place (in-process trials).
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1; got {num_workers}")
    extra = dict(driver_resources or {})
    if extra and use_gpu and num_workers < 2 and not ray_train:
        raise ValueError(
            f"--driver-resource {', '.join(extra)} with in-process GPU class trials: each trial would ask for "
            f"CPU + GPU + {', '.join(extra)} on one node, and no node type offers both (cluster.yaml: "
            f"{', '.join(extra)} on the CPU head, GPUs on the workers), so no trial would ever start. In-process "
            "trials train where they run: drop --driver-resource (or use it with --num-workers 2+, where the "
            "trial is a 1-CPU driver and its DDP workers take the GPUs)")
    if num_workers >= 2 or ray_train:
        ddp = ddp_trial_resources(num_workers=num_workers, use_gpu=use_gpu, cpus_per_trial=cpus_per_trial,
                              gpus_per_trial=gpus_per_trial, driver_cpus=driver_cpus,
                              max_concurrent_trials=max_concurrent_trials, cluster=cluster)
        return {"mode": DDP, "trial_resources": {"CPU": driver_cpus, **extra}, **ddp}
    cpus = 1.0 if cpus_per_trial is None else float(cpus_per_trial)
    if cpus <= 0:
        raise ValueError(f"cpus_per_trial must be > 0 (a trial trains in its own process); got {cpus_per_trial}")
    total_cpu = float(cluster.get("CPU", 0))
    if total_cpu and cpus > total_cpu:
        raise ValueError(f"cpus_per_trial={cpus} is more than the cluster's {total_cpu:g} CPUs: no trial could start")
    res = {"CPU": cpus, **extra}
    note = None
    if use_gpu:
        gpus = 1.0 if gpus_per_trial is None else float(gpus_per_trial)
        if not 0 < gpus:
            raise ValueError(f"gpus_per_trial must be > 0 with use_gpu; got {gpus_per_trial}")
        if gpus > 1 and gpus != int(gpus):
            raise ValueError(f"gpus_per_trial above 1 must be a whole number; got {gpus}")
        res["GPU"] = gpus
        if not cluster.get("GPU"):
            note = ("the cluster has no GPU right now: class trials wait for GPU nodes (an autoscaler sees their "
                    "demand and starts them; without one they never start)")
    elif gpus_per_trial:
        raise ValueError(f"gpus_per_trial={gpus_per_trial} needs use_gpu (--use-gpu)")
    return {"mode": IN_PROCESS, "trial_resources": res, "resources_per_worker": None,
            "max_concurrent_trials": None if max_concurrent_trials is None else int(max_concurrent_trials),
            "note": note}


def ddp_trial_resources(*, num_workers: int, use_gpu: bool, cpus_per_trial, gpus_per_trial, driver_cpus: float,
                   max_concurrent_trials, cluster: dict) -> dict:
    """DDP trials: worker resources and trial concurrency that fit the cluster (fractional CPUs on small machines).

    cpus_per_trial / gpus_per_trial: resources of a trial's whole DDP worker group, split evenly over
    num_workers (fractional ok); defaults: 1 CPU and, with use_gpu, 1 GPU per worker, shrunk to fit
    beside the trial driver on a small cluster. max_concurrent_trials defaults to what fits at once.
    """
    total_cpu, total_gpu = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    if cpus_per_trial is None:
        cpus_per_trial = float(num_workers)
        if total_cpu and total_cpu < driver_cpus + cpus_per_trial:
            cpus_per_trial = total_cpu - driver_cpus
    if cpus_per_trial <= 0:
        raise ValueError(f"no CPU left for the workers: the cluster has {total_cpu} CPUs and each trial driver "
                         f"takes {driver_cpus}; lower driver_cpus or pass cpus_per_trial")
    per_worker = {"CPU": cpus_per_trial / num_workers}
    if use_gpu:
        gpus_per_trial = float(num_workers) if gpus_per_trial is None else float(gpus_per_trial)
        per_worker["GPU"] = gpus_per_trial / num_workers
    note = None
    if max_concurrent_trials is None:
        fits = [total_cpu // (driver_cpus + cpus_per_trial)] if total_cpu else []
        if use_gpu:
            if total_gpu:
                fits.append(total_gpu // gpus_per_trial)
            else:  # 1 at a time would leave every autoscaled GPU node but one idle for the whole sweep
                raise ValueError(
                    f"DDP class trials ({num_workers} workers on GPUs) on a cluster with no GPU right now (a 0-GPU "
                    "head, GPU nodes still to be started): their workers are outside Tune's accounting, so how many "
                    "trials can run at once cannot be read from the cluster. Pass --max-concurrent-trials "
                    f"(GPUs you expect // {gpus_per_trial:g} GPUs per trial), or drop --num-workers to train each "
                    "class in its own trial on 1 GPU (the default with --use-gpu)")
        max_concurrent_trials = max(1, int(min(fits))) if fits else 1
    return {"resources_per_worker": per_worker, "max_concurrent_trials": int(max_concurrent_trials), "note": note}


class GPUUnusable(RuntimeError):
    """A trial was given a GPU its node cannot use (no driver, no container runtime, no `--gpus all`)."""


def gpu_unusable_message(gpus, node: str) -> str:
    """The one line a trial fails with when it was given a GPU that CUDA cannot see."""
    return (f"this class trial was given GPU {gpus} on node {node}, but CUDA is not available there "
            f"(torch.cuda.is_available() is False): check the node's NVIDIA driver (nvidia-smi on the host), the "
            f"container runtime (docker info lists nvidia) and `--gpus all` in cluster.yaml's docker.run_options; "
            f"--allow-cpu-fallback trains on the CPU instead (slow: GPU hours at CPU speed)")


def trial_device(allow_cpu_fallback: bool = False) -> tuple[str, int]:
    """Inside a trial: ("cuda" if Tune gave it a GPU else "cpu", CPU threads it was given).

    Ray 2.60 no longer hides GPUs from 0-GPU actors, so a trial that asked for no GPU must not
    use one even if it sees it; with a GPU, Ray sets CUDA_VISIBLE_DEVICES, so "cuda" is the
    trial's own. A trial given a GPU that CUDA cannot see (a node advertising GPUs its container
    cannot reach) raises GPUUnusable at once, naming the node and the fix, unless
    allow_cpu_fallback (then it warns and trains on the CPU: simulated clusters' fake GPUs).
    """
    import ray
    import torch

    gpus = ray.get_gpu_ids()
    ctx = ray.get_runtime_context()
    cpus = ctx.get_assigned_resources().get("CPU", 1.0)
    if gpus and not torch.cuda.is_available():
        node = f"{ctx.get_node_id()} ({ray.util.get_node_ip_address()})"
        if not allow_cpu_fallback:
            raise GPUUnusable(gpu_unusable_message(gpus, node))
        log.warning("this trial was given GPU %s on node %s but CUDA is not available there: training on the CPU "
                    "(--allow-cpu-fallback)", gpus, node)
        return "cpu", max(1, int(cpus))
    return ("cuda" if gpus else "cpu"), max(1, int(cpus))
