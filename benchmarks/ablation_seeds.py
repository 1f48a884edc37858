"""Does multi-task self-supervision beat its ablations? Methods x seeds, paired per class.

    python benchmarks/ablation_seeds.py --dataset digits --methods ours geometric jigsaw --seeds 0 1 2
    python benchmarks/ablation_seeds.py --dataset glyphs --seeds 0 1 2 --classes DejaVuSans cmr10 ...
    python benchmarks/ablation_seeds.py --dataset digits --report-only      # table from the rows so far
    python benchmarks/ablation_seeds.py --dataset glyphs --rows benchmarks/results/ablation_glyphs.parquet \
        --tag tasks_val                                                     # tables from stored rows, no run

Each (seed, method) is one `mtssad evaluate` run (one-vs-all over the classes, the
default step budget unless --extra says otherwise) into benchmarks/results/work/ablation_<dataset>/;
reruns skip finished rows, so the script resumes. Writes ablation_<dataset>.md / .json:
per method the class-mean AUROC of every seed, mean +- sd over seeds, and the paired
per-class difference `ours - <method>` (mean +- sd over seeds, and in how many of the
(class, seed) pairs ours is higher). The seed changes the split (digits and glyphs have no
official one), the validation split, the initialization, the permutations and the batch order.
Nothing is tuned on the test split: every setting is fixed before the run.

With ours and geometric among the rows, the table gains `ours[tasks]`, "ours, tasks chosen on
validation" (issue 23): per (class, seed) ours or geometric, whichever has the higher
validation AUROC (`mtssad.distributed.selection.tasks_chosen_on_validation`; ties keep ours;
test AUROC is never read), with its paired differences and how often the jigsaw head was kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from mtssad.cli import main as mtssad_main
from mtssad.distributed.selection import TIE, tasks_chosen_on_validation
from mtssad.results import ResultsStore

HERE = Path(__file__).resolve().parent
GLYPH_FONTS = ["DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSerif", "DejaVuSerif-Bold",
               "DejaVuSansMono", "STIXGeneral", "STIXGeneralItalic", "cmr10", "cmss10"]  # 10 of the 22, 4 families


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--methods", nargs="+", default=["ours", "geometric", "jigsaw"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--classes", nargs="+", default=None, help="normal classes (default: all; glyphs: 10 fonts)")
    p.add_argument("--backbone", default="wrn-10-1")
    p.add_argument("--tag", default="", help="suffix of the work folder and result files (e.g. a second backbone)")
    p.add_argument("--report-only", action="store_true", help="only write the table from the rows so far")
    p.add_argument("--work-root", type=Path, default=HERE / "results" / "work",
                   help="folder holding the ablation_<dataset>[_<tag>] run folders")
    p.add_argument("--choose-tags", nargs="+", default=[],
                   help="--tag work folders whose `ours` rows are other configs of ours (e.g. --extra --k 12): reported "
                        "as ours[<tag>], and ours[val] = per (class, seed) the config with the best validation AUROC")
    p.add_argument("--with-tags", nargs="+", default=[], help="also report the rows of these --tag work folders "
                   "(runs split over processes, e.g. one seed per CPU)")
    p.add_argument("--rows", type=Path, default=None,
                   help="read the rows from this Parquet (e.g. a committed ablation_<dataset>.parquet) instead of the "
                        "work folders; nothing is run (derived rows ours[val] / ours[tasks] are recomputed)")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `mtssad evaluate` flags")
    return p.parse_args(argv)


def run(args) -> int:
    name = f"ablation_{args.dataset}{'_' + args.tag if args.tag else ''}"
    work = args.work_root / name
    classes = args.classes or (GLYPH_FONTS if args.dataset == "glyphs" else None)
    if args.rows is not None:
        return report_from_rows(args, name, classes)
    if not args.report_only:
        for seed in args.seeds:
            for method in args.methods:
                argv = ["evaluate", "--dataset", args.dataset, "--methods", method, "--seed", str(seed),
                        "--backbone", args.backbone, "--out", str(work), "--quiet", *args.extra]
                if classes:
                    argv += ["--classes", *classes]
                print("mtssad " + " ".join(argv), flush=True)
                code = mtssad_main(argv)
                if code != 0:
                    return code
    works = [work] + [args.work_root / f"ablation_{args.dataset}_{tag}" for tag in args.with_tags]
    missing = [w for w in works + [args.work_root / f"ablation_{args.dataset}_{t}" for t in args.choose_tags]
               if not (w / "results.parquet").exists()]
    if missing:
        print(f"no results.parquet in {', '.join(str(w) for w in missing)} (check --work-root, --tag, --with-tags, "
              "--choose-tags)", file=sys.stderr)
        return 2
    frames = [ResultsStore(w).load().assign(work_dir=w.name) for w in works]
    methods = list(args.methods)
    for tag in args.choose_tags:
        w = args.work_root / f"ablation_{args.dataset}_{tag}"
        alt = ResultsStore(w).load()
        frames.append(alt[alt["method"] == "ours"].assign(method=f"ours[{tag}]", work_dir=w.name))
        methods.append(f"ours[{tag}]")
    frame = pd.concat(frames, ignore_index=True)
    frame = frame[frame["method"].isin(methods)]
    key = ["dataset", "normal_class", "method", "seed", "config", "data"]
    frame = frame.drop_duplicates(subset=[k for k in key if k in frame], keep="last")  # a row in two folders counts once
    if args.choose_tags:
        frame = pd.concat([frame, chosen_on_validation(frame, methods[len(args.methods):])], ignore_index=True)
        methods.append("ours[val]")
    return write_tables(args, name, classes, frame, methods, works)


TASKS_ROW = "ours[tasks]"  # "ours, tasks chosen on validation"
DERIVED = ("ours[val]", TASKS_ROW)  # rows computed from other rows, never run


def report_from_rows(args, name: str, classes) -> int:
    """The tables from a stored Parquet of rows (--rows): derived rows recomputed, nothing run."""
    if not args.rows.exists():
        print(f"no such file: {args.rows}", file=sys.stderr)
        return 2
    frame = pd.read_parquet(args.rows)
    frame = frame[~frame["method"].isin(DERIVED) & (frame["dataset"] == args.dataset)]
    methods = [m for m in args.methods if m in set(frame["method"])]
    methods += [m for m in dict.fromkeys(frame["method"]) if m.startswith("ours[") and m not in methods]
    if any(m.startswith("ours[") for m in methods):
        frame = pd.concat([frame, chosen_on_validation(frame, [m for m in methods if m.startswith("ours[")])],
                          ignore_index=True)
        methods.append("ours[val]")
    return write_tables(args, name, classes, frame, methods, works=[])


def write_tables(args, name: str, classes, frame: pd.DataFrame, methods: list, works: list) -> int:
    """ablation_<name>.md / .json / .parquet from the rows (plus ours[tasks] when ours and geometric are there)."""
    tasks_md, tasks_summary = "", None
    if {"ours", "geometric"} <= set(methods):
        chosen = tasks_chosen_on_validation(frame[frame["method"].isin(["ours", "geometric"])], label=TASKS_ROW)
        if len(chosen):
            frame = pd.concat([frame, chosen], ignore_index=True)
            methods = methods + [TASKS_ROW]
            tasks_md, tasks_summary = tasks_table(frame)
    md, summary = ablation_table(frame, methods, dataset=args.dataset)
    if tasks_summary is not None:
        summary["tasks_chosen_on_validation"] = tasks_summary
    md = md.replace("\n\n", "\n\n" + settings_text(frame) + "\n\n", 1)
    options_md, summary["score_options"] = score_option_table(frame, works)
    md += tasks_md + options_md + all_rows_table(frame[~frame["method"].isin(DERIVED)], summary,
                                                 n_classes=len(classes) if classes else None)
    (HERE / "results" / f"{name}.md").write_text(md)
    (HERE / "results" / f"{name}.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    frame.to_parquet(HERE / "results" / f"{name}.parquet")
    print(md)
    return 0


def chosen_on_validation(frame: pd.DataFrame, alternatives: list[str]) -> pd.DataFrame:
    """ours[val]: per (dataset, class, seed, data selection) that has an alternative config, the row (ours or an
    alternative) with the best validation AUROC (ties: the first of ours, then the alternatives in order). Test
    AUROC is never read. Its seconds are the sum over every candidate (choosing needs them all trained)."""
    order = ["ours", *alternatives]
    pool = frame[frame["method"].isin(order)].assign(_rank=lambda d: d["method"].map(order.index))
    out = []
    for _, g in pool.groupby(["dataset", "normal_class", "seed", "data"], dropna=False):
        if g["method"].nunique() < 2 or "ours" not in set(g["method"]):
            continue
        top = g["val_auroc"].max()
        best = g[g["val_auroc"] >= top - TIE].sort_values("_rank").iloc[0]  # float-level ties keep the first
        out.append(best.drop("_rank").to_dict() | {"method": "ours[val]", "chosen": best["method"],
                                                   "train_seconds": g["train_seconds"].sum(),
                                                   "score_seconds": g["score_seconds"].sum()})
    return pd.DataFrame(out)


def tasks_table(frame: pd.DataFrame) -> tuple[str, dict]:
    """"ours, tasks chosen on validation" against ours and geometric on the same (class, seed) pairs: class mean
    per seed, paired differences (mean +- sd over seeds), how often the jigsaw head was kept, and how often the
    validation AUROC ranked ours and geometric as the test AUROC did (that ranking is checked, never used)."""
    ch = frame[frame["method"] == TASKS_ROW]
    both = frame[frame["method"].isin(["ours", "geometric"])].pivot_table(
        index=["normal_class", "seed"], columns="method", values=["auroc", "val_auroc"], aggfunc="last")
    pairs = ch.set_index(["normal_class", "seed"])
    t = pd.DataFrame({"chosen": pairs["auroc"], "ours": both[("auroc", "ours")].reindex(pairs.index),
                      "geometric": both[("auroc", "geometric")].reindex(pairs.index)}) * 100
    per_seed = t.groupby(level="seed").mean()
    sd = lambda x: x.std(ddof=1) if len(x) > 1 else float("nan")  # noqa: E731
    kept = pairs["jigsaw_kept"].astype(bool)
    val_diff = (both[("val_auroc", "ours")] - both[("val_auroc", "geometric")]).reindex(pairs.index)
    test_diff = (both[("auroc", "ours")] - both[("auroc", "geometric")]).reindex(pairs.index)
    agree = int(((val_diff > 0) == (test_diff > 0)).sum())
    lines = ["", f"## ours, tasks chosen on validation ({TASKS_ROW})", "",
             f"Per (class, seed): ours (all heads) or geometric (no jigsaw), whichever has the higher validation "
             "AUROC (ties keep ours); test AUROC never read. Class mean per seed (AUROC %), then mean +- sd over seeds. "
             f"The jigsaw head was kept on {int(kept.sum())} of {len(kept)} (class, seed) pairs; the validation "
             f"AUROC ranked ours vs geometric as test did on {agree} of {len(kept)}.", "",
             "| seed | chosen | ours | geometric | chosen - ours | chosen - geometric | jigsaw kept |",
             "|---|---|---|---|---|---|---|"]
    for s_, r in per_seed.iterrows():
        k = kept.xs(s_, level="seed")
        lines.append(f"| {s_} | {r['chosen']:.1f} | {r['ours']:.1f} | {r['geometric']:.1f} | "
                     f"{r['chosen'] - r['ours']:+.1f} | {r['chosen'] - r['geometric']:+.1f} | {int(k.sum())}/{len(k)} |")
    d_o, d_g = per_seed["chosen"] - per_seed["ours"], per_seed["chosen"] - per_seed["geometric"]
    lines.append(f"| **mean +- sd** | **{per_seed['chosen'].mean():.1f} +- {sd(per_seed['chosen']):.1f}** | "
                 f"{per_seed['ours'].mean():.1f} +- {sd(per_seed['ours']):.1f} | "
                 f"{per_seed['geometric'].mean():.1f} +- {sd(per_seed['geometric']):.1f} | "
                 f"{d_o.mean():+.1f} +- {sd(d_o):.1f} | {d_g.mean():+.1f} +- {sd(d_g):.1f} | "
                 f"{int(kept.sum())}/{len(kept)} |")
    by_class = kept.groupby(level="normal_class").agg(["sum", "size"])
    lines += ["", "Jigsaw head kept per class (seeds): " + ", ".join(f"{c} {int(r['sum'])}/{int(r['size'])}"
                                                                    for c, r in by_class.iterrows())]
    summary = {"mean": float(per_seed["chosen"].mean()), "sd": float(sd(per_seed["chosen"])),
               "per_seed": [float(v) for v in per_seed["chosen"]],
               "minus_ours": {"per_seed": [float(v) for v in d_o], "mean": float(d_o.mean()), "sd": float(sd(d_o)),
                              "wins": int((t["chosen"] > t["ours"]).sum()), "losses": int((t["chosen"] < t["ours"]).sum())},
               "minus_geometric": {"per_seed": [float(v) for v in d_g], "mean": float(d_g.mean()), "sd": float(sd(d_g)),
                                   "wins": int((t["chosen"] > t["geometric"]).sum()),
                                   "losses": int((t["chosen"] < t["geometric"]).sum())},
               "jigsaw_kept": int(kept.sum()), "pairs": int(len(kept)), "val_ranks_as_test": agree,
               "jigsaw_kept_per_class": {str(c): int(r["sum"]) for c, r in by_class.iterrows()}}
    return "\n".join(lines) + "\n", summary


def ablation_table(frame: pd.DataFrame, methods, *, dataset: str) -> tuple[str, dict]:
    """Markdown table + summary dict from result rows (dataset, normal_class, method, seed, auroc)."""
    df = frame[frame["dataset"] == dataset]
    methods = [m for m in methods if m in set(df["method"])]
    everything = df.pivot_table(index=["normal_class", "seed"], columns="method", values="auroc", aggfunc="last")
    # methods run on only some (class, seed) pairs of ours (costly baselines): compared on their own pairs below
    partial = [m for m in methods if m != "ours" and "ours" in everything
               and everything.loc[everything["ours"].notna(), m].isna().any()]
    methods = [m for m in methods if m not in partial]
    wide = everything[methods].dropna()  # (class, seed) -> AUROC per method, only pairs every listed method has
    seeds = sorted(wide.index.get_level_values("seed").unique())
    per_seed = wide.groupby(level="seed").mean() * 100  # (seeds, methods): class-mean AUROC %
    n_classes = wide.groupby(level="seed").size()
    lines = [f"# {dataset}: ours vs its ablations and baselines, {len(seeds)} seed(s)", "",
             f"Class-mean AUROC % over the {int(n_classes.min()) if len(n_classes) else 0} normal classes that every "
             "listed method finished on every seed; mean +- sd over seeds (sd: sample, ddof=1).", "",
             "| seed | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for s in seeds:
        lines.append(f"| {s} | " + " | ".join(f"{per_seed.loc[s, m]:.1f}" for m in methods) + " |")
    mean, sd = per_seed.mean(), per_seed.std(ddof=1) if len(seeds) > 1 else per_seed.mean() * np.nan
    lines.append("| **mean +- sd** | " + " | ".join(f"**{mean[m]:.1f} +- {sd[m]:.1f}**" for m in methods) + " |")
    summary = {"dataset": dataset, "seeds": [int(s) for s in seeds], "n_classes": int(n_classes.min()) if len(n_classes) else 0,
               "mean": {m: float(mean[m]) for m in methods}, "sd": {m: float(sd[m]) for m in methods},
               "per_seed": {m: [float(per_seed.loc[s, m]) for s in seeds] for m in methods}, "paired": {}}
    if "ours" in methods:
        lines += ["", "Paired per-class difference ours - method (AUROC points): mean over classes per seed, then "
                  "mean +- sd over seeds; `wins` = (class, seed) pairs where ours is higher / all pairs (and how "
                  "many differ by less than 0.05 points: digits has many classes at 99.9-100).", "",
                  "| method | per seed | mean +- sd | wins |", "|---|---|---|---|"]
        for m in methods:
            if m == "ours":
                continue
            diff = (wide["ours"] - wide[m]) * 100
            by_seed = diff.groupby(level="seed").mean()
            wins, ties, total = int((diff > 0).sum()), int((diff.abs() < 0.05).sum()), int(len(diff))
            sd_d = by_seed.std(ddof=1) if len(by_seed) > 1 else float("nan")
            lines.append(f"| {m} | {', '.join(f'{v:+.1f}' for v in by_seed)} | {by_seed.mean():+.1f} +- {sd_d:.1f} | "
                         f"{wins}/{total} ({ties} within 0.05) |")
            summary["paired"][m] = {"per_seed": [float(v) for v in by_seed], "mean": float(by_seed.mean()),
                                    "sd": float(sd_d), "wins": wins, "ties": ties, "pairs": total}
    if partial:
        ref = "geometric" if "geometric" in methods else None
        lines += ["", "Methods run on a subset of the (class, seed) pairs (their cost), each against ours"
                  + (" and geometric" if ref else "") + " on its own pairs (AUROC %; wins: pairs where ours is higher):",
                  "", "| method | pairs | ours | method | ours - method | wins |" + (" geometric | method - geometric |"
                                                                                    if ref else ""),
                  "|---|---|---|---|---|---|" + ("---|---|" if ref else "")]
        for m in partial:
            both = everything[["ours", m] + ([ref] if ref else [])].dropna() * 100
            diff = both["ours"] - both[m]
            names = [f"{c}/s{s}" for c, s in both.index]
            line = (f"| {m} | {len(both)} ({', '.join(names[:6])}{' ...' if len(names) > 6 else ''}) | "
                    f"{both['ours'].mean():.1f} | {both[m].mean():.1f} | {diff.mean():+.1f} | "
                    f"{int((diff > 0).sum())}/{len(both)} |")
            summary["paired"][m] = {"pairs": len(both), "ours": float(both["ours"].mean()), "method": float(both[m].mean()),
                                    "mean": float(diff.mean()), "wins": int((diff > 0).sum())}
            if ref:
                line += f" {both[ref].mean():.1f} | {(both[m] - both[ref]).mean():+.1f} |"
                summary["paired"][m]["geometric"] = float(both[ref].mean())
            lines.append(line)
    lines += ["", "Per class (mean over seeds, AUROC %):", "",
              "| class | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    per_class = wide.groupby(level="normal_class").mean() * 100
    for c, row in per_class.iterrows():
        lines.append(f"| {c} | " + " | ".join(f"{row[m]:.1f}" for m in methods) + " |")
    seconds = df.groupby(["method", "seed"])[["train_seconds", "score_seconds"]].sum().sum(axis=1)
    lines += ["", "Seconds per run (one method and seed: the sum over its classes of fit + test scoring, from the "
              "rows; one torch thread per run, two runs sharing the 2-CPU machine):", "",
              "| method | " + " | ".join(f"seed {s}" for s in sorted(df["seed"].unique())) + " |",
              "|---" * (1 + df["seed"].nunique()) + "|"]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(f"{seconds.get((m, s), float('nan')):.0f}"
                                              for s in sorted(df["seed"].unique())) + " |")
    summary["run_seconds"] = {f"{m}/{s}": float(v) for (m, s), v in seconds.items()}
    return "\n".join(lines) + "\n", summary


def settings_text(frame: pd.DataFrame) -> str:
    """What the rows were trained with, read from their own config column (not from this script's defaults)."""
    keys = ("backbone", "epochs", "min_steps", "batch_size", "grid", "k", "margin", "score_norm", "head_selection")
    ours = frame[frame["method"] == "ours"]
    configs = {json.dumps({k: json.loads(c).get(k) for k in keys}, sort_keys=True) for c in ours["config"]}
    splits = {json.loads(d).get("val_fraction") for d in frame["data"].dropna()}
    return (f"Settings of the `ours` rows (from their config column): {'; '.join(sorted(configs))}; validation "
            f"fraction {', '.join(map(str, sorted(splits)))}. Every method shares backbone, budget and split; "
            "one torch thread per run, two runs at a time on the 2-CPU machine.")


SCORE_OPTIONS = (("none", "all"), ("mean", "all"), ("none", "diagnostic"))  # (score_norm, head selection)


def _ours_side_files(frame: pd.DataFrame, works: list[Path]):
    """(row, per-image test scores, history) of every `ours` row whose side files exist."""
    from mtssad.results import run_name

    for row in frame[frame["method"] == "ours"].to_dict("records"):
        name = run_name(row)
        for w in works:
            scores, history = w / "scores" / f"{name}.parquet", w / "history" / f"{name}.json"
            if scores.exists() and history.exists():
                yield row, pd.read_parquet(scores), json.loads(history.read_text())
                break


def score_option_table(frame: pd.DataFrame, works: list[Path]) -> tuple[str, dict]:
    """Score options recombined from the saved per-head test scores of the `ours` runs (no refit).

    none/all is eq. 6 (the rows' score); mean/all divides each head's sum by its transform count;
    none/diagnostic keeps the heads the final (after BN recalibration) held-out diagnostic calls
    suited. standardize needs held-out normals' per-head statistics, which the runs do not save:
    benchmarks/score_options.py measures it (refitting). Also: each head's verdict per class.
    """
    from mtssad.diagnostic import head_verdict, select_heads
    from mtssad.metrics import auroc
    from mtssad.scoring import combine_heads

    recs, verdict_counts, accs = [], {}, []
    for row, scores, history in _ours_side_files(frame, works):
        last = history[-1]
        heads = [c[len("score_"):] for c in scores.columns if c.startswith("score_")]
        per_head = {h: scores[f"score_{h}"].to_numpy() for h in heads}
        counts = {h: int(last[f"num_classes/{h}"]) for h in heads}
        verdicts = {h: head_verdict(last.get(f"acc_val_normal/{h}"), last.get(f"acc_val_anomaly/{h}"), counts[h])
                    for h in heads}
        for h, v in verdicts.items():
            verdict_counts.setdefault(h, {}).setdefault(v, []).append(f"{row['normal_class']}/s{row['seed']}")
            accs.append({"head": h, "normal": last.get(f"acc_val_normal/{h}"), "anomaly": last.get(f"acc_val_anomaly/{h}"),
                         "chance": 1 / counts[h]})
        y = scores["is_normal"].to_numpy()
        rec = {"seed": row["seed"], "normal_class": row["normal_class"]}
        for norm, sel in SCORE_OPTIONS:
            keep = select_heads(verdicts) if sel == "diagnostic" else heads
            rec[f"{norm}/{sel}"] = 100 * auroc(y, combine_heads(per_head, keep, norm=norm, counts=counts))
        rec.update({f"head {h}": 100 * auroc(y, per_head[h]) for h in heads})
        recs.append(rec)
    if not recs:
        return "", {}
    df = pd.DataFrame(recs)
    cols = [c for c in df.columns if c not in ("seed", "normal_class")]
    per_seed = df.groupby("seed")[cols].mean()
    sd = per_seed.std(ddof=1) if len(per_seed) > 1 else per_seed.mean() * np.nan
    lines = ["", f"Score options and single heads of `ours`, recombined from the saved per-head test scores of the "
             f"same fitted networks ({len(df)} (class, seed) runs; class mean per seed, then mean +- sd over seeds). "
             "none/all is the paper's eq. 6; diagnostic = heads the held-out diagnostic after BN recalibration calls "
             "suited (decided on validation, never on test).", "",
             "| option | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|",
             "| mean +- sd | " + " | ".join(f"{per_seed[c].mean():.1f} +- {sd[c]:.1f}" for c in cols) + " |", "",
             "Head verdicts of the final diagnostic ((class, seed) runs per verdict) and the held-out accuracies "
             "behind them (mean over runs): a head helps the score when it is right on normals and wrong on "
             "anomalies, so the normal - anomaly gap is what to read.", "",
             "| head | verdicts | chance | acc normal | acc anomaly | gap |", "|---|---|---|---|---|---|"]
    acc = pd.DataFrame(accs).groupby("head", sort=False).mean()
    for h, by in verdict_counts.items():
        parts = [f"{v}: {len(cs)}" + (f" ({', '.join(cs[:12])}{' ...' if len(cs) > 12 else ''})" if v != "suited" else "")
                 for v, cs in sorted(by.items())]
        a = acc.loc[h]
        lines.append(f"| {h} | {'; '.join(parts)} | {a['chance']:.2f} | {a['normal']:.2f} | {a['anomaly']:.2f} | "
                     f"{a['normal'] - a['anomaly']:+.2f} |")
    summary = {"runs": len(df), "mean": {c: float(per_seed[c].mean()) for c in cols},
               "sd": {c: float(sd[c]) for c in cols},
               "verdicts": {h: {v: len(cs) for v, cs in by.items()} for h, by in verdict_counts.items()},
               "held_out_accuracy": {h: {k: float(v) for k, v in r.items()} for h, r in acc.iterrows()}}
    return "\n".join(lines) + "\n", summary


def all_rows_table(frame: pd.DataFrame, summary: dict, *, n_classes: int | None) -> str:
    """Every row with its own wall time (train + score seconds of that class's run); counts of finished rows."""
    counts = frame.groupby(["seed", "method"]).size()
    summary["rows_finished"] = {f"seed{s}/{m}": int(n) for (s, m), n in counts.items()}
    total = n_classes or frame["normal_class"].nunique()
    lines = ["", "Rows finished per (seed, method): " + ", ".join(f"{s}/{m} {n}/{total}" for (s, m), n in counts.items()),
             "", "All rows (AUROC %, seconds of that class's fit and test scoring):", "",
             "| seed | class | method | test AUROC | val AUROC | train s | score s |", "|---|---|---|---|---|---|---|"]
    raw = frame.sort_values(["seed", "method", "normal_class"])
    lines += [f"| {r.seed} | {r.normal_class} | {r.method} | {100 * r.auroc:.1f} | {100 * r.val_auroc:.1f} | "
              f"{r.train_seconds:.0f} | {r.score_seconds:.0f} |" for r in raw.itertuples()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(run(parse_args()))
