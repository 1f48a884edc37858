"""A class trial: the Tune trainable that trains one (normal class, method)'s configs one after another.

    tune.with_resources(tune.with_parameters(class_trial, dataset=ds, settings=TrialSettings(SweepConfig(...))),
                        {"CPU": 1, "GPU": 0.25})

One process per class, on the trial's own device (cuda when Tune gave it a GPU, else cpu):
the validation split and the selection set are built once, then each (grid, k) config is
fitted with the plain `MultiTaskDetector.fit` (or, with num_workers >= 2, `fit_ddp`, whose rank 0
scores the selection set and test split on the workers' device), scored on the selection set,
and reported as one row (`ray.tune.report`). No TorchTrainer,
no per-config process start.

Test scoring, once per class trial: the trial keeps the best-on-validation config's fitted
detector (in memory, and its detector file in the checkpoint: `MultiTaskDetector.to_bytes`, 0.3 MB
for WRN-10-1, ~11 MB for WRN-16-4) and scores the test split for that config alone, after its
last config, before reporting it. A restored trial that finishes with a best config trained
before the restart loads its weights from the checkpoint (`test_scored_from="checkpoint"`), so
it never retrains a finished config. `score_all_test` scores every config (studies). Before,
the test split was scored at every new best: H_n = 1 + 1/2 + ... + 1/n times for n configs.

DDP mode (num_workers >= 2): rank 0 scores the selection set and the test split of every config
on the workers' device (the trial reserved driver CPUs only, so it scores nothing itself, and
which config wins is known only after validation); the trial keeps the best config's test
scores (checkpointed), not its weights, and attaches them to the best row at the end
(`test_scored_from="ddp rank 0"`). The test pass per config stays on the workers: simplest,
and correct on resume.

Task search (`sweep_space`, on by default for `mtssad sweep`): a config may carry `tasks` (the
geometric heads alone); rows record the heads each config trained (`heads`) and whether the
trial searched the task set (`task_search`).

Checkpoint: rows.json (every finished config's row), state.json (counters, the best's test
metrics in DDP mode), best_scores.parquet, best_history.json, best_detector.pt (the best
config's detector file, in-process mode). A resumed trial reads it and continues at the next
config. Every row records `trial_start` (0 = first start of this trial, 1 = after one
restore, ...) and `fit_index` (the how-many-th fit of this trial it was): a finished config
retrained would show up as a second row or as more fits than configs. `node_id` is the Ray node
that ran the config (on an autoscaling cluster: which GPU node).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from .resources import IN_PROCESS
from .selection import is_better, selection_set
from .sweep_config import SweepConfig, parse_grid
from .trial_state import TrialState

CONFIG_KEY = "detector_config"  # the row's `config` column travels under this name through Tune
# A Tune trial's config holds its class trial (sweep_space.class_trials) under this key. The name is stored
# in every experiment (a resumed sweep reads it back), so it keeps its historical spelling.
TRIAL_KEY = "task"


@dataclass
class TrialSettings:
    """What every class trial of a sweep shares (travels once through the object store)."""

    config: SweepConfig = field(default_factory=SweepConfig)  # the sweep's settings (params, seed, selection, ...)
    mode: str = IN_PROCESS  # "in_process" (fit in the trial) or "ddp" (train_detector_ddp per config)
    num_workers: int = 1  # DDP workers per config in "ddp" mode (config.num_workers resolved: never None here)
    resources_per_worker: dict | None = None  # DDP workers' resources ("ddp" mode)
    train_storage: str = ""  # where DDP runs keep their checkpoints ("ddp" mode)
    progress_board: str | None = None  # name of the driver's progress board actor (steps of running configs)


class TrialDrill(RuntimeError):
    """Raised by the `crash_after_configs` fault drill (tests, checking a cluster's restore path)."""


def config_id(row_or_cfg: dict) -> tuple:
    """(grid, k, heads or None) of a config spec or a row: what identifies a config inside its class trial.

    The heads count only for the task search's configs (spec `tasks`, row `task_config`), so rows
    checkpointed before the task search keep their identity.
    """
    tasks = row_or_cfg.get("tasks") if "tasks" in row_or_cfg else row_or_cfg.get("task_config")
    if tasks and not isinstance(tasks, str):
        tasks = ",".join(tasks)
    return row_or_cfg.get("grid"), row_or_cfg.get("k"), tasks or None


@dataclass
class ClassImages:
    """A class trial's images, split once per start of the trial."""

    split: object  # protocols.OneVsAllData: X_fit, X_val/y_val (early stopping, head selection), the test split
    X_sel: np.ndarray  # the selection set configs are compared on: held-out normals + other classes' training images
    y_sel: np.ndarray  # (n_sel,) 1 = normal
    data: str  # the rows' `data` column: the data selection, as JSON


def class_images(dataset, normal_class: int, config: SweepConfig) -> ClassImages:
    """The one-vs-all split and the selection set of `normal_class`: the same for every config of its trial."""
    from ..protocols import data_identity, one_vs_all_data

    split = one_vs_all_data(dataset, normal_class, seed=config.seed, val_fraction=config.val_fraction)
    X_sel, y_sel = selection_set(dataset.train_images, dataset.train_labels, normal_class, split.X_val, split.y_val,
                                 seed=config.seed, ratio=config.val_anomaly_ratio,
                                 max_anomalies=config.val_max_anomalies)
    data = json.dumps(data_identity(dataset, val_fraction=config.val_fraction), sort_keys=True)
    return ClassImages(split, X_sel, y_sel, data)


def configs_to_train(trial: dict, rows: list[dict]) -> list[dict]:
    """The trial's configs without a finished row (a restored trial continues at its next config)."""
    done = {config_id(r) for r in rows}
    return [c for c in trial["configs"] if config_id(c) not in done]


def best_val_auroc(rows: list[dict]) -> float | None:
    """The best validation AUROC among finished rows, by selection's own rule (None before the first)."""
    best = None
    for r in rows:
        if is_better(r["val_auroc"], best):
            best = r["val_auroc"]
    return best


def check_fault_drill(config: SweepConfig, start_no: int, fits_now: int, trial_id: str) -> None:
    """The crash_after_configs drill: the trial's first start raises TrialDrill after that many fits."""
    if config.crash_after_configs is not None and start_no == 0 and fits_now >= config.crash_after_configs:
        raise TrialDrill(f"fault drill: class trial {trial_id} stops after {fits_now} config(s)")


def progress_label(config: dict) -> str:
    """' 2x2 k=3', ' 2x2 k=3 no jigsaw' or '' (no grid): how progress lines name a config."""
    label = f" {config['grid']} k={config['k']}" if config["grid"] else ""
    return label + (" no jigsaw" if config.get("tasks") else "")


def detector_for(method: str, config: dict, settings: TrialSettings, device: str):
    """(unfitted detector, its params): the sweep's shared params, this config's grid/k/heads, the trial's device."""
    from ..methods import METHODS, make_method
    from ..protocols import PROTOCOL_PARAMS

    params = dict(settings.config.params, seed=settings.config.seed, **PROTOCOL_PARAMS)  # as `mtssad evaluate` fits
    if config["grid"] is not None:
        params.update(grid=parse_grid(config["grid"]), k=config["k"])
    if config.get("tasks"):
        params["tasks"] = tuple(config["tasks"])
    if METHODS[method].neural:
        params["device"] = device  # the trial's own device, whatever params said
    return make_method(method, **params), params


def fit_config(det, method: str, images: ClassImages, settings: TrialSettings, name: str, progress: dict):
    """Fit one config: (fitted detector, DDPFit or None).

    In the trial's process: None (the trial scores on its own device). With DDP workers
    (num_workers >= 2): rank 0 recalibrates, calibrates and scores the selection set and the test
    split on its device (the trial reserved only driver CPUs); the DDPFit holds those scores and
    their seconds per set. Rank 0 scores the test split for every config, since which config
    becomes the best is known only after validation: one more pass per config, on the workers' device.
    """
    from ..methods import METHODS
    from .train import fit_ddp

    split, config = images.split, settings.config
    if settings.mode == IN_PROCESS or not METHODS[method].neural:
        return det.fit(split.X_fit, X_val=split.X_val, y_val=split.y_val, **progress), None
    out = fit_ddp(
        split.X_fit, det, num_workers=settings.num_workers, use_gpu=config.use_gpu,
        resources_per_worker=settings.resources_per_worker, storage_path=settings.train_storage, name=name,
        max_failures=config.max_failures, controller_failure_limit=config.controller_failure_limit,
        X_val=split.X_val, y_val=split.y_val, score_sets={"selection": images.X_sel, "test": split.X_test},
    )
    return out.detector, out


def fit_and_validate(trial: dict, config: dict, dataset, images: ClassImages, settings: TrialSettings, *,
                     device: str, trial_id: str) -> tuple:
    """Build, fit and score one config on the selection set: (fitted detector, its params, DDPFit or None,
    val AUROC, seconds to build and fit it, seconds to validate it)."""
    from ..metrics import auroc
    from ..protocols import score_with_heads
    from .progress import fit_progress_kwargs  # live steps on the driver's console (progress_callback)

    t0 = time.perf_counter()  # the row's train_seconds: building the detector, fitting it
    det, params = detector_for(trial["method"], config, settings, device)
    method = trial["method"]
    name = f"train-{trial_id}-{config['grid']}-k{config['k']}" + ("-no-jigsaw" if config.get("tasks") else "")
    what = f"class {dataset.class_names[trial['normal_class']]} / {method}{progress_label(config)}"
    progress = fit_progress_kwargs(det, settings.progress_board, trial_id, what,
                                   trial["configs"].index(config) + 1, len(trial["configs"]))
    det, ddp_fit = fit_config(det, method, images, settings, name=name, progress=progress)
    fit_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    scores = ddp_fit.scores["selection"] if ddp_fit else score_with_heads(det, images.X_sel)[0]
    val_auroc = auroc(images.y_sel, scores)
    val_s = time.perf_counter() - t1
    if ddp_fit:  # rank 0 scored both sets inside the Ray run: count them as scoring, not training
        val_s += ddp_fit.set_seconds.get("selection", 0.0)
        fit_s -= sum(ddp_fit.set_seconds.values())
    return det, params, ddp_fit, val_auroc, fit_s, val_s


def config_row(det, params: dict, trial: dict, config: dict, dataset, images: ClassImages, *, seed: int,
               val_auroc: float, fit_s: float, val_s: float, ddp_fit, device: str, trial_id: str, node_id,
               start_no: int, fit_index: int) -> dict:
    """The result row of one fitted config (its test metrics come later: `_finish_best` or score_all_test)."""
    from ..protocols import result_row, training_record

    history = getattr(det, "history_", [])
    row = result_row(
        trial["method"], params, det, dataset=dataset.name, normal_class=dataset.class_names[trial["normal_class"]],
        seed=seed, split="test", data=images.data, n_train=len(images.split.X_fit), n_val=len(images.y_sel),
        n_val_anomalies=int((images.y_sel == 0).sum()), val_auroc=val_auroc, train_seconds=fit_s,
        val_seconds=val_s, epochs_run=len(history), epochs_seconds=sum(h.get("seconds", 0.0) for h in history),
        device=device, trial_id=trial_id, node_id=node_id, trial_start=start_no, fit_index=fit_index,
        test_scored=False, scored_on="trial" if ddp_fit is None else "ddp rank 0",
        task_search=any(c.get("tasks") for c in trial["configs"]), **training_record(det))
    # Columns that apply to some rows only are left out of the others, never None: a results.parquet
    # column first written all-null is typed float64, and a later string in it would not convert.
    heads = getattr(getattr(det, "config_", None), "tasks", None)
    if heads:
        row["heads"] = ",".join(heads)  # the heads this config trained
    if config.get("tasks"):
        row["task_config"] = ",".join(config["tasks"])  # the task search's config (config_id reads it)
    return row


def keep_best(state: TrialState, row: dict, det, ddp_fit, test, settings: TrialSettings) -> None:
    """Record the trial's new best config: its key, history, test scores (when scored) and, in-process, its
    detector (in memory and as a file for the checkpoint) for the test pass still to come."""
    import pandas as pd

    from ..results import row_key

    state.best_name = json.dumps(list(row_key(row)))
    state.best_history = list(getattr(det, "history_", []))
    state.best_scores = pd.DataFrame(test[1]) if test is not None else None
    state.best_test = test[0] if test is not None and ddp_fit is not None else None
    keep = ddp_fit is None and not settings.config.score_all_test  # its test pass is still to come, in this process
    state.best_model = det if keep else None
    state.best_detector = det.to_bytes() if keep and hasattr(det, "to_bytes") else None


def run_class_configs(trial: dict, dataset, settings: TrialSettings, state: TrialState, *, device: str,
                      trial_id: str, report, node_id: str | None = None) -> TrialState:
    """Train `trial`'s configs not in `state.rows` one after another; call report(row, state) after each.

    The body of a class trial without Ray (report is `ray.tune.report` glue in `class_trial`).
    node_id: the Ray node the trial runs on, recorded in each row (which node trained which config).
    The best config's test row is added to state.rows before the last config is reported (module notes).
    """
    sweep_config = settings.config
    start_no = state.starts
    state.starts += 1
    images = class_images(dataset, trial["normal_class"], sweep_config)
    todo = configs_to_train(trial, state.rows)
    best = best_val_auroc(state.rows)
    for fits_now, config in enumerate(todo):
        check_fault_drill(sweep_config, start_no, fits_now, trial_id)
        t0 = time.perf_counter()
        det, params, ddp_fit, val_auroc, fit_s, val_s = fit_and_validate(trial, config, dataset, images, settings,
                                                                         device=device, trial_id=trial_id)
        row = config_row(det, params, trial, config, dataset, images, seed=sweep_config.seed,
                         val_auroc=val_auroc, fit_s=fit_s, val_s=val_s, ddp_fit=ddp_fit, device=device,
                         trial_id=trial_id, node_id=node_id, start_no=start_no, fit_index=state.fits)
        state.fits += 1
        new_best = is_better(val_auroc, best)
        test = None
        if sweep_config.score_all_test or (new_best and ddp_fit is not None):  # DDP: rank 0 scored it already
            test = _test_row(det, ddp_fit, images.split, dataset)
        if sweep_config.score_all_test:
            row.update(test[0], test_scored=True, test_scored_from="each config")
        row["config_seconds"] = time.perf_counter() - t0  # the config's whole wall: fit, validation (and test)
        state.rows.append(row)
        if new_best:
            best = val_auroc
            keep_best(state, row, det, ddp_fit, test, settings)
        del det
        if fits_now == len(todo) - 1:  # the trial's last config: the best is known, score its test split once
            _finish_best(state, images.split, dataset, device)
        report(row, state)
    best_row = state.rows[state.best_index()] if state.best_name is not None else None
    if best_row is not None and not best_row.get("test_scored"):  # restored after its last report, before the test
        _finish_best(state, images.split, dataset, device)
        report(best_row, state)
    state.best_model = None
    return state


def _test_row(det, ddp_fit, split, dataset) -> tuple[dict, dict]:
    """(test metrics, per-image test scores) of one config: scored here, or from DDP rank 0's scores."""
    from ..protocols import metrics_of_scores, score_fitted

    if ddp_fit is None:
        return score_fitted(det, split.X_test, split.is_normal_test, labels_test=dataset.test_labels)
    return metrics_of_scores(det, ddp_fit.scores["test"], ddp_fit.head_scores["test"], split.is_normal_test,
                             labels_test=dataset.test_labels, score_seconds=ddp_fit.set_seconds.get("test", 0.0))


def _finish_best(state: TrialState, split, dataset, device: str) -> None:
    """Give the best config's row its test metrics (once per class trial), unless it has them.

    In-process: scores the test split with the best detector, from memory or (after a restart)
    from the detector file in the checkpoint. DDP mode: the test metrics rank 0 computed.
    """
    import pandas as pd

    from ..protocols import score_fitted

    i = state.best_index()
    if i is None:  # every validation AUROC was NaN: nothing is selected, so nothing to test (select_by_validation)
        return
    row = state.rows[i]
    if row.get("test_scored"):
        return
    if state.best_test is not None:  # DDP: rank 0 scored the test split when this config was fitted
        row.update(state.best_test, test_scored=True, test_scored_from="ddp rank 0")
        return
    det, source = state.best_model, "memory"
    if det is None:
        if state.best_detector is None:
            raise RuntimeError(f"class trial: the best config ({row.get('grid')} k={row.get('k')}) has neither "
                               "weights in memory nor a detector file in the checkpoint; cannot score its test split")
        from ..detector import MultiTaskDetector

        det, source = MultiTaskDetector.load(state.best_detector, device=device), "checkpoint"
    t0 = time.perf_counter()
    test_row, scores = score_fitted(det, split.X_test, split.is_normal_test, labels_test=dataset.test_labels)
    row.update(test_row, test_scored=True, test_scored_from=source)
    row["config_seconds"] = row.get("config_seconds", 0.0) + time.perf_counter() - t0
    state.best_scores = pd.DataFrame(scores)


def class_trial(tune_config: dict, dataset=None, settings: TrialSettings | None = None) -> None:
    """The Tune trainable: one class trial on the device Tune gave it; a row and a checkpoint per config."""
    import ray
    import ray.tune
    import torch

    from .progress import trial_finished
    from .resources import trial_device

    device, threads = trial_device(allow_cpu_fallback=settings.config.cpu_fallback)
    if settings.mode == IN_PROCESS:
        torch.set_num_threads(threads)  # the CPUs this trial reserved, also when Ray reuses the actor
    state = TrialState.from_checkpoint(ray.tune.get_checkpoint())
    trial_id = ray.tune.get_context().get_trial_id()
    trial = tune_config[TRIAL_KEY]
    n_configs = len(trial["configs"])

    def report(row: dict, st: TrialState) -> None:
        metrics = {k: v for k, v in row.items() if k != "config"}
        metrics[CONFIG_KEY] = row["config"]  # Tune fills result["config"] with the trial's own config
        metrics.update(trial_configs_done=len(st.rows), trial_configs=n_configs)
        with tempfile.TemporaryDirectory() as checkpoint_dir:
            st.save(checkpoint_dir)
            ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(checkpoint_dir))

    try:
        run_class_configs(trial, dataset, settings, state, device="cpu" if settings.mode != IN_PROCESS else device,
                          trial_id=trial_id, report=report, node_id=ray.get_runtime_context().get_node_id())
    finally:
        trial_finished(settings.progress_board, trial_id)  # off the console's [running] line
    if device == "cuda":
        torch.cuda.empty_cache()  # the actor may be reused by the next class trial


__all__ = ["TrialSettings", "TrialDrill", "class_trial", "run_class_configs", "CONFIG_KEY",
           "TRIAL_KEY"]
