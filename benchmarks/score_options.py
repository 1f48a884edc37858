"""Score options beyond the paper, each against the plain mean of eq. 6, on the same fitted networks.

Per normal class, `ours` is fitted ONCE (same split, seed and settings as
benchmarks/reproduce.py at CPU scale) and its per-head test scores are combined
every way: score_norm none (the paper) / mean / standardize, over all heads or
over the heads kept by the task-suitability diagnostic (head_selection="diagnostic",
decided on the validation split: held-out normals + other classes' TRAINING images), or
over the head set with the better validation AUROC among all heads and the geometric heads
(head_selection="validation", the same split; `mtssad.diagnostic.validation_candidates`).
The comparison is therefore paired: only the combination differs, never the network.

    python benchmarks/score_options.py            # digits, 10 classes, + glyphs, 5 fonts (~10 min on 2 CPUs)
    python benchmarks/score_options.py --quick    # digits classes 0-2 (< 2 min)
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import write_results

CPU = dict(backbone="wrn-10-1", epochs=3)  # benchmarks/reproduce.py's CPU scale
GLYPH_FONTS = ["DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSerif", "cmr10"]
VARIANTS = [("none", "all"), ("mean", "all"), ("standardize", "all"), ("none", "diagnostic"),
            ("standardize", "diagnostic"), ("none", "validation")]  # (score_norm, head selection); the first is the paper's score


def column(norm: str, selection: str) -> str:
    return f"{norm}/{selection}"


def run_class(ds, c: int, seed: int) -> dict:
    from mtssad.diagnostic import choose_on_validation, validation_candidates
    from mtssad.methods import make_method
    from mtssad.metrics import auroc
    from mtssad.protocols import one_vs_all_data
    from mtssad.scoring import combine_heads

    d = one_vs_all_data(ds, c, seed=seed, val_fraction=0.2)
    det = make_method("ours", **CPU, seed=seed, head_selection="diagnostic", progress=False)
    t0 = time.perf_counter()
    det.fit(d.X_fit, X_val=d.X_val, y_val=d.y_val)
    fit_s = time.perf_counter() - t0
    per_head = det.score_tasks(d.X_test)  # head -> (n_test,)
    all_heads = [h.name for h in det.plan_.heads]
    row = {"dataset": ds.name, "class": ds.class_names[c], "fit_s": fit_s}
    val_heads = det.score_tasks(d.X_val)  # the validation split, never the test split, chooses
    candidates = dict(validation_candidates(all_heads))

    def by_validation(norm: str) -> list[str]:
        aurocs = {n: auroc(d.y_val.astype(bool), combine_heads(val_heads, hs, norm=norm, counts=det.head_counts_,
                                                               stats=det.head_stats_)) for n, hs in candidates.items()}
        return list(candidates[choose_on_validation(aurocs)])

    for norm, selection in VARIANTS:
        heads = {"all": all_heads, "diagnostic": list(det.selected_heads_)}.get(selection) or by_validation(norm)
        s = combine_heads(per_head, heads, norm=norm, counts=det.head_counts_, stats=det.head_stats_)
        row[column(norm, selection)] = 100 * auroc(d.is_normal_test, s)
    row["dropped"] = ",".join(f"{h}({v})" for h, v in det.head_verdicts_.items() if h not in det.selected_heads_) or "-"
    for h in all_heads:
        row[f"head_{h}"] = 100 * auroc(d.is_normal_test, per_head[h])
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="digits classes 0-2 only (< 2 min on 2 CPUs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from mtssad.data import load_dataset, resolve_classes

    plan = [("digits", None)] if args.quick else [("digits", None), ("glyphs", GLYPH_FONTS)]
    rows = []
    for name, classes in plan:
        ds = load_dataset(name, seed=args.seed)
        picked = resolve_classes(ds, classes)[:3] if args.quick else resolve_classes(ds, classes)
        for c in picked:
            rows.append(run_class(ds, c, args.seed))
            r = rows[-1]
            print(f"{name} {r['class']}: " + "  ".join(f"{column(*v)} {r[column(*v)]:.1f}" for v in VARIANTS)
                  + f"  dropped {r['dropped']}", file=sys.stderr, flush=True)
        mean = {"dataset": name, "class": "**mean**", "fit_s": sum(r["fit_s"] for r in rows if r["dataset"] == name)}
        for key in rows[-1]:
            if key.startswith("head_") or "/" in key:
                mean[key] = sum(r[key] for r in rows if r["dataset"] == name) / len(picked)
        mean["dropped"] = f"{sum(r['dropped'] != '-' for r in rows if r['dataset'] == name)}/{len(picked)} classes"
        rows.append(mean)
    heads = [k for k in rows[0] if k.startswith("head_")]
    cols = ["dataset", "class", *(column(*v) for v in VARIANTS), "dropped", *heads, "fit_s"]
    notes = ["AUROC % on the test split; none/all is the paper's score (eq. 6). Columns norm/selection.",
             "head_<name>: AUROC of that head's score alone (for reading the selection; not a selectable option).",
             "dropped: heads head_selection=diagnostic removed, with the verdict, decided on the validation split.",
             "fit_s: fit + BN recalibration + validation diagnostic, seconds (the mean row: sum over classes)."]
    for name, _ in plan:
        m = next(r for r in rows if r["dataset"] == name and r["class"] == "**mean**")
        base = m[column("none", "all")]
        notes.append(f"{name}: mean AUROC vs the plain mean ({base:.1f}): "
                     + ", ".join(f"{column(*v)} {m[column(*v)] - base:+.1f}" for v in VARIANTS[1:]))
    write_results("score_options" + ("_quick" if args.quick else ""), rows, cols,
                  title="Score normalization and head selection vs the plain mean (ours, CPU scale)",
                  settings={"quick": args.quick, "seed": args.seed, "threads": args.threads, **CPU,
                            "val_fraction": 0.2, "datasets": [n for n, _ in plan]},
                  notes=notes)


if __name__ == "__main__":
    main()
