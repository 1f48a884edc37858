"""Live progress of a sweep on the driver's console: configs done of total, the class, elapsed and ETA.

A Tune callback (runs in the driver) that logs one line per finished config, as class trials
report them:

    [7/20 configs] class 3 / ours 2x2 k=3: val AUROC 0.981 (12.4s; test AUROC 0.990) | elapsed 1:32, ETA 2:51

On a resumed sweep, configs finished before are counted from the restored trials' last results.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("mtssad.sweep")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def progress_line(done: int, total: int, row: dict, elapsed: float, done_here: int) -> str:
    """The line for one finished config; ETA from this run's rate (configs done here / elapsed)."""
    what = f"class {row.get('normal_class')} / {row.get('method')}"
    if row.get("grid"):
        what += f" {row['grid']} k={row.get('k')}"
    test = f"; test AUROC {row['auroc']:.3f}" if row.get("test_scored") and row.get("auroc") is not None else ""
    eta = _clock(elapsed / done_here * max(0, total - done)) if done_here else "?"
    return (f"[{done}/{total} configs] {what}: val AUROC {row.get('val_auroc', float('nan')):.3f} "
            f"({row.get('config_seconds', 0.0):.1f}s{test}) | elapsed {_clock(elapsed)}, ETA {eta}")


def make_progress_callback(total: int):
    """A ray.tune.Callback logging each finished config (built lazily: importing this module needs no Ray)."""
    import ray.tune

    class SweepProgress(ray.tune.Callback):
        def __init__(self):
            self.setup()

        def setup(self, **info):
            # Called when the experiment (re)starts: Tuner.restore brings back the pickled callback, whose
            # clock and counts belong to the interrupted run.
            self.t0 = time.perf_counter()
            self.done_by_trial: dict[str, int] = {}
            self.done_here = 0
            self.seen_restored = False

        def on_step_begin(self, iteration, trials, **info):
            if self.seen_restored:
                return
            self.seen_restored = True  # a restored sweep: its trials' last results say what was done before
            for t in trials:
                n = (t.last_result or {}).get("trial_configs_done")
                if n:
                    self.done_by_trial[t.trial_id] = int(n)
            if self.done_by_trial:
                log.info("resumed: %d of %d configs were done before", sum(self.done_by_trial.values()), total)

        def on_trial_start(self, iteration, trials, trial, **info):
            task = trial.config.get("task", {})
            log.debug("class trial %s started: class %s / %s, %d config(s)", trial.trial_id,
                      task.get("normal_class"), task.get("method"), len(task.get("configs", [])))

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if "trial_configs_done" not in result:
                return
            self.done_by_trial[trial.trial_id] = int(result["trial_configs_done"])
            self.done_here += 1
            log.info(progress_line(sum(self.done_by_trial.values()), total, result,
                                   time.perf_counter() - self.t0, self.done_here))

        def on_trial_error(self, iteration, trials, trial, **info):
            log.warning("class trial %s failed (class %s / %s); its finished configs are kept in its checkpoint",
                        trial.trial_id, trial.config.get("task", {}).get("normal_class"),
                        trial.config.get("task", {}).get("method"))

        def on_trial_recover(self, iteration, trials, trial, **info):
            log.warning("class trial %s failed; restarting it from its last checkpoint (finished configs are "
                        "not retrained)", trial.trial_id)

    return SweepProgress()



# ---------------------------------------------------------------- steps of the running configs

BOARD_NAMESPACE = "mtssad"  # named actors are looked up here from every trial, whatever the job's namespace


class ProgressBoard:
    """A small Ray actor (created by the sweep driver, named): class trials push where their fits are.

    push(trial_id, what, config_i, configs, steps_done, steps_planned): one entry per trial, its latest;
    snapshot() -> {trial_id: {..., "t": seconds since the board started}}; done(trial_id) drops it.
    """

    def __init__(self):
        self.t0 = time.monotonic()
        self.entries: dict[str, dict] = {}

    def push(self, trial_id: str, what: str, config_i: int, configs: int, steps_done: int, steps_planned: int) -> None:
        self.entries[trial_id] = {"what": what, "config_i": int(config_i), "configs": int(configs),
                                  "steps_done": int(steps_done), "steps_planned": int(steps_planned),
                                  "t": time.monotonic() - self.t0}

    def snapshot(self) -> dict:
        return {"now": time.monotonic() - self.t0, "entries": dict(self.entries)}

    def done(self, trial_id: str) -> None:
        self.entries.pop(trial_id, None)


def board_name(experiment: str, run_id: str) -> str:
    """A name no other board has: the experiment, the driver's job and a random part (a resumed sweep in the
    same job must not meet the previous board, which `ray.kill` ends asynchronously)."""
    import uuid

    return f"mtssad-progress-{experiment}-{run_id}-{uuid.uuid4().hex[:8]}"


def start_board(name: str):
    """The named board actor (0 CPUs, beside the driver); killed with the driver's job or by `ray.kill`."""
    import ray

    return ray.remote(num_cpus=0)(ProgressBoard).options(name=name, namespace=BOARD_NAMESPACE,
                                                          lifetime=None).remote()


def fit_progress_kwargs(det, board: str | None, trial_id: str, what: str, config_i: int, configs: int) -> dict:
    """Tell the sweep's board that this config started; return keyword arguments for `det.fit` that push
    its steps there: {} when there is no board, or when this detector's `fit` takes no `progress_callback`
    (the driver then shows the running config as "starting" until it finishes).

    Called in the class trial's process; the board is looked up by name. Pushes are fire-and-forget:
    a board that went away never stops training.
    """
    import inspect

    handle = _board_handle(board)
    if handle is None:
        return {}

    def progress_callback(steps_done: int, steps_planned: int) -> None:
        try:
            handle.push.remote(trial_id, what, config_i, configs, steps_done, steps_planned)
        except Exception:
            pass

    progress_callback(0, 0)  # the config has started (its step count is known after the first epoch)
    try:
        takes = "progress_callback" in inspect.signature(det.fit).parameters
    except (TypeError, ValueError):
        takes = False
    return {"progress_callback": progress_callback} if takes else {}


def _board_handle(board: str | None):
    """The named board actor, or None when there is none (no board asked for, driver gone, older sweep)."""
    if not board:
        return None
    try:
        import ray

        return ray.get_actor(board, namespace=BOARD_NAMESPACE)
    except Exception:
        return None


def trial_finished(board: str | None, trial_id: str) -> None:
    """Take a class trial off the board when it ends (finished or failed), so the console stops listing its last
    config as running; a restarted trial pushes itself back. Fire-and-forget, like the pushes."""
    handle = _board_handle(board)
    if handle is not None:
        try:
            handle.done.remote(trial_id)
        except Exception:
            pass


def running_line(snapshot: dict, elapsed: float, stale_s: float = 600.0) -> str | None:
    """One console line with the steps of the running configs, e.g.

        [running] class 3 / ours 2x2 k=3 (config 1/2): 120/300 steps; class 4 / ours 2x2 k=3 (config 1/2):
        starting | elapsed 0:45        (one line, folded here)

    Entries not updated for `stale_s` seconds (a trial that ended or died) are left out; None when none is left.
    """
    now = snapshot.get("now", 0.0)
    parts = []
    for _, e in sorted(snapshot.get("entries", {}).items(), key=lambda kv: kv[1]["what"]):
        if now - e["t"] > stale_s:
            continue
        steps = f"{e['steps_done']}/{e['steps_planned']} steps" if e["steps_planned"] else "starting"
        parts.append(f"{e['what']} (config {e['config_i']}/{e['configs']}): {steps}")
    if not parts:
        return None
    return f"[running] {'; '.join(parts)} | elapsed {_clock(elapsed)}"
