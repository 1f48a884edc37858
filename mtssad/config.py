"""The one typed configuration of a self-supervised detector.

Every field says why it exists, and its default and rule live here only: estimators
take the fields as parameters (`config_defaults`), the sweep and the transforms ask
`jigsaw_k_problem`. Validation that needs the images (grid vs. image side) lives in
`mtssad.transforms.check_image_fits`; checks on the data a fit gets in `mtssad.validation`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, fields

# Head names, in the order their transforms are laid out in a batch.
GEOMETRIC_TASKS = ("vertical", "horizontal", "rotation")
ALL_TASKS = GEOMETRIC_TASKS + ("jigsaw",)
# Short names a user may pass for a group of heads (ablations of the paper's Table 4).
TASK_ALIASES = {"geometric": GEOMETRIC_TASKS, "ours": ALL_TASKS, "all": ALL_TASKS}
SCORE_NORMS = ("none", "mean", "standardize")
HEAD_SELECTIONS = ("all", "diagnostic", "validation")
STOPPING_RULES = ("none", "val_auroc", "val_loss")
AMP_DTYPES = ("auto", "bfloat16", "float16")
_BACKBONE_RE = re.compile(r"^wrn-(\d+)-(\d+)$")


def expand_tasks(tasks) -> tuple[str, ...]:
    """Turn names and aliases ("geometric", "jigsaw", ...) into head names, order kept, no repeats."""
    if isinstance(tasks, str):
        tasks = (tasks,)
    out: list[str] = []
    for name in tasks:
        for head in TASK_ALIASES.get(name, (name,)):
            if head not in ALL_TASKS:
                raise ValueError(
                    f"unknown task {name!r}; expected one of {list(ALL_TASKS) + list(TASK_ALIASES)}"
                )
            if head not in out:
                out.append(head)
    if not out:
        raise ValueError("tasks is empty; expected at least one of " + str(list(ALL_TASKS)))
    return tuple(out)


def factorial_exceeds(n: int, k: int) -> bool:
    """Whether n! > k, stopping early: a 3000x3000 grid's (9e6)! would take hours to compute."""
    f = 1
    for i in range(2, n + 1):
        f *= i
        if f > k:
            return True
    return f > k


def jigsaw_k_problem(grid: tuple[int, int], k: int) -> str | None:
    """Why k jigsaw permutations (identity included) cannot be drawn on this grid, or None when they can.

    The one "k fits this grid" rule: DetectorConfig, the transforms and the sweep's search space ask it.
    """
    n_h, n_w = grid
    if 2 <= k and factorial_exceeds(n_h * n_w, k):
        return None
    n = n_h * n_w
    n_perm = math.factorial(n) if not factorial_exceeds(n, 10**18) else "more than 10^18"  # k < 2 on a big grid
    return f"k must satisfy 2 <= k < ({n_h}*{n_w})! = {n_perm} for a {n_h}x{n_w} grid; got k={k}"


def parse_backbone(name: str) -> tuple[int, int]:
    """'wrn-16-4' -> (16, 4); depth must be 6n+4 (n >= 1 residual blocks per stage)."""
    m = _BACKBONE_RE.match(str(name).lower())
    if not m:
        raise ValueError(f"backbone must look like 'wrn-<depth>-<width>' (e.g. wrn-16-4); got {name!r}")
    depth, width = int(m.group(1)), int(m.group(2))
    if depth < 10 or (depth - 4) % 6 != 0 or width < 1:
        raise ValueError(f"Wide-ResNet depth must be 6n+4 >= 10 and width >= 1 (e.g. 10, 16, 22, 28); "
                         f"got depth={depth}, width={width}")
    return depth, width


@dataclass
class DetectorConfig:
    """Hyperparameters of a self-supervised detector (defaults: the paper's, METHOD.md)."""

    # Each field's comment says why it exists (continued on the lines below it where long).
    tasks: tuple[str, ...] = ALL_TASKS  # heads trained and scored; "geometric"/"jigsaw" give the paper's ablations
    grid: tuple[int, int] = (3, 3)  # jigsaw grid (n_h, n_w); the paper's best is 3x3
    k: int = 3  # jigsaw permutations incl. identity; the paper's best is 3
    margin: int = 2  # px a jigsaw patch is smaller than its cell, so edges cannot give the answer away
    shift: float = 0.25  # translation t as a fraction of the image side (8 px at 32 px, as MHRot)
    backbone: str = "wrn-16-4"  # Wide-ResNet depth-width; wrn-10-1 for CPUs, wrn-16-8 is the paper's "~10M"
    dropout: float = 0.3  # dropout before each dense head, as in the paper
    epochs: int = 15  # passes over the normal training images (at least; see min_steps)
    min_steps: int = 300  # optimizer steps a fit never goes below: a ~100-image class gets 4 steps an epoch,
    # so whole epochs are added until this many steps (per data set: mtssad.data.DATASET_MIN_STEPS)
    early_stopping: str = "none"  # "val_auroc" / "val_loss": stop when held-out AUROC (labelled X_val) /
    # held-out normals' self-supervised loss stops improving, keep the best weights; the planned steps are the
    # most a fit trains
    eval_every: int = 25  # optimizer steps between early-stopping measurements (rounded up to whole epochs)
    patience: int = 4  # measurements without improvement before early stopping ends a fit
    batch_size: int = 32  # original images per step (each expanded to all its variants)
    lr: float = 0.1  # initial SGD learning rate, cosine-annealed to 0
    momentum: float = 0.9  # Nesterov momentum
    weight_decay: float = 5e-4  # L2 on all weights
    bn_recalibration: bool = True  # recompute BatchNorm statistics over the training variants after training:
    # running averages lag on small classes
    score_norm: str = "none"  # "none" = paper's mean of per-head sums; "mean" divides by #transforms;
    # "standardize" z-scores on held-out normals
    score_heads: tuple[str, ...] | None = None  # heads averaged in the score (None = all trained heads);
    # manual head selection
    head_selection: str = "all"  # "diagnostic" drops heads the task-suitability diagnostic on the held-out
    # data finds unsuited; "validation" keeps all heads or the geometric ones, whichever scores the higher AUROC
    # on fit's labelled X_val/y_val: eq. 6's plain mean lets an unsuited head add noise (glyphs: jigsaw "too
    # easy" on 29/30 runs), and the diagnostic reads task accuracy, not detection
    contamination: float = 0.05  # assumed anomaly fraction that sets threshold_ for predict()
    calibration_fraction: float = 0.2  # training normals held out (seeded) to set threshold_ when fit gets no
    # held-out normals: scores of training images are optimistic (a threshold on them flagged 7.8% of digits'
    # test normals at contamination 0.05, 12.7% for digit 3); 0 = train on all, threshold on training scores
    # (predict warns)
    score_batch_size: int = 256  # original images per scoring batch; bounds memory, not results
    seed: int = 0  # seeds torch, numpy, permutations, jigsaw offsets and shuffling
    device: str = "auto"  # "auto" = cuda if available else cpu
    amp: bool = False  # mixed-precision autocast on GPU (see amp_dtype); ignored on CPU
    amp_dtype: str = "auto"  # "auto" = bfloat16 where the GPU has it, else float16; float16 always trains with
    # a GradScaler
    channels_last: bool = True  # NHWC layout: oneDNN convolutions 1.2-1.6x faster on CPU
    # (benchmarks/profile_hot_paths.py); same results up to float rounding, which depends more on the thread
    # count than NCHW's
    progress: bool = True  # tqdm bar with the loss during fit

    def __post_init__(self):
        self.tasks = expand_tasks(self.tasks)
        if self.score_heads is not None:
            self.score_heads = expand_tasks(self.score_heads)
            extra = set(self.score_heads) - set(self.tasks)
            if extra:
                raise ValueError(f"score_heads {sorted(extra)} are not trained heads; trained: {list(self.tasks)}")
        grid = self.grid
        grid = tuple(int(v) for v in grid.lower().split("x")) if isinstance(grid, str) else tuple(grid)
        if len(grid) != 2 or not all(isinstance(g, int) and not isinstance(g, bool) for g in grid):
            raise ValueError(f"grid must be two integers (n_h, n_w); got {self.grid!r}")
        if min(grid) < 1 or grid[0] * grid[1] < 2:
            raise ValueError(f"grid must have n_h, n_w >= 1 and at least 2 cells; got {grid}")
        self.grid = grid
        if "jigsaw" in self.tasks:
            problem = jigsaw_k_problem(grid, self.k)
            if problem:
                raise ValueError(problem)
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0 px; got {self.margin}")
        if not (0 < self.shift < 0.5):
            raise ValueError(f"shift must be a fraction of the side in (0, 0.5); got {self.shift}")
        parse_backbone(self.backbone)
        for name, lo in (("epochs", 1), ("min_steps", 0), ("batch_size", 1), ("score_batch_size", 1), ("eval_every", 1),
                         ("patience", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}; got {v!r}")
        for name in ("lr", "momentum", "weight_decay", "dropout"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a finite number >= 0; got {getattr(self, name)!r}")
        if self.lr == 0:
            raise ValueError("lr must be > 0; got 0")
        if not self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout}")
        if self.score_norm not in SCORE_NORMS:
            raise ValueError(f"score_norm must be one of {SCORE_NORMS}; got {self.score_norm!r}")
        if self.head_selection not in HEAD_SELECTIONS:
            raise ValueError(f"head_selection must be one of {HEAD_SELECTIONS}; got {self.head_selection!r}")
        if self.head_selection != "all" and self.score_heads is not None:
            raise ValueError(f"choose the scored heads one way: score_heads={list(self.score_heads)} "
                             f"or head_selection={self.head_selection!r}, not both")
        if self.early_stopping not in STOPPING_RULES:
            raise ValueError(f"early_stopping must be one of {STOPPING_RULES}; got {self.early_stopping!r}")
        if self.amp_dtype not in AMP_DTYPES:
            raise ValueError(f"amp_dtype must be one of {AMP_DTYPES}; got {self.amp_dtype!r}")
        if not (0 < self.contamination < 0.5):
            raise ValueError(f"contamination must be in (0, 0.5); got {self.contamination}")
        if not (0 <= self.calibration_fraction < 1):
            raise ValueError(f"calibration_fraction must be in [0, 1); got {self.calibration_fraction!r}")
        if self.device != "auto" and not re.match(r"^(cpu|cuda(:\d+)?|mps)$", self.device):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; got {self.device!r}")

    @property
    def heads_for_score(self) -> tuple[str, ...]:
        return self.score_heads or self.tasks

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DetectorConfig":
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"config has unknown fields {sorted(unknown)}; this mtssad knows {sorted(known)}")
        for key in ("tasks", "grid", "score_heads"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)


def config_defaults() -> dict:
    """Field name -> default, in field order: the parameters (and defaults) of estimators built on this config."""
    return {f.name: f.default for f in fields(DetectorConfig)}
