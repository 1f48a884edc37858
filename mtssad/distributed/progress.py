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

