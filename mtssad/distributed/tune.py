"""Ray Tune sweeps: normal classes x jigsaw grid x k x methods, selected by validation AUROC.

    rows = run_sweep(load_dataset("digits"), classes=[0, 1], methods=["ours"], grids=["2x2", "3x3"],
                     ks=[3, 6], params=dict(backbone="wrn-10-1", epochs=5), storage_path="/tmp/ray")

Each trial is a driver function (Train V2 pattern): it carves the validation split
from the TRAINING split (held-out normals + other classes' training images; the
test split is only scored), trains with `train_detector_ddp` (its own TorchTrainer,
run name `train-{trial_id}`, so a resumed trial resumes its training), scores the
validation and test images in the trial process and reports one result row with
`ray.tune.report`. Per (dataset, normal class, method), the configuration with the
best validation AUROC gets `selected=True`: its test metrics are the method's result.

Data: the sweep driver loads the data set once; `tune.with_parameters` puts it in
the object store once and every trial reads it from there (zero-copy on its node).
Reloading per trial would decode CUB-200's JPEGs 200+ times, and one copy
guarantees every trial sees the same seeded subset.

Resources: a trial (driver) reserves `driver_cpus` CPUs; its DDP workers get their
own placement group OUTSIDE Tune's accounting (RAY_NOTES §1, issue #54305), so
concurrency is capped here: max_concurrent_trials defaults to what the cluster's
CPUs (and GPUs) allow. On 2 CPUs: 1 trial with workers of 0.5 CPU (no deadlock).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time

from ..config import factorial_exceeds
from ..transforms import check_image_fits

log = logging.getLogger(__name__)
CONFIG_KEY = "detector_config"  # the row's `config` column travels under this name through Tune

def _grid_tuple(grid) -> tuple[int, int]:
    if isinstance(grid, str):
        a, b = grid.lower().split("x")
        return int(a), int(b)
    return int(grid[0]), int(grid[1])


def sweep_trials(classes, methods, grids, ks, *, image_side: tuple[int, int], margin: int = 2, params: dict | None = None):
    """The trial specs (dicts: normal_class, method, grid "NxM" or None, k or None) and the skipped combos.

    A jigsaw method needs 2 <= k < (n_h * n_w)! and patches of >= 1 px after the margin; a method
    without a jigsaw head (params' tasks included) gets one trial per class (grid and k do not apply).
    """
    from ..methods import method_names, trains_jigsaw

    known = method_names()
    specs, skipped = [], []
    for m in methods:
        if m not in known:
            raise ValueError(f"unknown method {m!r}; expected one of {known}")
    for c in classes:
        for m in methods:
            if not trains_jigsaw(m, params or {}):
                specs.append({"normal_class": int(c), "method": m, "grid": None, "k": None})
                continue
            for g in grids:
                n_h, n_w = _grid_tuple(g)
                for k in ks:
                    why = None
                    if not (2 <= k and factorial_exceeds(n_h * n_w, k)):
                        why = f"k={k} needs 2 <= k < ({n_h}*{n_w})! = {math.factorial(n_h * n_w)}"
                    else:
                        try:
                            check_image_fits(image_side, (n_h, n_w), margin)
                        except ValueError as e:
                            why = str(e)
                    if why:
                        if c == classes[0]:
                            skipped.append((m, f"{n_h}x{n_w}", k, why))
                        continue
                    specs.append({"normal_class": int(c), "method": m, "grid": f"{n_h}x{n_w}", "k": int(k)})
    return specs, skipped


def sweep_trial(config: dict, dataset=None, settings: dict | None = None) -> None:
    """One Tune trial: validation split, (DDP) training, scoring; reports the result row."""
    import ray.tune

    from ..methods import METHODS, make_method
    from ..protocols import PROTOCOL_PARAMS, data_identity, describe_config, one_vs_all_data, score_fitted
    from .train import train_detector_ddp

    s, spec, ds = settings, config["spec"], dataset
    c, method = spec["normal_class"], spec["method"]
    d = one_vs_all_data(ds, c, seed=s["seed"], val_fraction=s["val_fraction"])
    X_fit, X_val, y_val = d.X_fit, d.X_val, d.y_val
    params = dict(s["params"])
    if spec["grid"] is not None:
        params.update(grid=_grid_tuple(spec["grid"]), k=spec["k"])
    det = make_method(method, **{**params, "seed": s["seed"], **PROTOCOL_PARAMS})
    trial_id = ray.tune.get_context().get_trial_id()
    t0 = time.perf_counter()
    if METHODS[method].neural:
        det = train_detector_ddp(
            X_fit, det, num_workers=s["num_workers"], use_gpu=s["use_gpu"],
            resources_per_worker=s["resources_per_worker"], storage_path=s["train_storage"],
            name=f"train-{trial_id}", max_failures=s["max_failures"],
            controller_failure_limit=s["controller_failure_limit"], X_val=X_val, y_val=y_val,
        )
    else:
        det.fit(X_fit, X_val=X_val, y_val=y_val)
    train_seconds = time.perf_counter() - t0
    row, _ = score_fitted(det, d.X_test, d.is_normal_test, X_val=X_val, y_val=y_val)
    row.update(describe_config(method, params, det), dataset=ds.name, normal_class=ds.class_names[c],
               seed=s["seed"], split="test", n_train=len(X_fit), n_test=len(ds.test_images),
               train_seconds=train_seconds, trial_id=trial_id, epochs_run=len(getattr(det, "history_", [])),
               data=json.dumps(data_identity(ds, val_fraction=s["val_fraction"]), sort_keys=True))
    row[CONFIG_KEY] = row.pop("config")  # Tune fills result["config"] with the trial's own config
    ray.tune.report(row)


def select_by_validation(rows: list[dict], by=("dataset", "normal_class", "method")) -> list[dict]:
    """Set `selected` on each row: True for the best val_auroc in its group (first wins ties; NaN never)."""
    best: dict[tuple, int] = {}
    for i, r in enumerate(rows):
        v = r.get("val_auroc", float("nan"))
        key = tuple(r.get(b) for b in by)
        if v == v and (key not in best or v > rows[best[key]]["val_auroc"]):
            best[key] = i
    chosen = set(best.values())
    return [{**r, "selected": i in chosen} for i, r in enumerate(rows)]


class _Progress:
    """A Tune callback logging 'trial 3/8 done: ...' as trials finish (built lazily: ray.tune.Callback)."""

    @staticmethod
    def make(total: int, already_done: int = 0):
        import ray.tune

        class Progress(ray.tune.Callback):
            def __init__(self):
                self.done = already_done

            def on_trial_complete(self, iteration, trials, trial, **info):
                self.done += 1
                r, sp = trial.last_result or {}, trial.config.get("spec", {})
                what = f"{sp.get('method')} class {r.get('normal_class', sp.get('normal_class'))}"
                if sp.get("grid"):
                    what += f" grid {sp['grid']} k {sp['k']}"
                log.info(f"trial {self.done}/{total} done: {what}: val AUROC {r.get('val_auroc', float('nan')):.3f}, "
                         f"test AUROC {r.get('auroc', float('nan')):.3f} ({r.get('train_seconds', 0):.0f}s)")

            def on_trial_error(self, iteration, trials, trial, **info):
                log.warning(f"trial {trial.trial_id} failed: {trial.config.get('spec')}")

        return Progress()


def plan_resources(*, num_workers: int, use_gpu: bool, cpus_per_trial, gpus_per_trial, driver_cpus: float,
                   max_concurrent_trials, cluster: dict) -> dict:
    """Worker resources and trial concurrency that fit the cluster (fractional CPUs on small machines).

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
            else:
                fits = [1]
                note = ("the cluster has no GPU right now (autoscaling?): running 1 trial at a time; "
                        "pass max_concurrent_trials = GPUs you expect // gpus_per_trial")
        max_concurrent_trials = max(1, int(min(fits))) if fits else 1
    return {"resources_per_worker": per_worker, "max_concurrent_trials": int(max_concurrent_trials), "note": note}


class SweepIncomplete(RuntimeError):
    """Some trials did not finish (error or interruption); rerun with --resume (resume=True) to finish only those."""


def _abs_storage(path: str) -> str:
    return path if "://" in str(path) else os.path.abspath(os.path.expanduser(str(path)))


def run_sweep(dataset, *, classes=None, methods=("ours",), grids=("2x2", "3x3"), ks=(3,), params: dict | None = None,
              seed: int = 0, val_fraction: float = 0.2, num_workers: int = 1, use_gpu: bool = False,
              cpus_per_trial: float | None = None, gpus_per_trial: float | None = None, driver_cpus: float = 1.0,
              driver_resources: dict | None = None, max_concurrent_trials: int | None = None,
              storage_path: str = "~/ray_results", name: str = "sweep", resume: bool = False,
              max_failures: int = 2, trial_max_failures: int = 1, controller_failure_limit: int = -1,
              out: str | None = None, verbose: int = 0) -> list[dict]:
    """Run (or resume) a sweep on the connected Ray cluster; return one result row per trial.

    dataset: an `ImageDataset` (loaded once here, shared with trials through the object store).
    classes: normal class indices (None = all). params: DetectorConfig fields shared by every trial
    (backbone, epochs, ...). num_workers/use_gpu: DDP workers of each trial. driver_resources: extra
    resources of a trial driver, e.g. {"TRAIN_DRIVER": 1} to keep drivers on on-demand nodes.
    storage_path/name: the experiment is {storage_path}/{name}; resume=True restores it (finished
    trials are not rerun; unfinished ones resume from their last training checkpoint).
    out: also append the rows (with `selected`) to the ResultsStore at `out`, skipping rows it has.
    Raises SweepIncomplete when a trial errored or the sweep was interrupted.

    Resume caveat (Ray 2.60, checked): max_concurrent_trials only throttles trials Tune has not created
    yet; on restore, every unfinished trial is PENDING again and Tune starts as many drivers as fit.
    Their DDP workers then may not fit (a deadlock on small clusters). Cap drivers with a resource the
    cluster declares: driver_resources={"TRAIN_DRIVER": 1} with TRAIN_DRIVER = max concurrent trials
    on the head (cluster.yaml; `ray.init(resources={"TRAIN_DRIVER": n})` locally).
    """
    import ray
    import ray.tune

    classes = list(range(len(dataset.class_names))) if classes is None else [int(c) for c in classes]
    params = dict(params or {})
    params.setdefault("progress", False)
    margin = params.get("margin", 2)
    specs, skipped = sweep_trials(classes, list(methods), list(grids), list(ks),
                                  image_side=tuple(dataset.train_images.shape[2:]), margin=margin, params=params)
    for m, g, k, why in skipped:
        log.warning(f"skipping {m} grid {g} k {k}: {why}")
    if not specs:
        raise ValueError("no valid trial: every (grid, k) combination was skipped")
    plan = plan_resources(num_workers=num_workers, use_gpu=use_gpu, cpus_per_trial=cpus_per_trial,
                          gpus_per_trial=gpus_per_trial, driver_cpus=driver_cpus,
                          max_concurrent_trials=max_concurrent_trials, cluster=ray.cluster_resources())
    if plan["note"]:
        log.warning(plan["note"])
    storage = _abs_storage(storage_path)
    settings = dict(params=params, seed=seed, val_fraction=val_fraction, num_workers=num_workers, use_gpu=use_gpu,
                    resources_per_worker=plan["resources_per_worker"], train_storage=f"{storage}/{name}-train",
                    max_failures=max_failures, controller_failure_limit=controller_failure_limit)
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(sweep_trial, dataset=dataset, settings=settings),
        {"CPU": driver_cpus, **(driver_resources or {})},
    )
    exp = f"{storage}/{name}"
    log.info(f"sweep {name}: {len(specs)} trials ({len(classes)} class(es)), up to {plan['max_concurrent_trials']} "
             f"at once, workers {num_workers} x {plan['resources_per_worker']}; experiment {exp}")
    progress = _Progress.make(len(specs))
    if ray.tune.Tuner.can_restore(exp):
        if not resume:
            raise ValueError(f"a sweep already exists at {exp}: pass --resume (resume=True in Python) to finish it, "
                             "or another --experiment-name (name=)")
        if not driver_resources:
            log.info("note: resumed trials all start at once (Tune ignores max_concurrent_trials for them); "
                     "pass --driver-resource TRAIN_DRIVER (driver_resources={'TRAIN_DRIVER': 1}) on a cluster "
                     "declaring TRAIN_DRIVER to cap them")
        tuner = ray.tune.Tuner.restore(exp, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = ray.tune.Tuner(
            trainable,
            param_space={"spec": ray.tune.grid_search(specs)},
            tune_config=ray.tune.TuneConfig(max_concurrent_trials=plan["max_concurrent_trials"]),
            run_config=ray.tune.RunConfig(
                name=name, storage_path=storage, callbacks=[progress], verbose=verbose,
                failure_config=ray.tune.FailureConfig(max_failures=trial_max_failures)),
        )
    grid = tuner.fit()
    rows, problems = [], []
    for res in grid:
        if res.error is not None or not res.metrics or "auroc" not in res.metrics:
            spec = (res.config or {}).get("spec")
            problems.append(f"{spec}: {type(res.error).__name__ if res.error else 'not finished'}")
            continue
        row = {k: v for k, v in res.metrics.items() if not _is_tune_bookkeeping(k)}
        row["config"] = row.pop(CONFIG_KEY)
        rows.append(row)
    missing = len(specs) - len(rows)  # an interrupted sweep may not have created every trial yet
    if missing:
        raise SweepIncomplete(f"{missing} of {len(specs)} trials did not finish ({'; '.join(problems[:5]) or 'not started'}); "
                              f"finished trials are kept: rerun the same command with --resume (resume=True in Python; same "
                              f"storage path and name) to run only the rest")
    rows = select_by_validation(sorted(rows, key=lambda r: (str(r["normal_class"]), r["method"],
                                                            str(r.get("grid")), r.get("k") or 0)))
    if out is not None:
        write_rows(rows, out)
    return rows


_TUNE_KEYS = {"timestamp", "checkpoint_dir_name", "done", "training_iteration", "date", "time_this_iter_s",
              "time_total_s", "pid", "hostname", "node_ip", "time_since_restore", "iterations_since_restore",
              "config", "should_checkpoint"}


def _is_tune_bookkeeping(key: str) -> bool:
    return key in _TUNE_KEYS or key.startswith("config/")


def write_rows(rows: list[dict], out) -> int:
    """Append rows to the ResultsStore at `out`, skipping those already there; return how many were added."""
    from ..results import ResultsStore, row_key

    store = ResultsStore(out)
    done = store.done_keys()
    new = [r for r in rows if row_key(r) not in done]
    if new:
        store.append(new)
    return len(new)


def classes_summary(rows: list[dict]) -> str:
    """One line per selected row: class, method, chosen config, val and test AUROC."""
    lines = []
    for r in rows:
        if r.get("selected"):
            cfg = f" {r['grid']} k={r['k']}" if r.get("grid") else ""
            lines.append(f"{r['normal_class']:>12} {r['method']:<10}{cfg:<10} val {r['val_auroc']:.3f}  "
                         f"test AUROC {r['auroc']:.3f}")
    return "\n".join(lines)


__all__ = ["run_sweep", "sweep_trials", "sweep_trial", "select_by_validation", "plan_resources", "write_rows",
           "SweepIncomplete", "classes_summary"]
