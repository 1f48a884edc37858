"""The sweep driver's watch while Tune runs: live steps of the running configs, and waiting that goes nowhere.

    with SweepWatch(board="mtssad-progress-...", trial_resources={"CPU": 1, "GPU": 1}, stall_timeout_s=1800):
        tuner.fit()

A daemon thread of the driver. Every `line_every_s` (first after `first_line_s`, so a sweep shows
progress within its first minute) it logs the steps of the running configs, read from the
progress board (`progress.ProgressBoard`). While class trials wait for resources and none runs
(placement groups PENDING, none CREATED), it logs every `wait_every_s` what is missing: the
trials' request, what the cluster offers now, nodes the autoscaler is launching, failed launches
and the autoscaler's last error (Ray's internal KV, what `ray status` shows). After
`stall_timeout_s` of such waiting it stops the sweep as Ctrl-C does (SIGINT to this process:
Tune ends the run, finished configs kept) and sets `stalled` to the reason; `run_sweep` then
raises `SweepStalled` (exit 6).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time

from .progress import _clock, running_line

log = logging.getLogger("mtssad.sweep")

STALL_TIMEOUT_S = 1800.0  # default --stall-timeout: 30 min, above a cold GPU node's boot + image pull (docs/aws.md)


def placement_groups() -> tuple[int, int, list[dict]]:
    """(pending, created, pending bundles) over the cluster's placement groups (Tune's trials hold one each)."""
    import ray

    pending, created, bundles = 0, 0, []
    for pg in ray.util.placement_group_table().values():
        if pg.get("state") == "PENDING":
            pending += 1
            bundles += list(pg.get("bundles", {}).values())
        elif pg.get("state") == "CREATED":
            created += 1
    return pending, created, bundles


def autoscaler_state() -> dict:
    """What the autoscaler last reported (launching nodes, failed launches, its last error); {} without one."""
    try:
        from ray._private.ray_constants import DEBUG_AUTOSCALING_ERROR, DEBUG_AUTOSCALING_STATUS
        from ray.experimental.internal_kv import _internal_kv_get

        status = _internal_kv_get(DEBUG_AUTOSCALING_STATUS)
        error = _internal_kv_get(DEBUG_AUTOSCALING_ERROR)
    except Exception:  # private API moved, or not connected: say nothing rather than fail the sweep
        return {}
    out = {}
    if status:
        try:
            rep = json.loads(status).get("autoscaler_report") or {}
        except (ValueError, AttributeError):
            rep = {}
        out["launching"] = {str(k): int(v) for k, v in (rep.get("pending_launches") or {}).items()}
        out["pending_nodes"] = len(rep.get("pending_nodes") or [])
        out["failed_nodes"] = [str(f[1]) if isinstance(f, (list, tuple)) and len(f) > 1 else str(f)
                               for f in rep.get("failed_nodes") or []]
    if error:
        text = error.decode(errors="replace") if isinstance(error, bytes) else str(error)
        out["error"] = text.strip().splitlines()[-1][:300] if text.strip() else ""
    return out


def waiting_line(pending: int, bundles: list[dict], available: dict, autoscaler: dict, waited: float,
                 timeout: float) -> str:
    """The once-a-minute line of a sweep whose class trials all wait for resources."""
    asks = sorted({json.dumps({k: float(v) for k, v in sorted(b.items())}) for b in bundles}) or ["?"]
    offer = ", ".join(f"{k} {v:g}" for k, v in sorted(available.items())
                      if k in ("CPU", "GPU") or k.isupper() and not k.startswith("node:")) or "nothing"
    parts = [f"waiting for resources {_clock(waited)}: {pending} class trial(s) ask for {' or '.join(asks)}, "
             f"no trial runs; free now: {offer}"]
    if autoscaler:
        launching = autoscaler.get("launching") or {}
        parts.append("autoscaler: " + (", ".join(f"launching {n} x {t}" for t, n in launching.items()) or
                                       "launching nothing")
                     + f", {autoscaler.get('pending_nodes', 0)} node(s) starting"
                     + (f", failed launches: {', '.join(autoscaler['failed_nodes'][-3:])}"
                        if autoscaler.get("failed_nodes") else ""))
        if autoscaler.get("error"):
            parts.append(f"autoscaler's last error: {autoscaler['error']}")
    else:
        parts.append("no autoscaler status (a cluster without one never adds nodes)")
    parts.append(f"the sweep stops after {_clock(timeout)} of this (--stall-timeout)")
    return "; ".join(parts)


class SweepWatch:
    """Context manager running the watch thread around `tuner.fit()` (see the module docstring)."""

    def __init__(self, *, board: str | None, stall_timeout_s: float = STALL_TIMEOUT_S, first_line_s: float = 20.0,
                 line_every_s: float = 30.0, wait_every_s: float = 60.0, tick_s: float = 2.0):
        self.board, self.stall_timeout_s = board, float(stall_timeout_s)
        self.first_line_s, self.line_every_s = first_line_s, line_every_s
        self.wait_every_s, self.tick_s = wait_every_s, tick_s
        self.stalled: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mtssad-sweep-watch", daemon=True)

    def __enter__(self):
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)
        return False

    def _snapshot(self):
        if not self.board:
            return None
        import ray

        from .progress import BOARD_NAMESPACE

        try:
            return ray.get(ray.get_actor(self.board, namespace=BOARD_NAMESPACE).snapshot.remote(), timeout=10)
        except Exception:
            return None

    def _run(self) -> None:
        import ray

        next_line = self.t0 + self.first_line_s
        wait_since, next_wait = None, None
        while not self._stop.wait(self.tick_s):
            now = time.monotonic()
            try:
                if now >= next_line:
                    snap = self._snapshot()
                    line = running_line(snap, now - self.t0) if snap else None
                    if line:
                        log.info(line)
                    next_line = now + self.line_every_s
                pending, created, bundles = placement_groups()
                if pending and not created:  # trials wait and none runs: nothing moves until a node comes
                    if wait_since is None:
                        wait_since, next_wait = now, now + min(self.wait_every_s, self.first_line_s)
                    waited = now - wait_since
                    if waited >= self.stall_timeout_s:
                        self.stalled = waiting_line(pending, bundles, ray.available_resources(), autoscaler_state(),
                                                    waited, self.stall_timeout_s)
                        log.error("stopping the sweep: %s", self.stalled)
                        os.kill(os.getpid(), signal.SIGINT)  # Tune's own graceful stop, as Ctrl-C
                        return
                    if now >= next_wait:
                        log.warning(waiting_line(pending, bundles, ray.available_resources(), autoscaler_state(),
                                                 waited, self.stall_timeout_s))
                        next_wait = now + self.wait_every_s
                else:
                    wait_since = None
            except Exception as e:  # the watch must never end the sweep by itself failing
                log.debug("sweep watch: %s", e)
