"""The Ray glue: DDP training (Ray Train), sweeps (Ray Tune), batch scoring (Ray Data), run storage.

Importing this package imports no Ray; each name below loads its module on first use:

    from mtssad.distributed import train_detector_ddp, run_sweep, score_with_ray_data
"""

from __future__ import annotations

_EXPORTS = {
    "train_detector_ddp": ".train",
    "fit_ddp": ".train",
    "DDPFit": ".train",
    "use_ddp": ".train",
    "ddp_workers": ".train",
    "check_ddp_resources": ".train",
    "CheckpointError": ".train",
    "run_sweep": ".tune",
    "SweepIncomplete": ".tune",
    "sweep_trials": ".sweep_space",
    "SweepConfig": ".sweep_config",
    "class_trials": ".sweep_space",
    "class_trial": ".sweep_trial",
    "TrialSettings": ".sweep_trial",
    "select_by_validation": ".selection",
    "selection_set": ".selection",
    "class_trial_resources": ".resources",
    "DetectorScorer": ".data",
    "score_with_ray_data": ".data",
    "load_detector": ".data",
    "copy_to_storage": ".storage",
    "publish_dir": ".storage",
    "join_uri": ".storage",
    "check_storage_path": ".storage",
    "StorageError": ".storage",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
