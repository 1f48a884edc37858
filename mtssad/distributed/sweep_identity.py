"""What a sweep trains on and with, stored beside its experiment, so that --resume cannot mix two sweeps.

A resumed Tune experiment keeps its finished rows and hands the *new* command's data and
settings to the unfinished trials: resumed with another --max-train, --seed or --epochs, one
sweep's rows would be silently selected against another's. `run_sweep` writes
{storage}/{name}-identity.json when it creates an experiment and, on resume, refuses when the
command's identity differs (naming each difference). What may change on resume: where and how
it runs (workers, GPUs, CPUs per trial, the data's mount point, the order of --grid-search or
--methods), never what is trained or scored.
"""

from __future__ import annotations

import json

from .storage import filesystem, join_uri, read_bytes, write_bytes

IDENTITY_SUFFIX = "-identity.json"


def sweep_identity(dataset, class_trials: list[dict], config) -> dict:
    """JSON-ready identity: the data selection, every class trial's configs, and the training/selection settings
    of the SweepConfig `config`."""
    from ..protocols import data_identity

    data = {k: v for k, v in data_identity(dataset, val_fraction=config.val_fraction).items()
            if k != "root"}  # the mount point may change
    trials = sorted(({**t, "configs": sorted(t["configs"], key=lambda c: json.dumps(c, sort_keys=True))}
                     for t in class_trials), key=lambda t: (str(t["normal_class"]), t["method"]))
    params = {k: v for k, v in config.params.items() if k not in ("device", "progress")}
    # "tasks" is the stored identity's historical key for the class trials: renaming it would refuse every resume
    ident = {"data": data, "tasks": trials, "params": params, "seed": config.seed,
             "val_anomaly_ratio": config.val_anomaly_ratio, "val_max_anomalies": config.val_max_anomalies}
    return json.loads(json.dumps(ident, sort_keys=True, default=str))  # tuples -> lists, as it reads back


def identity_uri(storage: str, name: str) -> str:
    return join_uri(storage, f"{name}{IDENTITY_SUFFIX}")


def save_identity(storage: str, name: str, identity: dict) -> str:
    return write_bytes(identity_uri(storage, name), json.dumps(identity, indent=1, sort_keys=True).encode())


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'key: stored -> now' for every leaf that differs (dicts key by key, equal-length lists item by item)."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            a, b = dict(enumerate(a)), dict(enumerate(b))
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{k}.")
        elif a != b:
            show = [json.dumps(v)[:80] for v in (a, b)]
            out.append(f"{prefix}{k}: {show[0]} -> {show[1]}")
    return out


def check_resume_identity(storage: str, name: str, identity: dict) -> bool:
    """Raise ValueError when the stored identity differs from this command's; False when none is stored.

    run_sweep refuses a resume without one too (a sweep from before the check): it cannot be checked.
    """
    import pyarrow.fs as pafs

    uri = identity_uri(storage, name)
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return False
    stored = json.loads(read_bytes(uri))
    diff = differences(stored, identity)
    if diff:
        raise ValueError(f"--resume would mix two sweeps: the sweep '{name}' was started with other data or settings "
                         f"({uri}): {'; '.join(diff[:6])}{' ...' if len(diff) > 6 else ''}. Resume with the original "
                         "flags, or start a new sweep with another --experiment-name")
    return True


__all__ = ["sweep_identity", "save_identity", "check_resume_identity", "differences"]
