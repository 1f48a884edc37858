"""A class trial: the Tune trainable that trains one (normal class, method)'s configs one after another.

    tune.with_resources(tune.with_parameters(class_trial, dataset=ds, settings=SweepSettings(...)),
                        {"CPU": 1, "GPU": 0.25})

One process per class, on the trial's own device (cuda when Tune gave it a GPU, else cpu):
the validation split and the selection set are built once, then each (grid, k) config is
fitted with the plain `MultiTaskDetector.fit` (or, with num_workers >= 2, `fit_ddp`, whose rank 0
scores the selection set and test split on the workers' device), scored on the selection set,
and reported as one row (`ray.tune.report`). No TorchTrainer,
no per-config process start.

Test scoring: the test split is scored when a config becomes the best on validation so far
(or for every config with `score_all_test`), so the checkpoint always holds the test row and
the per-image scores of the current best: a resumed trial never needs a model it no longer
has, and never retrains a finished config. (Configs come in a fixed order, so a class of n
configs scores its test split about H_n = 1 + 1/2 + ... + 1/n times: 2.8 for 9 configs.)

Checkpoint (a few KB of rows, plus the best config's per-image test scores and history;
never model weights): rows.json (every finished config's row), state.json (counters),
best_scores.parquet, best_history.json. A resumed trial reads it and continues at the next
config. Every row records `trial_start` (0 = first start of this trial, 1 = after one
restore, ...) and `fit_index` (the how-many-th fit of this trial it was): a finished config
retrained would show up as a second row or as more fits than configs. `node_id` is the Ray node
that ran the config (on an autoscaling cluster: which GPU node).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .resources import IN_PROCESS
from .selection import VAL_ANOMALY_RATIO, VAL_MAX_ANOMALIES, is_better, selection_set
from .sweep_space import grid_tuple

CONFIG_KEY = "detector_config"  # the row's `config` column travels under this name through Tune
ROWS_FILE, STATE_FILE = "rows.json", "state.json"
BEST_SCORES, BEST_HISTORY = "best_scores.parquet", "best_history.json"


@dataclass
class SweepSettings:
    """What every class trial of a sweep shares (travels once through the object store)."""

    params: dict = field(default_factory=dict)  # DetectorConfig fields of every config (backbone, epochs, ...)
    seed: int = 0  # splits, init, permutations: the same seed for every config, so configs differ only by grid/k
    val_fraction: float = 0.2  # share of the normal class's training images held out for validation
    val_anomaly_ratio: float = VAL_ANOMALY_RATIO  # selection-set anomalies per held-out normal (selection.py)
    val_max_anomalies: int = VAL_MAX_ANOMALIES  # cap on those anomalies (scoring cost per config)
    score_all_test: bool = False  # score the test split for every config, not only each new best (slower; for studies)
    mode: str = IN_PROCESS  # "in_process" (fit in the trial) or "ddp" (train_detector_ddp per config)
    num_workers: int = 1  # DDP workers per config in "ddp" mode
    use_gpu: bool = False  # DDP workers on GPUs ("ddp" mode; in-process trials use the GPU Tune gave them)
    resources_per_worker: dict | None = None  # DDP workers' resources ("ddp" mode)
    train_storage: str = ""  # where DDP runs keep their checkpoints ("ddp" mode)
    max_failures: int = 2  # DDP worker-group restarts per config
    controller_failure_limit: int = -1  # DDP: 0 makes an unschedulable worker group fail fast (tests)
    crash_after_configs: int | None = None  # fault drill: the trial's first start raises after this many fits
    cpu_fallback: bool = False  # a trial given a GPU it cannot use trains on the CPU instead of failing (fake GPUs)
    progress_board: str | None = None  # name of the driver's progress board actor (steps of running configs)


class TrialDrill(RuntimeError):
    """Raised by the `crash_after_configs` fault drill (tests, checking a cluster's restore path)."""


@dataclass
class TrialState:
    """What a class trial checkpoints: its finished rows and counters (JSON), and the best config's outputs."""

    rows: list = field(default_factory=list)  # finished configs' rows, in training order
    starts: int = 0  # how many times this trial has started (restores + 1)
    fits: int = 0  # fits run by this trial over all its starts
    best_name: str | None = None  # row_key text of the best config so far (whose scores/history are kept)
    best_scores: object = None  # pandas DataFrame of the best config's per-image test scores
    best_history: list | None = None  # its per-epoch training history

    def save(self, d: str) -> None:
        with open(os.path.join(d, ROWS_FILE), "w") as f:
            json.dump(self.rows, f, default=_json_default)
        with open(os.path.join(d, STATE_FILE), "w") as f:
            json.dump({"starts": self.starts, "fits": self.fits, "best_name": self.best_name}, f)
        if self.best_scores is not None:
            self.best_scores.to_parquet(os.path.join(d, BEST_SCORES), index=False)
        if self.best_history is not None:
            with open(os.path.join(d, BEST_HISTORY), "w") as f:
                json.dump(self.best_history, f, default=_json_default)

    @classmethod
    def load(cls, d: str) -> "TrialState":
        import pandas as pd

        with open(os.path.join(d, ROWS_FILE)) as f:
            rows = json.load(f)
        with open(os.path.join(d, STATE_FILE)) as f:
            st = json.load(f)
        scores = pd.read_parquet(os.path.join(d, BEST_SCORES)) if os.path.exists(os.path.join(d, BEST_SCORES)) else None
        history = None
        if os.path.exists(os.path.join(d, BEST_HISTORY)):
            with open(os.path.join(d, BEST_HISTORY)) as f:
                history = json.load(f)
        return cls(rows, st["starts"], st["fits"], st.get("best_name"), scores, history)

    @classmethod
    def from_checkpoint(cls, checkpoint) -> "TrialState":
        if checkpoint is None:
            return cls()
        with checkpoint.as_directory() as d:
            return cls.load(d)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-serializable: {type(o).__name__}")


def config_id(row_or_cfg: dict) -> tuple:
    """(grid, k) of a config spec or a row: what identifies a config inside its class trial."""
    return row_or_cfg.get("grid"), row_or_cfg.get("k")


def _fit(det, method: str, d, s: SweepSettings, name: str, X_sel, progress: dict | None = None):
    """Fit one config: (fitted detector, DDPFit or None).

    In the trial's process: None (the trial scores on its own device). With DDP workers
    (num_workers >= 2): rank 0 recalibrates, calibrates and scores the selection set and the test
    split on its device (the trial reserved only driver CPUs); the DDPFit holds those scores and
    their seconds per set. Rank 0 scores the test split for every config, since which config
    becomes the best is known only after validation: one more pass per config, on the workers' device.
    """
    from ..methods import METHODS
    from .train import fit_ddp

    if s.mode == IN_PROCESS or not METHODS[method].neural:
        return det.fit(d.X_fit, X_val=d.X_val, y_val=d.y_val, **(progress or {})), None
    out = fit_ddp(
        d.X_fit, det, num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=s.resources_per_worker,
        storage_path=s.train_storage, name=name, max_failures=s.max_failures,
        controller_failure_limit=s.controller_failure_limit, X_val=d.X_val, y_val=d.y_val,
        score_sets={"selection": X_sel, "test": d.X_test},
    )
    return out.detector, out


def run_class_configs(task: dict, dataset, s: SweepSettings, state: TrialState, *, device: str, trial_id: str,
                      report, node_id: str | None = None) -> TrialState:
    """Train `task`'s configs not in `state.rows` one after another; call report(row, state) after each.

    The body of a class trial without Ray (report is `ray.tune.report` glue in `class_trial`).
    node_id: the Ray node the trial runs on, recorded in each row (which node trained which config).
    """
    import pandas as pd

    from ..methods import METHODS, make_method
    from ..metrics import auroc
    from ..protocols import (PROTOCOL_PARAMS, data_identity, describe_config, metrics_of_scores, one_vs_all_data,
                             score_fitted, score_with_heads)
    from ..results import row_key

    ds, c, method = dataset, task["normal_class"], task["method"]
    start_no = state.starts
    state.starts += 1
    d = one_vs_all_data(ds, c, seed=s.seed, val_fraction=s.val_fraction)
    X_sel, y_sel = selection_set(ds.train_images, ds.train_labels, c, d.X_val, d.y_val, seed=s.seed,
                                 ratio=s.val_anomaly_ratio, max_anomalies=s.val_max_anomalies)
    data = json.dumps(data_identity(ds, val_fraction=s.val_fraction), sort_keys=True)  # the rows' data selection
    done = {config_id(r) for r in state.rows}
    best = None
    for r in state.rows:
        if is_better(r["val_auroc"], best):
            best = r["val_auroc"]
    fits_now = 0
    for cfg in task["configs"]:
        if config_id(cfg) in done:
            continue
        if s.crash_after_configs is not None and start_no == 0 and fits_now >= s.crash_after_configs:
            raise TrialDrill(f"fault drill: class trial {trial_id} stops after {fits_now} config(s)")
        t0 = time.perf_counter()
        params = dict(s.params, seed=s.seed, **PROTOCOL_PARAMS)  # fitted as `mtssad evaluate` fits
        if cfg["grid"] is not None:
            params.update(grid=grid_tuple(cfg["grid"]), k=cfg["k"])
        if METHODS[method].neural:
            params["device"] = device  # the trial's own device, whatever params said
        det = make_method(method, **params)
        from .progress import fit_progress_kwargs  # live steps on the driver's console (progress_callback)

        progress = fit_progress_kwargs(det, s.progress_board, trial_id, f"class {ds.class_names[c]} / {method}"
                                       + (f" {cfg['grid']} k={cfg['k']}" if cfg["grid"] else ""),
                                       task["configs"].index(cfg) + 1, len(task["configs"]))
        det, scored = _fit(det, method, d, s, name=f"train-{trial_id}-{cfg['grid']}-k{cfg['k']}", X_sel=X_sel,
                           progress=progress)
        fit_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        val_auroc = auroc(y_sel, scored.scores["selection"] if scored else score_with_heads(det, X_sel)[0])
        val_s = time.perf_counter() - t1
        if scored:  # rank 0 scored both sets inside the Ray run: count them as scoring, not training
            val_s += scored.set_seconds.get("selection", 0.0)
            fit_s -= sum(scored.set_seconds.values())
        row = describe_config(method, params, det)
        row.update(dataset=ds.name, normal_class=ds.class_names[c], seed=s.seed, split="test", data=data,
                   n_train=len(d.X_fit), n_val=len(y_sel), n_val_anomalies=int((y_sel == 0).sum()),
                   val_auroc=val_auroc, train_seconds=fit_s, val_seconds=val_s,
                   epochs_run=len(getattr(det, "history_", [])),
                   epochs_seconds=sum(h.get("seconds", 0.0) for h in getattr(det, "history_", [])), device=device, trial_id=trial_id,
                   node_id=node_id, trial_start=start_no, fit_index=state.fits, test_scored=False,
                   scored_on="trial" if scored is None else "ddp rank 0")
        state.fits += 1
        fits_now += 1
        new_best = is_better(val_auroc, best)
        if new_best or s.score_all_test:
            if scored is None:
                test_row, scores = score_fitted(det, d.X_test, d.is_normal_test, labels_test=ds.test_labels)
            else:
                test_row, scores = metrics_of_scores(det, scored.scores["test"], scored.head_scores["test"],
                                                     d.is_normal_test, labels_test=ds.test_labels,
                                                     score_seconds=scored.set_seconds.get("test", 0.0))
            row.update(test_row, test_scored=True)
            if new_best:
                best = val_auroc
                state.best_name = json.dumps(list(row_key(row)))
                state.best_scores = pd.DataFrame(scores)
                state.best_history = list(getattr(det, "history_", []))
        del det
        row["config_seconds"] = time.perf_counter() - t0  # the config's whole wall: fit, validation, test
        state.rows.append(row)
        report(row, state)
    return state


def class_trial(config: dict, dataset=None, settings: SweepSettings | None = None) -> None:
    """The Tune trainable: one class trial on the device Tune gave it; a row and a checkpoint per config."""
    import ray
    import ray.tune
    import torch

    from .resources import trial_device

    s = settings
    device, threads = trial_device(allow_cpu_fallback=s.cpu_fallback)
    if s.mode == IN_PROCESS:
        torch.set_num_threads(threads)  # the CPUs this trial reserved, also when Ray reuses the actor
    state = TrialState.from_checkpoint(ray.tune.get_checkpoint())
    trial_id = ray.tune.get_context().get_trial_id()
    n_configs = len(config["task"]["configs"])

    def report(row: dict, st: TrialState) -> None:
        metrics = {k: v for k, v in row.items() if k != "config"}
        metrics[CONFIG_KEY] = row["config"]  # Tune fills result["config"] with the trial's own config
        metrics.update(trial_configs_done=len(st.rows), trial_configs=n_configs)
        with tempfile.TemporaryDirectory() as d:
            st.save(d)
            ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(d))

    run_class_configs(config["task"], dataset, s, state, device="cpu" if s.mode != IN_PROCESS else device,
                      trial_id=trial_id, report=report, node_id=ray.get_runtime_context().get_node_id())
    if device == "cuda":
        torch.cuda.empty_cache()  # the actor may be reused by the next class trial


__all__ = ["SweepSettings", "TrialState", "TrialDrill", "class_trial", "run_class_configs", "CONFIG_KEY"]
