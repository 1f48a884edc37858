"""Connecting to Ray for the duration of a command, as `ray.init()` does: join the running cluster, else start a
private local Ray (and say so).

`connection_plan` decides without Ray (the sweep's checks read it before anything starts); `ray_session`
connects. Used by `mtssad sweep` and the `ray_jobs/` scripts.
"""

from __future__ import annotations

import contextlib
import logging
import os

log = logging.getLogger(__name__)


def connection_plan(address: str | None = None, *, local: bool = False, env=None,
                    running_cluster: str | None = None) -> tuple[str, str]:
    """How `ray_session` connects, as ("join", address) or ("local", why); `ray.init()` semantics.

    local=True: a private local Ray (asked for). Else an address (argument, then $RAY_ADDRESS, which
    `ray job submit` sets) is joined; else a cluster started on this machine with `ray start`
    (`running_cluster`: its address, read from Ray's temp dir when not given); else, with nothing to
    join, a local Ray is started, and the reason is returned so it can be logged.
    """
    env = os.environ if env is None else env
    if local:
        return "local", "asked for (--local)"
    address = address or env.get("RAY_ADDRESS") or None
    if address:  # also "auto": asked to join whatever runs (ray.init says so if nothing does)
        return "join", address
    if running_cluster is None:
        running_cluster = _running_cluster_address()
    if running_cluster:
        return "join", "auto"
    return "local", "no Ray cluster to join (no --ray-address, RAY_ADDRESS unset, no `ray start` on this machine)"


def _running_cluster_address() -> str | None:
    """The address a `ray start` on this machine left in Ray's temp dir, if any (what ray.init() joins)."""
    try:
        from ray._private.services import find_bootstrap_address  # private; what ray.init(address=None) reads

        return find_bootstrap_address(None)
    except Exception:  # an older/newer Ray without it: ray.init() decides then
        return None


@contextlib.contextmanager
def ray_session(address: str | None = None, *, local: bool = False, num_cpus: int | None = None,
                log_to_driver: bool = True, storage_path: str | None = None):
    """Connect to Ray for the duration of a command; shut down only a Ray this call started.

    Joins the running cluster by default (`connection_plan`: address, $RAY_ADDRESS, a `ray start`
    cluster on this machine); starts a private local Ray (loopback, no dashboard, `num_cpus`) only
    when local=True or there is nothing to join, and logs that it did (a warning when not asked for).
    log_to_driver=False keeps workers' output in Ray's session logs (<session dir>/logs), off this console.
    storage_path: refused (StorageError) when it is a head-local path on several alive nodes.
    Yields the `ray` module; `ray_session.log_dir` then holds the session's log directory.
    """
    import ray

    from .raylog import session_log_dir
    from .storage import check_storage_path

    if ray.is_initialized():  # e.g. a test's Ray, or a caller that connected already
        ray_session.log_dir = session_log_dir()
        if storage_path is not None:
            check_storage_path(storage_path)
        yield ray
        return
    how, what = connection_plan(address, local=local)
    if how == "local":  # a warning when not asked for: on a cluster's head it means the cluster is not used
        (log.info if local else log.warning)("starting a local Ray (%s CPUs): %s", num_cpus or "all", what)
        ctx = ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=log_to_driver)
    else:
        log.info("joining the Ray cluster at %s", what)
        ctx = ray.init(address=what, log_to_driver=log_to_driver)
    ray_session.log_dir = session_log_dir(ctx)
    try:
        if storage_path is not None:
            check_storage_path(storage_path)
        yield ray
    finally:
        ray.shutdown()


ray_session.log_dir = None
