"""The one typed configuration of a sweep: what it searches, how it selects, where and how it runs.

    config = SweepConfig(classes=[0, 1], grids=["2x2", "3x3"], ks=[3, 6], params=dict(backbone="wrn-10-1"),
                         storage_path="/tmp/ray", out="runs/sweep")
    rows = run_sweep(load_dataset("digits"), config)

Built once -- from the flags (`mtssad sweep`, `distributed.cli.sweep_config_from_args`), from a job's
arguments (`ray_jobs/`) or in Python -- and checked once, here, with messages that name the flag to change.
`run_sweep` passes it down to Tune, the class trials (inside their `TrialSettings`) and the resume identity.
Pure Python: no Ray, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import DetectorConfig
from ..errors import UsageError
from .selection import VAL_ANOMALY_RATIO, VAL_MAX_ANOMALIES

Grid = tuple[int, int]


def parse_grid(text) -> Grid:
    """'3x3' (a flag's spelling) or (3, 3) -> (3, 3); a UsageError naming --grid-search otherwise."""
    if not isinstance(text, str):
        return int(text[0]), int(text[1])
    parts = text.strip().lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise UsageError(f"--grid-search: expected a grid like 3x3; got {text!r}")
    return int(parts[0]), int(parts[1])


def grid_label(grid: Grid) -> str:
    """(3, 3) -> '3x3': the spelling of a row's `grid` column and of a class trial's config."""
    return f"{grid[0]}x{grid[1]}"


@dataclass
class SweepConfig:
    """Settings of one sweep (defaults: a Python caller's; `mtssad sweep`'s flags name where theirs differ)."""

    # what is searched
    classes: tuple | None = None  # normal classes, by index or name (None = every class), resolved on the data set
    methods: tuple[str, ...] = ("ours",)  # methods compared; each is selected on validation on its own
    grids: tuple[Grid, ...] = (DetectorConfig.grid,)  # jigsaw grids tried per class ("3x3" accepted, parsed here)
    ks: tuple[int, ...] = (DetectorConfig.k,)  # jigsaw permutation counts tried per class
    task_search: bool = False  # `ours` also trains its geometric heads alone, chosen on validation like grid and k
    params: dict = field(default_factory=dict)  # DetectorConfig fields every config shares (backbone, epochs, ...)
    seed: int = 0  # splits, init, permutations: one seed for every config, so configs differ only by grid/k/heads
    # how a config is chosen
    val_fraction: float = 0.2  # share of the normal class's training images held out: selection needs validation
    val_anomaly_ratio: float = VAL_ANOMALY_RATIO  # selection-set anomalies per held-out normal (selection.py)
    val_max_anomalies: int = VAL_MAX_ANOMALIES  # cap on those anomalies (scoring cost per config)
    score_all_test: bool = False  # score the test split for every config, not only each class's choice (studies)
    # resources of a class trial
    num_workers: int | None = 1  # DDP workers per config; 1 = train in the trial's process; None = by fit-set size
    use_gpu: bool = False  # trials (or their DDP workers) train on GPUs
    cpus_per_trial: float | None = None  # CPUs a trial asks Tune for (None: 1; DDP: its worker group's)
    gpus_per_trial: float | None = None  # GPUs a trial asks for with use_gpu, fractional ok (None: 1)
    driver_cpus: float = 1.0  # CPUs of a DDP trial's driver process (it trains nothing itself)
    driver_resources: dict | None = None  # extra resources every trial takes, e.g. {"TRAIN_DRIVER": 1} (safe nodes)
    max_concurrent_trials: int | None = None  # trials at once (None: as many as fit: the autoscaler sees demand)
    reuse_actors: bool | None = None  # Tune's actor reuse (None: on for in-process trials)
    ray_train: bool = False  # every config through train_detector_ddp even with 1 worker (overhead benchmark)
    # storage, restarts, stalls
    storage_path: str = "~/ray_results"  # checkpoints and the Tune experiment: a path or a URI (s3://...)
    name: str = "sweep"  # the experiment's fixed name, {storage_path}/{name}: what resume finds
    resume: bool = False  # restore the experiment: finished configs are not retrained
    out: str | None = None  # also write rows, the chosen configs' scores and histories to this ResultsStore
    max_failures: int = 2  # DDP worker-group restarts per config
    trial_max_failures: int = 1  # Tune restarts of a failed class trial (a preempted node), from its checkpoint
    controller_failure_limit: int = -1  # DDP: 0 makes an unschedulable worker group fail fast (tests)
    cpu_fallback: bool = False  # a trial given a GPU it cannot use trains on the CPU instead of failing (fake GPUs)
    stall_timeout_s: float | None = None  # stop when trials waited this long for resources none offers (None: watch's)
    # console and drills
    verbose: int = 0  # Tune's console verbosity (0: mtssad's progress lines only)
    progress_every_s: float = 30.0  # how often the running configs' steps are logged
    crash_after_configs: int | None = None  # fault drill: a trial's first start raises after this many fits

    def __post_init__(self):
        self.classes = None if self.classes is None else tuple(self.classes)
        self.methods = (self.methods,) if isinstance(self.methods, str) else tuple(self.methods)
        self.grids = tuple(parse_grid(g) for g in self.grids)
        self.ks = tuple(int(k) for k in self.ks)
        self.params = dict(self.params or {}, progress=False)  # trials train in Ray workers: no bars there
        if not 0 < self.val_fraction < 1:
            raise UsageError("a sweep selects on validation data: --val-fraction must be in (0, 1); "
                             f"got {self.val_fraction}")
        at_least = [("--max-failures", self.max_failures, 0), ("--max-retries", self.trial_max_failures, 0),
                    ("--num-workers", self.num_workers, 1), ("--max-concurrent-trials", self.max_concurrent_trials, 1)]
        for flag, value, lo in at_least:
            if value is not None and value < lo:
                raise UsageError(f"{flag} must be >= {lo}; got {value}")
        for flag, value in (("--cpus-per-trial", self.cpus_per_trial), ("--gpus-per-trial", self.gpus_per_trial)):
            if value is not None and not value > 0:
                raise UsageError(f"{flag} must be > 0; got {value}")
        if self.stall_timeout_s is not None and not self.stall_timeout_s > 0:
            raise UsageError(f"--stall-timeout must be > 0 minutes; got {self.stall_timeout_s / 60}")
        if self.gpus_per_trial is not None and not self.use_gpu:
            raise UsageError("--gpus-per-trial needs --use-gpu (trials train on CPUs without it)")


__all__ = ["SweepConfig", "parse_grid", "grid_label"]
