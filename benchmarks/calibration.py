"""predict() without held-out data: the fraction of test normals flagged, before and after calibration.

Per digits class, the README's path: `MultiTaskDetector(...).fit(normal_train)`, then
`predict(test)`, with no X_val.

- before: calibration_fraction=0, trained on every training normal, threshold_ at the
  contamination quantile of the TRAINING images' own scores (the code before issue 16;
  `old` uses np.quantile's default position, as it did, `training` the new position).
- after: the default calibration_fraction=0.2, a seeded fifth of the training normals
  held out of training, threshold_ from their scores (mtssad.calibration).

    python benchmarks/calibration.py            # digits at 16 px, 10 classes
    python benchmarks/calibration.py --quick    # classes 0-2

Results are rewritten after every class, so an interrupted run keeps the classes it finished
(`settings.classes_done`).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np

from _common import write_results

CPU = dict(backbone="wrn-10-1", epochs=5, min_steps=0, progress=False)  # a small budget, as the README's example
CONTAMINATION = 0.05


def run_class(ds, c: int, seed: int) -> dict:
    from mtssad import MultiTaskDetector
    from mtssad.metrics import auroc

    X = ds.train_images[ds.train_labels == c]
    is_normal = ds.test_labels == c
    t0 = time.perf_counter()
    before = MultiTaskDetector(**CPU, seed=seed, contamination=CONTAMINATION, calibration_fraction=0.0).fit(X)
    after = MultiTaskDetector(**CPU, seed=seed, contamination=CONTAMINATION).fit(X)
    fit_s = time.perf_counter() - t0
    s_before, s_after = before.score_samples(ds.test_images), after.score_samples(ds.test_images)
    old_threshold = float(np.quantile(before.score_samples(X), CONTAMINATION))  # the code before: linear position
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # before's predict warns (training scores), as it should
        flag_before = before.predict(ds.test_images[is_normal]) == -1
        flag_after = after.predict(ds.test_images[is_normal]) == -1
    return {
        "class": ds.class_names[c], "n_train": len(X), "n_calibration": after.n_threshold_images_,
        "n_test_normal": int(is_normal.sum()),
        "flagged_old_%": 100 * float(np.mean(s_before[is_normal] < old_threshold)),
        "flagged_training_%": 100 * float(flag_before.mean()),
        "flagged_calibrated_%": 100 * float(flag_after.mean()),
        "auroc_before": 100 * auroc(is_normal, s_before), "auroc_after": 100 * auroc(is_normal, s_after),
        "fit_s": fit_s,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="digits classes 0-2 only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--side", type=int, default=16, help="image side (digits are 8x8 upscaled; default %(default)s)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from mtssad.data import load_dataset

    ds = load_dataset("digits", seed=args.seed, side=args.side)
    classes = range(3) if args.quick else range(len(ds.class_names))
    rows = []
    for c in classes:
        rows.append(run_class(ds, c, args.seed))
        r = rows[-1]
        print(f"digit {r['class']}: flagged old {r['flagged_old_%']:.1f}%  training {r['flagged_training_%']:.1f}%  "
              f"calibrated {r['flagged_calibrated_%']:.1f}%  AUROC {r['auroc_before']:.1f} -> {r['auroc_after']:.1f}",
              file=sys.stderr, flush=True)
        write(rows, args)


def write(class_rows: list[dict], args) -> None:
    rows = list(class_rows)
    n = sum(r["n_test_normal"] for r in rows)
    pooled = {"class": "**pooled**", "n_train": sum(r["n_train"] for r in rows),
              "n_calibration": sum(r["n_calibration"] for r in rows), "n_test_normal": n,
              "fit_s": sum(r["fit_s"] for r in rows)}
    for key in ("flagged_old_%", "flagged_training_%", "flagged_calibrated_%"):
        pooled[key] = sum(r[key] * r["n_test_normal"] for r in rows) / n  # flagged test normals / all test normals
    for key in ("auroc_before", "auroc_after"):
        pooled[key] = sum(r[key] for r in rows) / len(rows)  # mean over classes
    rows.append(pooled)
    cols = ["class", "n_train", "n_calibration", "n_test_normal", "flagged_old_%", "flagged_training_%",
            "flagged_calibrated_%", "auroc_before", "auroc_after", "fit_s"]
    notes = [
        f"Asked for: contamination={CONTAMINATION} (5% of normals flagged). flagged_*: % of the class's TEST normals "
        "predict() calls anomalous.",
        "flagged_old_%: threshold at np.quantile (linear) of the training images' scores, trained on all of them "
        "(the code before); flagged_training_%: the same network, threshold_at (position q(n+1)), what "
        "calibration_fraction=0 gives now, with a warning at predict().",
        "flagged_calibrated_%: the default now: calibration_fraction=0.2 of the training normals held out of "
        "training, threshold_ from their scores.",
        "auroc_*: the ranking's quality (threshold-free) before (trained on all) and after (trained on 80%).",
        "pooled row: flagged test normals over all test normals; AUROC: mean over classes; fit_s: sum of both fits.",
    ]
    write_results("calibration" + ("_quick" if args.quick else ""), rows, cols,
                  title="predict() without held-out data: test normals flagged at contamination 0.05 (digits)",
                  settings={"quick": args.quick, "seed": args.seed, "threads": args.threads, **CPU,
                            "contamination": CONTAMINATION, "dataset": "digits", "side": args.side,
                            "classes_done": [r["class"] for r in class_rows]},
                  notes=notes)


if __name__ == "__main__":
    main()
