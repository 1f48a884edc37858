"""The flags both command lines share (`mtssad` and the `ray_jobs/` scripts) and what is read from them.

Below both command lines: `mtssad/cli.py` and `mtssad/distributed/cli.py` import from here, never from each
other's flags. Building a parser imports no torch and no Ray (`mtssad --help` is instant).
"""

from __future__ import annotations

import argparse

from .config import HEAD_SELECTIONS, SCORE_NORMS, STOPPING_RULES, DetectorConfig
from .logs import LEVELS, bars_enabled

# The method flags' defaults are DetectorConfig's, except these deliberate overrides, each named in --help: a
# CPU-sized backbone and epochs (DetectorConfig's are the paper's wrn-16-4, 15 epochs), and min_steps None = the
# data set's budget (mtssad.data.default_min_steps: DATASET_MIN_STEPS, else DetectorConfig's).
DEFAULTS = dict(backbone="wrn-10-1", epochs=10, min_steps=None, out="runs/evaluate")
_PAPER = DetectorConfig()  # the defaults every other method flag takes


def add_data_args(p: argparse.ArgumentParser, *, dataset_default: str = "digits") -> None:
    from .data import dataset_names

    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=dataset_default, choices=dataset_names(),
                   help="registered data set (default: %(default)s)")
    g.add_argument("--data-root", default=None,
                   help="local copy of the data set, in its standard layout (default: none; digits and glyphs "
                        "need none)")
    g.add_argument("--classes", nargs="*", default=None, help="normal classes, by index or name (default: every class)")
    g.add_argument("--max-train", type=int, default=None,
                   help="cap on the WHOLE training split, all classes together, before one-vs-all (stratified, "
                        "seeded): a normal class keeps about its share, e.g. 2000 of 10 classes -> ~200, minus "
                        "--val-fraction; each row's n_train is what was fitted (default: all)")
    g.add_argument("--max-train-per-class", type=int, default=None,
                   help="cap on each class's training images (seeded; after --max-train, before --val-fraction): "
                        "what one-vs-all runs usually mean by a training size (default: no cap)")
    g.add_argument("--max-test", type=int, default=None,
                   help="stratified seeded subset of the test split (default: all)")
    g.add_argument("--side", type=int, default=32,
                   help="image side in pixels after resizing/padding (default: %(default)s)")
    g.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="convert to 1 (grayscale) or 3 (RGB) channels (default: the data set's own)")
    g.add_argument("--test-fraction", type=float, default=0.3,
                   help="test share for sets without an official split (default: %(default)s)")
    g.add_argument("--skip-bad-images", action="store_true",
                   help="skip unreadable image files (listed and counted) instead of stopping")
    g.add_argument("--crop-bbox", action="store_true", help="cub200: crop each image to its bounding box")


def add_method_args(p: argparse.ArgumentParser) -> None:
    from .data import DATASET_MIN_STEPS
    from .methods import method_names

    budgets = ", ".join(f"{name} {steps}" for name, steps in DATASET_MIN_STEPS.items())
    g = p.add_argument_group("method")
    g.add_argument("--methods", nargs="+", default=["ours"], choices=method_names(load=False),
                   help="methods to compare (default: ours)")
    g.add_argument("--tasks", nargs="+", default=None,
                   help="heads trained and scored by --methods ours (vertical, horizontal, rotation, jigsaw, or "
                        "geometric = the first three); refused with the other methods, whose heads are fixed (default: "
                        "geometric jigsaw)")
    g.add_argument("--backbone", default=DEFAULTS["backbone"],
                   help=f"wrn-<depth>-<width> (default: %(default)s, CPU-friendly; DetectorConfig's is the paper's "
                        f"{_PAPER.backbone})")
    g.add_argument("--epochs", type=int, default=DEFAULTS["epochs"],
                   help="training epochs, >= 1 (more when --min-steps needs them) (default: %(default)s, CPU-friendly; "
                        f"DetectorConfig's is the paper's {_PAPER.epochs})")
    g.add_argument("--min-steps", type=int, default=DEFAULTS["min_steps"],
                   help="optimizer steps a fit never goes below: whole epochs are added until reached, since a "
                        "~100-image class gets 4 steps an epoch; 0 = exactly --epochs (default: the data set's "
                        f"budget, chosen on validation: {budgets}, every other data set DetectorConfig's "
                        f"{_PAPER.min_steps}; docs/METHOD.md)")
    g.add_argument("--early-stopping", choices=STOPPING_RULES, default=_PAPER.early_stopping,
                   help="stop a fit when the validation AUROC (val_auroc) or the held-out normals' self-supervised "
                        f"loss (val_loss) stops improving, measured every {_PAPER.eval_every} steps, best weights "
                        "kept; --min-steps is then the most it trains (default: %(default)s: no rule beat the fixed "
                        "budget, docs/METHOD.md)")
    g.add_argument("--batch-size", type=int, default=_PAPER.batch_size,
                   help="original images per SGD step (default: %(default)s)")
    g.add_argument("--lr", type=float, default=_PAPER.lr,
                   help="initial learning rate, cosine-annealed (default: %(default)s)")
    g.add_argument("--grid", type=int, nargs=2, default=_PAPER.grid, metavar=("N_H", "N_W"),
                   help=f"jigsaw grid (default: {_PAPER.grid[0]} {_PAPER.grid[1]})")
    g.add_argument("--k", type=int, default=_PAPER.k, help="jigsaw permutations incl. identity (default: %(default)s)")
    g.add_argument("--margin", type=int, default=_PAPER.margin, help="jigsaw margin in pixels (default: %(default)s)")
    g.add_argument("--score-norm", choices=SCORE_NORMS, default=_PAPER.score_norm,
                   help="per-head score normalization (default: %(default)s, the paper's)")
    g.add_argument("--score-heads", nargs="+", default=None,
                   help="heads averaged in the score (default: all trained heads)")
    g.add_argument("--head-selection", choices=HEAD_SELECTIONS, default=_PAPER.head_selection,
                   help="'diagnostic' scores only the heads the task-suitability diagnostic on the validation split "
                        "finds suited; 'validation' scores all heads or the geometric ones, whichever has the higher "
                        "AUROC on the validation split (default: %(default)s)")
    g.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of normal training images held out for validation and the task diagnostic; 0 = none "
                        "(default: %(default)s)")
    g.add_argument("--seed", type=int, default=_PAPER.seed,
                   help="seed for data subsets, splits, init, permutations (default: %(default)s)")
    g.add_argument("--device", default=_PAPER.device, help="auto, cpu, cuda, cuda:N (default: %(default)s)")
    g.add_argument("--amp", action="store_true", help="mixed precision on GPU")


def add_output_args(p: argparse.ArgumentParser, default_out: str) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--out", default=default_out, help="output directory (default: %(default)s)")
    g.add_argument("--overwrite", action="store_true", help="rerun rows already in OUTDIR/results.parquet")
    add_logging_args(p)


def add_logging_args(p: argparse.ArgumentParser) -> None:
    """-v/-q/--log-level, accepted before or after the command (`mtssad -q evaluate`, `mtssad evaluate -q`).

    Defaults are SUPPRESSed so a subcommand never overwrites the value given before it; read with `log_level_of`.
    """
    g = p.add_argument_group("messages")
    g.add_argument("-v", "--verbose", dest="log_level", action="store_const", const="DEBUG", default=argparse.SUPPRESS,
                   help="debug messages with time and logger name; sweep: also Ray's own output on the console")
    g.add_argument("-q", "--quiet", dest="log_level", action="store_const", const="WARNING", default=argparse.SUPPRESS,
                   help="warnings and errors only, no progress bars (results are still printed)")
    g.add_argument("--log-level", dest="log_level", type=str.upper, choices=LEVELS, default=argparse.SUPPRESS,
                   help="message level (default: INFO); the last of -v, -q, --log-level wins")


def log_level_of(args) -> str:
    return getattr(args, "log_level", None) or "INFO"


def method_params(args) -> dict:
    """DetectorConfig fields from the flags (non-neural methods ignore them)."""
    from .data import default_min_steps

    min_steps = args.min_steps if args.min_steps is not None else default_min_steps(args.dataset)
    params = dict(backbone=args.backbone, epochs=args.epochs, min_steps=min_steps, early_stopping=args.early_stopping,
                  batch_size=args.batch_size, lr=args.lr,
                  grid=tuple(args.grid), k=args.k, margin=args.margin, score_norm=args.score_norm,
                  head_selection=args.head_selection,
                  device=args.device, amp=args.amp, progress=bars_enabled())
    if args.tasks:
        params["tasks"] = tuple(args.tasks)
    if args.score_heads:
        params["score_heads"] = tuple(args.score_heads)
    return params


def load_from_args(args, name: str | None = None, root: str | None = None, channels: int | None = None):
    from .data import load_dataset

    return load_dataset(name or args.dataset, root if root is not None else args.data_root, side=args.side,
                        channels=channels if channels is not None else args.channels, max_train=args.max_train,
                        max_train_per_class=getattr(args, "max_train_per_class", None), max_test=args.max_test,
                        seed=args.seed, test_fraction=args.test_fraction,
                        skip_bad_images=args.skip_bad_images, crop_bbox=args.crop_bbox)


def check_tasks_flag(args) -> None:
    """--tasks chooses the heads of the methods that take it; with any other method it is refused, not ignored."""
    if not args.tasks:
        return
    from .config import expand_tasks
    from .methods import TASKS_METHODS

    expand_tasks(args.tasks)  # unknown head names
    fixed = [m for m in args.methods if m not in TASKS_METHODS]
    if fixed:
        raise ValueError(f"--tasks chooses the heads of --methods {' '.join(TASKS_METHODS)} only; {' '.join(fixed)} "
                         f"train(s) fixed heads: drop --tasks, or run {' '.join(fixed)} in a separate command")
