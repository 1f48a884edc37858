"""The `mtssad` command line: evaluate (one-vs-all), ood, sweep (Ray), report.

Every flag is documented with its default (`mtssad <command> --help`).
Results go to OUTDIR/results.parquet (one row per dataset, class, method,
config, data selection, seed; written atomically after every run, so a killed
run loses at most the run in progress and a rerun with the same flags skips
finished rows; other data or method flags make new rows), per-image scores to
OUTDIR/scores/, and a readable OUTDIR/report.md with plots.

Building the parser imports no torch and no Ray (`mtssad --help` is instant); each command
imports what it needs when it runs. Messages go through `logging` (-v, -q, --log-level);
stdout carries the results. Every failure ends in one stderr line and an exit status from
`mtssad.errors.EXIT_CODES`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from .errors import (EXIT_DISK_FULL, EXIT_INTERRUPTED, EXIT_OUT_OF_MEMORY, EXIT_USAGE, DeviceError,
                     MtssadError, exit_codes_text, is_disk_full, is_out_of_memory)
from .flags import (DEFAULTS, add_data_args, add_logging_args, add_method_args, add_output_args, check_tasks_flag,
                    load_from_args, log_level_of, method_params)

log = logging.getLogger("mtssad.cli")  # also when run as `python -m mtssad.cli` (__main__)

def _check_methods_params(args, params) -> None:
    """Fail before any data is loaded or model trained on a bad config (k too large, grid too big for --side)."""
    from .methods import METHODS, make_method, trains_jigsaw
    from .transforms import check_image_fits

    if params.get("head_selection", "all") != "all" and args.val_fraction <= 0:
        raise ValueError(f"--head-selection {params['head_selection']} needs a validation split: "
                         "use --val-fraction > 0")
    if params.get("early_stopping") == "val_auroc" and args.val_fraction <= 0:
        raise ValueError("--early-stopping val_auroc needs a validation split: use --val-fraction > 0, or val_loss")
    check_tasks_flag(args)
    for m in args.methods:
        if METHODS[m].neural:
            if args.epochs < 1:
                raise ValueError("--epochs must be >= 1: with 0 epochs the network is never trained and its scores "
                                 f"would be stored as a result; got {args.epochs}")
            make_method(m, **params)  # validates the DetectorConfig
            if trains_jigsaw(m, params):
                try:
                    check_image_fits((args.side, args.side), tuple(args.grid), args.margin)
                except ValueError as e:
                    raise ValueError(f"--grid {args.grid[0]} {args.grid[1]} does not fit --side {args.side}: "
                                     f"{e}") from None


def cmd_evaluate(args) -> int:
    from .data import resolve_classes
    from .protocols import data_identity, describe_config, one_vs_all
    from .methods import make_method
    from .results import ResultsStore, row_key, save_run

    params = method_params(args)
    _check_methods_params(args, params)
    store = ResultsStore(args.out)
    ds = load_from_args(args)
    classes = resolve_classes(ds, args.classes)
    if ds.skipped:
        more = " ..." if len(ds.skipped) > 5 else ""
        log.warning(f"skipped {len(ds.skipped)} unreadable image file(s): {', '.join(ds.skipped[:5])}{more}")
    log.info(f"{ds.name}: {len(ds.train_images)} train / {len(ds.test_images)} test images of "
             f"{tuple(ds.train_images.shape[1:])}; "
             f"{len(classes)} normal class(es) x {len(args.methods)} method(s) -> {args.out}")
    done = set() if args.overwrite else store.done_keys()
    data = data_identity(ds, val_fraction=args.val_fraction)  # the same as one_vs_all's row["data"]
    jobs = [(c, m) for c in classes for m in args.methods]
    t_all = time.perf_counter()
    for i, (c, m) in enumerate(jobs, 1):
        ident = describe_config(m, params, make_method(m, **{**params, "seed": args.seed}))
        key = row_key({**ident, "dataset": ds.name, "normal_class": ds.class_names[c], "seed": args.seed, "data": data})
        if key in done:
            print(f"[{i}/{len(jobs)}] {ds.class_names[c]} / {m}: already in results, skipped")
            continue
        out = one_vs_all(ds, c, m, params, seed=args.seed, val_fraction=args.val_fraction)
        save_run(store, out)
        r = out.row
        print(f"[{i}/{len(jobs)}] {r['normal_class']} / {m}: AUROC {100 * r['auroc']:.1f}  "
              f"(fitted on {r['n_train']} normal images; train {r['train_seconds']:.1f}s, "
              f"score {r['score_seconds']:.1f}s)",
              flush=True)
    log.info(f"done in {time.perf_counter() - t_all:.0f}s")
    return _finish(args.out)


def cmd_ood(args) -> int:
    from .protocols import out_of_distribution
    from .results import ResultsStore, save_run

    params = method_params(args)
    if params["head_selection"] != "all":
        raise ValueError("ood trains on all of --dataset and has no validation split: "
                         f"--head-selection {params['head_selection']} is available in evaluate and sweep only")
    _check_methods_params(args, params)
    store = ResultsStore(args.out)
    ds_in = load_from_args(args)
    ds_out = load_from_args(args, name=args.ood_dataset, root=args.ood_data_root or args.data_root,
                            channels=ds_in.train_images.shape[1])
    for m in args.methods:
        out = out_of_distribution(ds_in, ds_out, m, params, seed=args.seed)
        save_run(store, out)
        print(f"{out.row['dataset']} / {m}: AUROC {100 * out.row['auroc']:.1f}", flush=True)
    return _finish(args.out)


def cmd_sweep(args) -> int:
    from .distributed.cli import run_sweep_command

    return run_sweep_command(args)


def cmd_report(args) -> int:
    out = Path(args.outdir).expanduser()
    if not (out / "results.parquet").is_file():  # checked before anything is created: a typo makes no folder
        what = ("no such directory" if not out.exists() else "not a directory" if not out.is_dir()
                else "no results.parquet in it")
        raise ValueError(f"{args.outdir}: {what}; expected an output directory of mtssad evaluate, ood or sweep")
    return _finish(out)


def _finish(outdir) -> int:
    from .report import render_report

    path = render_report(outdir)
    print(f"report: {path}")
    return 0


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the flags' help; the epilog (exit statuses) keeps its lines."""


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    sub_kw = dict(epilog=exit_codes_text(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p = argparse.ArgumentParser(prog="mtssad", description=__doc__.splitlines()[0], epilog=exit_codes_text(),
                                formatter_class=_HelpFormatter)
    p.add_argument("--version", action="version", version=f"mtssad {__version__}")
    add_logging_args(p)
    sub = p.add_subparsers(dest="command")
    ev = sub.add_parser("evaluate", help="one-vs-all evaluation in one process (no Ray)", **sub_kw)
    add_data_args(ev)
    add_method_args(ev)
    add_output_args(ev, DEFAULTS["out"])
    ev.set_defaults(func=cmd_evaluate)

    ood = sub.add_parser("ood", help="out-of-distribution: train on one data set, score another", **sub_kw)
    add_data_args(ood, dataset_default="cifar10")
    ood.add_argument("--ood-dataset", required=True, help="the out-of-distribution data set (e.g. svhn)")
    ood.add_argument("--ood-data-root", default=None, help="its root (default: --data-root)")
    add_method_args(ood)
    add_output_args(ood, "runs/ood")
    ood.set_defaults(func=cmd_ood)

    sw = sub.add_parser("sweep", help="Ray Tune sweep over normal classes x jigsaw grid x k (local Ray or RAY_ADDRESS)",
                        **sub_kw)
    add_data_args(sw)
    add_method_args(sw)
    add_output_args(sw, "runs/sweep")
    from .distributed.cli import add_sweep_args  # argparse only; imports no ray

    add_sweep_args(sw)
    sw.set_defaults(func=cmd_sweep)

    rep = sub.add_parser("report", help="render OUTDIR/report.md again from OUTDIR/results.parquet", **sub_kw)
    rep.add_argument("outdir", help="an output directory of evaluate/ood/sweep")
    add_logging_args(rep)
    rep.set_defaults(func=cmd_report)
    return p


def check_device_flag(args) -> None:
    """--device names a device this machine has (mps on Linux, cuda without a GPU): checked before any data or training.

    A sweep that joins a cluster (--ray-address without --local) is not checked here: its trials run elsewhere.
    """
    device = getattr(args, "device", None)
    if device in (None, "auto", "cpu"):
        return
    if args.command == "sweep" and getattr(args, "ray_address", None) and not getattr(args, "local", False):
        return
    from .validation import device_problem

    problem = device_problem(device)
    if problem:
        raise DeviceError(f"--device {device}: {problem}; use --device cpu, or --device auto (a GPU when there is one)")


def _saved_rows(out) -> str:
    """'N finished row(s) are saved in OUT/results.parquet' (what an interrupted run leaves), best effort."""
    path = Path(out) / "results.parquet"
    try:
        import pyarrow.parquet as pq

        n = pq.read_metadata(path).num_rows if path.exists() else 0
    except Exception:  # noqa: BLE001 -- a message, not a check: a damaged file is reported by the next run
        return f"finished rows are in {path}"
    return f"{n} finished row(s) are saved in {path}"


def interrupted_message(args) -> str:
    """What Ctrl-C left behind and how to go on, per command."""
    if args.command == "sweep":
        from .distributed.cli import experiment_dir

        return (f"interrupted (Ctrl-C): finished trials are kept in {experiment_dir(args)} and "
                f"{_saved_rows(args.out)}; rerun the same command with --resume to run only the rest")
    if args.command == "report":
        return f"interrupted (Ctrl-C): results unchanged; `mtssad report {args.outdir}` writes the report"
    return (f"interrupted (Ctrl-C): {_saved_rows(args.out)} (the run in progress is lost); "
            "rerun the same command to run only the missing rows")


def out_of_memory_message(args, e: BaseException) -> str:
    """Name the settings that size a training or scoring step, with their values."""
    what = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
    if not hasattr(args, "batch_size"):
        return f"out of memory ({what}); close other programs or use a machine with more memory"
    grid = "x".join(str(g) for g in args.grid)
    return (f"out of memory ({what}); a training step holds --batch-size {args.batch_size} images times their "
            f"transformed copies (--k {args.k} jigsaw permutations on a --grid {grid}, plus the geometric "
            f"transforms) through {args.backbone}: lower --k (or --grid), --batch-size or the --backbone width, "
            "or use a device with more memory")


def disk_full_message(args, e: BaseException) -> str:
    where = getattr(e, "filename", None)
    out = getattr(args, "out", None) or getattr(args, "outdir", None)
    text = str(e) if isinstance(e, MtssadError) else f"no space left on device{f' writing {where}' if where else ''}"
    fix = "free space on that disk"
    if out is not None:
        fix += f" or pass --out on another disk ({_saved_rows(out)})"
    if args.command == "sweep":
        fix += "; also --storage-path for the checkpoints"
    return f"{text}; {fix}"


def failure(args, e: BaseException) -> tuple[int, str] | None:
    """(exit status, the one line after 'mtssad <command>: ') for an error a person can act on; None for a bug."""
    if isinstance(e, KeyboardInterrupt):
        return EXIT_INTERRUPTED, interrupted_message(args)
    if is_disk_full(e):
        return EXIT_DISK_FULL, "error: " + disk_full_message(args, e)
    if is_out_of_memory(e):
        return EXIT_OUT_OF_MEMORY, "error: " + out_of_memory_message(args, e)
    if isinstance(e, MtssadError):
        return e.exit_code, f"error: {e}"
    from .data import DataError

    if isinstance(e, (DataError, ValueError, PermissionError)):
        return EXIT_USAGE, f"error: {e}"
    return None


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    from .logs import configure

    configure(log_level_of(args))
    try:
        check_device_flag(args)
        return args.func(args)
    except (Exception, KeyboardInterrupt) as e:
        known = failure(args, e)
        if known is None or os.environ.get("MTSSAD_DEBUG"):  # a bug, or asked for: the full traceback
            raise
        code, line = known
        hint = " (MTSSAD_DEBUG=1 shows the traceback)" if code != EXIT_INTERRUPTED else ""
        print(f"mtssad {args.command}: {line}{hint}", file=sys.stderr, flush=True)
        return code


if __name__ == "__main__":
    sys.exit(main())
