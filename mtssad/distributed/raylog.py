"""Ray's own console output during `mtssad sweep`: off the console by default, kept in log files.

What Ray 2.60 prints and where it goes instead (checked in its source):

* worker and actor output (Train's per-report "Reporting training result N: TrainingReport(...)"
  lines, logged at INFO under a logger named after its file path, so `LoggingConfig(log_level)`
  does not filter them; PlacementGroupCleaner tracebacks; PreemptionWatcher core-worker lines)
  reaches the driver only through `ray.init(log_to_driver=True)`. With log_to_driver=False it
  stays in Ray's session logs: <session dir>/logs/worker-*.out|err and logs/train/*.log.
* the driver's own Ray loggers ("ray", "ray.data": "Started a local Ray instance", Tune's
  "Wrote the latest version of all result files", the token-authentication notice) have
  PlainRayHandler console handlers: raised to ERROR here, and a file handler keeps every line
  in OUTDIR/sweep.log.
* Tune's progress reporter prints the "Configuration for experiment" box and "View detailed
  results here" even at verbose=0 unless RAY_AIR_NEW_OUTPUT=0 (tune/experimental/output.py,
  get_air_verbosity); with it and verbose=0 Tune prints nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os

_RAY_LOGGERS = ("ray", "ray.data")  # Ray's loggers with handlers of their own (ray.tune, ray.train propagate to "ray")


def session_log_dir(context=None) -> str | None:
    """<session dir>/logs of the connected Ray (the worker logs), or None when unknown."""
    info = getattr(context, "address_info", None) or {}
    session = info.get("session_dir")
    if session is None:
        with contextlib.suppress(Exception):  # a Ray this call did not start: ask the connected node
            import ray

            session = ray._private.worker.global_worker.node.get_session_dir_path()
    return os.path.join(session, "logs") if session else None


@contextlib.contextmanager
def ray_console(log_file: str | None, *, verbose: bool):
    """While a sweep runs: Ray's driver-side messages go to `log_file` (with mtssad's); off the console unless
    verbose."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    file_handler = None
    mtssad_log = logging.getLogger("mtssad")
    mtssad_level = mtssad_log.level
    if log_file:
        mtssad_log.setLevel(min(mtssad_level or logging.INFO, logging.INFO))  # the file gets INFO also under -q
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(fmt)
        for name in ("mtssad", *_RAY_LOGGERS):
            logging.getLogger(name).addHandler(file_handler)
    quieted: list[tuple[logging.Handler, int]] = []
    env_before = os.environ.get("RAY_AIR_NEW_OUTPUT")
    if not verbose:
        import ray  # noqa: F401  (sets up Ray's console handlers, which are quieted next)

        for name in _RAY_LOGGERS:
            for h in logging.getLogger(name).handlers:
                if (isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
                        and h is not file_handler):
                    quieted.append((h, h.level))
                    h.setLevel(logging.ERROR)
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # no Tune box / "View detailed results" lines at verbose=0
    try:
        yield
    finally:
        for h, level in quieted:
            h.setLevel(level)
        if not verbose:
            if env_before is None:
                os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
            else:
                os.environ["RAY_AIR_NEW_OUTPUT"] = env_before
        mtssad_log.setLevel(mtssad_level)
        if file_handler is not None:
            for name in ("mtssad", *_RAY_LOGGERS):
                logging.getLogger(name).removeHandler(file_handler)
            file_handler.close()
