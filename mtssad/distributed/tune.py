"""Ray Tune sweeps: normal classes x jigsaw grid x k x methods, selected by validation AUROC.

    rows = run_sweep(load_dataset("digits"), SweepConfig(classes=[0, 1], grids=[(2, 2), (3, 3)], ks=[3, 6],
                     params=dict(backbone="wrn-10-1", epochs=5), storage_path="/tmp/ray", out="runs/sweep"))

One Tune trial per (normal class, method) -- a class trial (`sweep_trial.py`) -- trains that
class's (grid, k) configs one after another in its own process, on the device Tune gave it
(`tune.with_resources`, `{"CPU": c, "GPU": g}`, fractional g allowed: `resources.py`), and
reports a row per config with a checkpoint of a few KB, so a restored trial continues at its
next config. Selection is on validation data from the TRAINING split (`selection.py`); the
test split is scored once per class trial, for its best config (every config with score_all_test).
With task_search, `ours` trials also train the geometric heads alone as one more config. Per
(dataset, normal class, method) the best validation AUROC gets `selected=True`: its test
metrics are the method's result, and its per-image scores and training history are written
to `out` like `mtssad evaluate`'s, so `mtssad report` draws its ROC and task-suitability plots.

num_workers >= 2 trains each config with `train_detector_ddp` (a TorchTrainer per config, its
workers outside Tune's accounting: concurrency is capped then, `resources.ddp_trial_resources`).

Data: the sweep driver loads the data set once; `tune.with_parameters` puts it in the object
store once and every trial reads it from there (zero-copy on its node).
"""

from __future__ import annotations

import logging

import numpy as np

from .progress import board_name, make_progress_callback, start_board
from .resources import DDP, IN_PROCESS, class_trial_resources, ddp_trial_resources
from .selection import mark_jigsaw_kept, select_by_validation
from ..config import DetectorConfig
from .storage import absolute, join_uri
from .sweep_config import SweepConfig
from .sweep_identity import check_resume_identity, save_identity, sweep_identity
from .sweep_space import class_trials, config_label, sweep_trials
from .sweep_trial import TRIAL_KEY, TrialSettings, class_trial
from .trial_state import TrialState

log = logging.getLogger("mtssad.sweep")


def sweep_workers(num_workers: int | None, train_labels, classes, val_fraction: float, use_gpu: bool = False) -> int:
    """DDP workers per config: as given, or (None) by the largest class's fit set (`ddp_workers`' rule:
    2 workers from DDP_MIN_FIT_IMAGES fit images, else 1 = in the trial's own process).

    With use_gpu and nothing asked, 1: each class trial trains on its own GPU, and the sweep scales by
    running many trials (GPU demand the autoscaler sees); DDP would cap the trials on a 0-GPU head."""
    from .train import DDP_MIN_FIT_IMAGES, ddp_workers

    if num_workers is not None:
        return int(num_workers)
    if use_gpu:
        log.info("--num-workers left open with --use-gpu: 1 (a class trial per GPU; pass --num-workers 2+ for DDP)")
        return 1
    counts = np.bincount(np.asarray(train_labels), minlength=max(classes) + 1)
    n_fit = int(max(counts[c] for c in classes) * (1 - val_fraction))
    workers = ddp_workers(None, n_fit) or 1
    log.info("--num-workers left open: %d (largest fit set %d images; DDP from %d)", workers, n_fit, DDP_MIN_FIT_IMAGES)
    return workers


class SweepIncomplete(RuntimeError):
    """Some class trials did not finish (error or interruption); rerun with resume=True to finish only those.

    rows: every finished config's row (selection among each class's finished configs), also those of
    unfinished trials (`sweep_incomplete=True`); written to `out` before this is raised.
    """

    def __init__(self, message: str, rows: list | None = None):
        super().__init__(message)
        self.rows = list(rows or [])


class SweepStalled(SweepIncomplete):
    """The class trials waited for resources no node offered for longer than the stall timeout."""


INCOMPLETE = "sweep_incomplete"  # row column: True for a finished config of a class trial that has not finished


def run_sweep(dataset, config: SweepConfig) -> list[dict]:
    """Run (or resume) a sweep on the connected Ray cluster; return one result row per config.

    dataset: an `ImageDataset`; config: the `SweepConfig` (what is searched and how it runs; its fields say
    why each exists). The experiment is {config.storage_path}/{config.name}; with config.out the rows (with
    `selected`), the chosen configs' per-image scores and histories are written there too.
    Raises SweepIncomplete when a trial errored or the sweep was interrupted (SweepStalled when it
    stopped waiting for resources), after writing the finished configs' rows to `out`.
    """
    import ray
    import ray.tune

    from ..data import resolve_classes

    classes = resolve_classes(dataset, config.classes)
    specs, skipped = sweep_trials(classes, list(config.methods), list(config.grids), list(config.ks),
                                  image_side=tuple(dataset.train_images.shape[2:]),
                                  margin=config.params.get("margin", DetectorConfig.margin), params=config.params,
                                  task_search=config.task_search)
    for m, g, k, why in skipped:
        log.warning("skipping %s grid %s k %s: %s", m, g, k, why)
    if not specs:
        raise ValueError("no valid config: every (grid, k) combination was skipped")
    trials = class_trials(specs)
    settings, resources = _trial_settings(dataset, classes, config)
    storage, name = absolute(config.storage_path), config.name  # a URI unchanged, a path made absolute
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(class_trial, dataset=dataset, settings=settings), resources["trial_resources"])
    exp = join_uri(storage, name)  # a ?query (s3://b/p?region=...) stays at the end
    log.info("sweep %s: %d configs in %d class trial(s), each asking for %s%s, up to %s at once; experiment %s",
             name, len(specs), len(trials), resources["trial_resources"],
             f" + {settings.num_workers} DDP workers x {settings.resources_per_worker}" if settings.mode == DDP else "",
             resources["max_concurrent_trials"] or "as many as fit", exp)
    identity = sweep_identity(dataset, trials, config)
    if ray.tune.Tuner.can_restore(exp):
        _check_resumable(config, storage, exp, identity)
        tuner = ray.tune.Tuner.restore(exp, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        save_identity(storage, name, identity)
        tuner = _new_tuner(trainable, trials, settings, storage, n_configs=len(specs),
                           max_concurrent_trials=resources["max_concurrent_trials"])
    from .watch import STALL_TIMEOUT_S, SweepWatch

    stall_timeout_s = STALL_TIMEOUT_S if config.stall_timeout_s is None else config.stall_timeout_s
    board = start_board(settings.progress_board)
    try:
        with SweepWatch(board=settings.progress_board, line_every_s=config.progress_every_s,
                        first_line_s=min(20.0, config.progress_every_s), stall_timeout_s=stall_timeout_s) as watch:
            results = tuner.fit()
    finally:
        ray.kill(board)
    return collect_rows(results, trials, dataset, len(specs), out=config.out, stalled=watch.stalled)


def _trial_settings(dataset, classes: list[int], config: SweepConfig) -> tuple[TrialSettings, dict]:
    """What every class trial shares (the config, and what it resolves to on this cluster: workers, DDP
    resources), and the trials' Tune resources (resources.class_trial_resources' dict)."""
    import ray

    num_workers = sweep_workers(config.num_workers, dataset.train_labels, classes, config.val_fraction,
                                use_gpu=config.use_gpu)
    resources = class_trial_resources(num_workers=num_workers, use_gpu=config.use_gpu,
                                  cpus_per_trial=config.cpus_per_trial, gpus_per_trial=config.gpus_per_trial,
                                  driver_cpus=config.driver_cpus, driver_resources=config.driver_resources,
                                  max_concurrent_trials=config.max_concurrent_trials,
                                  cluster=ray.cluster_resources(), ray_train=config.ray_train)
    if resources["note"]:
        log.warning(resources["note"])
    settings = TrialSettings(
        config=config, mode=resources["mode"], num_workers=num_workers,
        resources_per_worker=resources["resources_per_worker"],
        train_storage=join_uri(absolute(config.storage_path), f"{config.name}-train"),
        progress_board=board_name(config.name, ray.get_runtime_context().get_job_id()))
    return settings, resources


def _check_resumable(config: SweepConfig, storage: str, exp: str, identity: dict) -> None:
    """An experiment exists at `exp`: resume it only when asked and when it is this sweep (same identity)."""
    name = config.name
    if not config.resume:
        raise ValueError(f"a sweep already exists at {exp}: pass --resume (resume=True in Python) to finish it, "
                         "or another --experiment-name (name=)")
    if not check_resume_identity(storage, name, identity):
        raise ValueError(f"the sweep '{name}' at {exp} has no {name}-identity.json (started by an mtssad from "
                         "before resumes were checked), so resuming could mix its rows with other data or "
                         "settings (e.g. its old step budget) unnoticed; start a new sweep with another "
                         "--experiment-name")


def _new_tuner(trainable, trials: list[dict], settings: TrialSettings, storage: str, *, n_configs: int,
               max_concurrent_trials: int | None):
    """A Tuner with one trial per class trial (Tune's config key TRIAL_KEY), failure and checkpoint policy."""
    import ray.tune

    config = settings.config
    reuse_actors = settings.mode == IN_PROCESS if config.reuse_actors is None else config.reuse_actors
    return ray.tune.Tuner(
        trainable,
        param_space={TRIAL_KEY: ray.tune.grid_search(trials)},
        tune_config=ray.tune.TuneConfig(max_concurrent_trials=max_concurrent_trials, reuse_actors=reuse_actors),
        run_config=ray.tune.RunConfig(
            name=config.name, storage_path=storage, callbacks=[make_progress_callback(n_configs)],
            verbose=config.verbose, failure_config=ray.tune.FailureConfig(max_failures=config.trial_max_failures),
            checkpoint_config=ray.tune.CheckpointConfig(num_to_keep=2)),
    )


def _trial_key(trial: dict) -> tuple:
    return str(trial.get("normal_class")), str(trial.get("method"))


def collect_rows(results, trials: list[dict], dataset, n_specs: int, *, out=None,
                 stalled: str | None = None) -> list[dict]:
    """The sweep's rows from Tune's results: selected, sorted, written to `out`; SweepIncomplete when some
    class trial did not finish (its finished configs are written too, marked `sweep_incomplete`)."""
    rows, bests, problems, seen, complete = [], {}, [], set(), True
    for res in results:
        trial = (res.config or {}).get(TRIAL_KEY, {})
        if not trial:
            continue
        seen.add(_trial_key(trial))
        state = TrialState.from_checkpoint(res.checkpoint) if res.checkpoint is not None else TrialState()
        finished = res.error is None and len(state.rows) >= len(trial["configs"])
        if not finished:
            complete = False
            why = _error_line(res.error) if res.error is not None else "not finished"
            problems.append(f"{_class_name(dataset, trial)} / {trial.get('method')}: {why} "
                            f"({len(state.rows)}/{len(trial['configs'])} configs done)")
        # in training order: selection's tie rule (first wins) is the trial's
        rows += [dict(r, **{INCOMPLETE: not finished}) for r in state.rows]
        if state.best_name is not None:
            bests[state.best_name] = state
    for trial in trials:  # an interrupted sweep may not have created every trial: name the ones that never started
        if _trial_key(trial) not in seen:
            complete = False
            problems.append(f"{_class_name(dataset, trial)} / {trial['method']}: never started "
                            f"(0/{len(trial['configs'])} configs done)")
    # A class trial scores its test split once, at its end, for the config it chose: an unfinished trial has
    # chosen nothing yet, so its finished configs are written unselected (no test figure is made up for them).
    rows = [dict(r, selected=r["selected"] and not r[INCOMPLETE]) for r in select_by_validation(rows)]
    rows = mark_jigsaw_kept(rows)
    rows.sort(key=lambda r: (str(r["normal_class"]), r["method"], str(r.get("grid")), r.get("k") or 0,
                             str(r.get("task_config"))))
    if out is not None and rows:
        write_sweep_outputs(rows, bests, out)
    if not complete:
        where = (f"the {len(rows)} finished config(s) are in {out}/results.parquet (marked sweep_incomplete where "
                 "their class trial did not finish) and " if out is not None and rows else "finished configs are ")
        msg = (f"{n_specs - len(rows)} of {n_specs} configs did not finish: {'; '.join(problems[:8])}"
               f"{f' (+{len(problems) - 8} more)' if len(problems) > 8 else ''}; {where}kept in their trials' "
               "checkpoints: rerun the same command with --resume (resume=True in Python; same storage path and "
               "name) to run only the rest")
        if stalled:
            raise SweepStalled(f"stopped waiting for resources ({stalled}); {msg}", rows)
        raise SweepIncomplete(msg, rows)
    return rows


def _class_name(dataset, trial: dict) -> str:
    c = trial.get("normal_class")
    try:
        return f"class {dataset.class_names[int(c)]}"
    except (TypeError, ValueError, IndexError, AttributeError):
        return f"class {c}"


def _error_line(error) -> str:
    """A trial's error in one line: its type and the last line of its message (the cause, e.g. a GPU it cannot use)."""
    import re

    text = str(error).strip()
    last = text.splitlines()[-1].strip() if text else ""
    m = re.match(r"^(?:[A-Za-z_][\w]*\.)*([A-Za-z_]\w*): (.*)$", last)
    if m:  # a trial's error comes wrapped (RayTaskError(...)); its last line is the cause as Python prints it
        return f"{m.group(1)}: {m.group(2)[:300]}"
    return f"{type(error).__name__}: {last[:300]}" if last else type(error).__name__


def write_sweep_outputs(rows: list[dict], bests: dict, out) -> int:
    """Rows to the ResultsStore at `out` (skipping stored ones); for each selected row, its per-image test
    scores and training history, as `mtssad evaluate` writes them (mtssad.results.save_run). Returns rows added."""
    import json

    from ..protocols import RunOutput
    from ..results import ResultsStore, row_key, save_run

    store = ResultsStore(out)
    done = _final_keys(store)
    added = 0
    for r in rows:
        if not r["selected"] or row_key(r) in done:
            continue
        state = bests.get(json.dumps(list(row_key(r))))
        if state is None or state.best_scores is None or not r.get("test_scored"):
            raise RuntimeError(f"selected config {r['normal_class']} / {r['method']} {config_label(r)} has no test "
                               "scores in its trial's checkpoint (a bug: a trial scores its best once, before its "
                               "last report)")
        save_run(store, RunOutput(r, state.best_scores, state.best_history or []))
        added += 1
    return added + write_rows([r for r in rows if not r["selected"]], out)


def write_rows(rows: list[dict], out) -> int:
    """Append rows to the ResultsStore at `out`, skipping those already there; return how many were added."""
    from ..results import ResultsStore, row_key

    store = ResultsStore(out)
    done = _final_keys(store)
    new = [r for r in rows if row_key(r) not in done]
    if new:
        store.append(new)
    return len(new)


def _final_keys(store) -> set:
    """Keys of stored rows that are final: not written by an interrupted sweep (`sweep_incomplete`), whose
    `selected` may still change when the rest of the class trial finishes."""
    from ..results import row_key

    table = store._read_table()
    if table is None or INCOMPLETE not in table.column_names:
        return store.done_keys()
    return {row_key(r) for r in table.to_pylist() if r.get(INCOMPLETE) is not True}


def classes_summary(rows: list[dict]) -> str:
    """One line per selected row: class, method, chosen config (and heads, with the task search), val and test AUROC."""
    lines = []
    for r in rows:
        if r.get("selected"):
            cfg = f" {r['grid']} k={r['k']}" if r.get("grid") else ""
            if r.get("task_search"):
                cfg += "" if r.get("jigsaw_kept") else " no jigsaw"
            lines.append(f"{r['normal_class']:>12} {r['method']:<10}{cfg:<10} val {r['val_auroc']:.3f}  "
                         f"test AUROC {r['auroc']:.3f}")
    return "\n".join(lines)


__all__ = ["run_sweep", "sweep_trials", "class_trial", "select_by_validation", "ddp_trial_resources",
           "class_trial_resources", "write_rows", "write_sweep_outputs", "SweepIncomplete", "SweepStalled",
           "classes_summary", "collect_rows", "INCOMPLETE"]
