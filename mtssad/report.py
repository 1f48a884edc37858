"""OUTDIR/report.md and its plots, rendered from OUTDIR/results.parquet and the side files.

Nothing here computes a result: tables and plots are views of the stored rows
(AUROC etc. as fractions, shown in percent), per-image scores (ROC curves) and
training histories (the task-suitability diagnostic, METHOD.md / paper section 2.1).
Plots use `matplotlib.figure.Figure` directly (Agg, no pyplot global state).
"""

from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .diagnostic import head_verdict
from .errors import OutputDirError
from .paper import CITATION, paper_auroc, paper_siwm
from .results import HEAD_PREFIX, ResultsStore, atomic_write_bytes, file_name, read_scores_file, run_name

__all__ = ["BELOW_PAPER", "MARKER", "chosen_table", "plot_roc", "plot_selection", "plot_task_curves", "render_report",
           "task_table", "task_verdicts"]

log = logging.getLogger(__name__)

BELOW_PAPER = 2.0  # AUROC points below the paper's figure that get the warning marker
WARN = "⚠"
# The first line of every report.md we write: a report.md without it is someone else's and is never overwritten.
MARKER = "<!-- written by mtssad from results.parquet; rewritten by every run and by `mtssad report` -->"
_OLD_FIRST_LINE = "# mtssad results"  # reports written before the marker
_KNOWN_CLASSES = {"vertical": 3, "horizontal": 3, "rotation": 4}  # when a history lacks num_classes/<head>


# ---------------------------------------------------------------- plots

def _save(fig, path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return atomic_write_bytes(path, buf.getvalue())


def plot_roc(frames: dict, path, title: str = "") -> Path:
    """ROC curves, one per entry {label: (is_normal, score)} (normal = positive class) -> PNG."""
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_curve

    from .metrics import auroc

    fig = Figure(figsize=(4.8, 4.4))
    ax = fig.subplots()
    for label, (is_normal, score) in frames.items():
        fpr, tpr, _ = roc_curve(np.asarray(is_normal, bool), np.asarray(score, float))
        ax.plot(fpr, tpr, label=f"{label} ({100 * auroc(is_normal, score):.1f})")
    ax.plot([0, 1], [0, 1], ls=":", c="gray", lw=1)
    ax.set(xlabel="anomalies accepted (FPR)", ylabel="normals accepted (TPR)", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right", fontsize="small", title="AUROC %")
    fig.tight_layout()
    return _save(fig, path)


def _heads(history: list[dict]) -> list[str]:
    names = [k.split("/", 1)[1] for e in history for k in e if k.startswith(("acc_train/", "acc_val_normal/"))]
    return list(dict.fromkeys(names))


def _last(history: list[dict], key: str):
    for e in reversed(history):
        if key in e and e[key] is not None and not (isinstance(e[key], float) and math.isnan(e[key])):
            return e[key]
    return None


def plot_task_curves(history: list[dict], path, title: str = "") -> Path:
    """Per head: training, held-out normal and anomalous accuracy per epoch, chance dashed -> PNG."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    heads = _heads(history)
    if not heads:
        raise ValueError("expected a history with acc_train/<head> or acc_val_normal/<head> entries; got none")
    fig = Figure(figsize=(3.2 * len(heads), 3.0))
    axes = np.atleast_1d(fig.subplots(1, len(heads), sharey=True))
    for ax, h in zip(axes, heads):
        for key, style in (("acc_train", ":"), ("acc_val_normal", "-"), ("acc_val_anomaly", "--")):
            pts = [(e.get("epoch", i), e[f"{key}/{h}"]) for i, e in enumerate(history) if f"{key}/{h}" in e]
            if pts:
                ax.plot(*zip(*pts), style, marker=".", label=key.replace("acc_", "").replace("_", " "))
        n = _last(history, f"num_classes/{h}") or _KNOWN_CLASSES.get(h)
        if n:
            ax.axhline(1 / n, c="gray", lw=1, ls="-.", label="chance")
        ax.set(title=h, xlabel="epoch", ylim=(0, 1.02))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def config_name(r: dict) -> str:
    """A sweep row's config in a few characters: '2x2 k3', 'no jigsaw' (the task search's geometric heads), or '-'."""
    if not pd.isna(r.get("grid")) and r.get("grid"):
        return f"{r['grid']} k{int(r['k'])}"
    heads = r.get("heads")
    if isinstance(heads, str) and "jigsaw" not in heads.split(",") and _true(r.get("task_search")):
        return "no jigsaw"
    return "-"


def _true(x) -> bool:
    """A stored flag that is set and true (None, NaN and pandas' NA are not)."""
    return x is not None and not (isinstance(x, float) and math.isnan(x)) and x is not pd.NA and bool(x)


def plot_selection(g: pd.DataFrame, path, title: str = "") -> Path:
    """Validation AUROC of every searched config (columns) per normal class (rows), the chosen one boxed -> PNG.

    g: one method's sweep rows (normal_class, val_auroc, selected, grid, k, heads, task_search).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    g = g.assign(_cfg=[config_name(r) for r in g.to_dict("records")])
    classes = list(dict.fromkeys(g["normal_class"]))
    configs = list(dict.fromkeys(g["_cfg"]))
    grid = g.pivot_table(index="normal_class", columns="_cfg", values="val_auroc", aggfunc="mean")
    grid = grid.reindex(index=classes, columns=configs) * 100
    fig = Figure(figsize=(1.2 + 0.9 * len(configs), min(1.6 + 0.32 * len(classes), 30)))
    ax = fig.subplots()
    im = ax.imshow(grid.to_numpy(float), aspect="auto", cmap="viridis")
    for i in range(len(classes)):
        for j in range(len(configs)):
            v = grid.iat[i, j]
            if not pd.isna(v) and len(classes) <= 40:  # numbers while they stay legible
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize="x-small",
                        color="k" if im.norm(v) > 0.6 else "w")
    for r in g[g["selected"].fillna(False).astype(bool)].to_dict("records"):
        ax.add_patch(Rectangle((configs.index(r["_cfg"]) - 0.5, classes.index(r["normal_class"]) - 0.5), 1, 1,
                               fill=False, ec="red", lw=2))
    ax.set_xticks(range(len(configs)), configs, rotation=30, ha="right", fontsize="small")
    ax.set_yticks(range(len(classes)), [str(c) for c in classes], fontsize="small")
    ax.set(xlabel="config (red box: chosen on validation)", ylabel="normal class", title=title)
    fig.colorbar(im, ax=ax, label="validation AUROC %")
    fig.tight_layout()
    return _save(fig, path)


def chosen_table(g: pd.DataFrame) -> str:
    """Markdown: per (normal class, method, seed) of a sweep, the config chosen on validation, its heads, whether
    the jigsaw head was kept (task search), the margin over the runner-up, and its validation and test AUROC."""
    rows = []
    for (c, m, seed), rs in g.groupby(["normal_class", "method", "seed"], sort=False, dropna=False):
        sel = rs[rs["selected"].fillna(False).astype(bool)]
        if sel.empty:
            continue
        r = sel.iloc[0].to_dict()
        others = rs.drop(sel.index)["val_auroc"].dropna()
        margin = f"{100 * (r['val_auroc'] - others.max()):+.1f}" if len(others) else "–"
        kept = r.get("jigsaw_kept")
        kept = "–" if kept is None or pd.isna(kept) else ("yes" if kept else "no")
        rows.append([c, m, _str(seed), config_name(r), _str(r.get("heads")), kept, len(rs), margin,
                     _pct(r.get("val_auroc")), _pct(r.get("auroc"))])
    return _md(["normal class", "method", "seed", "chosen config", "heads", "jigsaw kept", "configs searched",
                "val margin over next", "val AUROC", "test AUROC"], rows)


# ---------------------------------------------------------------- task diagnostic

def task_verdicts(history: list[dict]) -> dict[str, dict]:
    """Per head at the last epoch: accuracies, chance and a verdict (too easy / too hard / suited)."""
    out = {}
    for h in _heads(history):
        normal, anomaly = _last(history, f"acc_val_normal/{h}"), _last(history, f"acc_val_anomaly/{h}")
        n = _last(history, f"num_classes/{h}") or _KNOWN_CLASSES.get(h)
        out[h] = {"classes": n, "chance": 1 / n if n else None, "train": _last(history, f"acc_train/{h}"),
                  "normal": normal, "anomaly": anomaly, "verdict": head_verdict(normal, anomaly, n)}
    return out


def _acc(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def task_table(history: list[dict]) -> str:
    """Markdown: per head, last-epoch train / held-out normal / held-out anomaly accuracy and the verdict."""
    lines = ["| head | classes | chance | train acc | normal acc | anomaly acc | verdict |",
             "|---|---|---|---|---|---|---|"]
    for h, v in task_verdicts(history).items():
        lines.append(f"| {h} | {v['classes'] or '?'} | {_acc(v['chance'])} | {_acc(v['train'])} | "
                     f"{_acc(v['normal'])} | {_acc(v['anomaly'])} | {v['verdict']} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- tables

def _pct(x) -> str:
    return "–" if x is None or pd.isna(x) else f"{100 * x:.1f}"


def _md(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _str(x) -> str:
    return "–" if pd.isna(x) else str(x)


def _canon(config: str) -> str:
    """The config without its seed (seeds are averaged, not separate columns)."""
    try:
        c = json.loads(config)
    except (TypeError, ValueError):
        return str(config)
    return json.dumps({k: v for k, v in c.items() if k != "seed"}, sort_keys=True) if isinstance(c, dict) else config


def _labels(g: pd.DataFrame) -> pd.Series:
    """Column label per row: the method, plus grid/k or the differing config fields when it has several."""
    labels = g["method"].astype(str).copy()
    sel = g["selected"].fillna(False).astype(bool)
    labels[sel] = labels[sel] + " (val-selected)"
    canon = g["config"].map(_canon)
    for m, rows in g[~sel].groupby("method", sort=False):
        configs = list(dict.fromkeys(canon[rows.index]))
        if len(configs) < 2:
            continue
        first = rows.assign(canon=canon[rows.index]).drop_duplicates("canon").set_index("canon")
        gk = {c: (_str(first.at[c, "grid"]), _str(first.at[c, "k"])) for c in configs}
        if len(set(gk.values())) == len(configs):
            names = {c: f"{m} {gk[c][0]} k{gk[c][1]}" for c in configs}
        else:
            parsed = {c: json.loads(c) if c.startswith("{") else {"config": c} for c in configs}
            keys = sorted({k for p in parsed.values() for k in p})
            diff = [k for k in keys if len({json.dumps(p.get(k), default=str) for p in parsed.values()}) > 1]
            names = {c: f"{m} (" + ", ".join(f"{k}={parsed[c].get(k)}" for k in diff[:3]) + ")" for c in configs}
        labels[rows.index] = canon[rows.index].map(names)
    return labels


def _paper_note(ours: float, paper: float | None) -> str:
    if paper is None or ours is None or pd.isna(ours):
        return ""
    gap = paper - 100 * ours
    return f" (paper {paper:.1f})" + (f" {WARN} −{gap:.1f}" if gap > BELOW_PAPER else "")


def _main_table(g: pd.DataFrame, dataset: str) -> tuple[str, bool]:
    classes = list(dict.fromkeys(g["normal_class"]))
    cols = list(dict.fromkeys(g["label"]))
    cell = g.groupby(["normal_class", "label"], sort=False)["auroc"].mean()
    method_of = dict(zip(g["label"], g["method"]))
    rows, flagged = [], False
    for c in classes:
        r = [c]
        for lab in cols:
            v = cell.get((c, lab))
            note = _paper_note(v, paper_auroc(dataset, method_of[lab], c)) if "-vs-" not in dataset else ""
            flagged |= WARN in note
            r.append(_pct(v) + note)
        rows.append(r)
    mean = ["**mean**"]
    for lab in cols:
        per_class = cell.xs(lab, level="label")
        v = per_class.mean()
        note = _paper_note(v, paper_auroc(dataset, method_of[lab]))
        flagged |= WARN in note
        partial = f" ({len(per_class)}/{len(classes)} classes)" if len(per_class) < len(classes) else ""
        mean.append(f"**{_pct(v)}**{note}{partial}")
    return _md(["normal class", *cols], rows + [mean]), flagged


def _metric_table(g: pd.DataFrame, dataset: str) -> str:
    rows = []
    for lab, r in g.groupby("label", sort=False):
        m = r["method"].iloc[0]
        per_class = r.groupby("normal_class", sort=False)[["auroc", "aupr", "eer", "apcer_at_5bpcer"]].mean().mean()
        cells = [lab, f"{_pct(per_class['auroc'])}{_paper_note(per_class['auroc'], paper_auroc(dataset, m))}",
                 _pct(per_class["aupr"])]
        for k in ("eer", "apcer_at_5bpcer"):
            p = paper_siwm(m, k) if dataset == "siwm" else None
            cells.append(_pct(per_class[k]) + (f" (paper {p:.1f})" if p is not None else ""))
        cells += [f"{r['train_seconds'].mean():.1f}", f"{r['score_seconds'].mean():.2f}", len(r)]
        rows.append(cells)
    return _md(["method", "AUROC", "AUPR-out", "EER", "APCER@5%BPCER", "train s/run", "score s/run", "runs"], rows)


def _head_table(g: pd.DataFrame) -> str | None:
    heads = [c for c in g.columns if c.startswith(HEAD_PREFIX) and g[c].notna().any()]
    if not heads:
        return None
    rows = [[lab, *(_pct(r[h].mean()) for h in heads)] for lab, r in g.groupby("label", sort=False)]
    return _md(["method", *(h[len(HEAD_PREFIX):] for h in heads)], rows)


def _trials_table(g: pd.DataFrame) -> str:
    if "heads" in g:  # the task search's configs: the heads tell them apart (grid and k are empty)
        g = g.assign(heads=[_str(h) if _true(r.get("task_search")) else "–" for h, r in
                            zip(g["heads"], g.to_dict("records"))])
    cols = [c for c in ("normal_class", "method", "grid", "k", "heads", "seed", "val_auroc", "auroc", "selected")
            if c in g]
    rows = [[("✔" if _str(x) == "True" else "") if c == "selected" else _pct(x) if c in ("val_auroc", "auroc")
             else _str(x) for c, x in zip(cols, r)] for r in g[cols].itertuples(index=False)]
    return _md([c.replace("auroc", "AUROC") for c in cols], rows)


def _stale(png: Path, sources: list[Path]) -> bool:
    return not png.exists() or any(s.stat().st_mtime > png.stat().st_mtime for s in sources)


def _roc_plots(store: ResultsStore, g: pd.DataFrame, dataset: str, split: str, data) -> list[str]:
    links = []
    for c, rows in g.groupby("normal_class", sort=False):
        first = rows.sort_values("seed").drop_duplicates("label")
        names = {lab: store.scores_path(run_name(r)) for lab, r in zip(first["label"], first.to_dict("records"))}
        names = {lab: p for lab, p in names.items() if p.exists()}
        if not names:
            continue
        ident = [dataset, None if pd.isna(data) else data, split, c]  # exact: '猫' and '犬' get different files
        png = store.outdir / "plots" / f"{file_name(['roc', dataset, split, c], ident)}.png"
        if _stale(png, list(names.values())):
            frames = {lab: (s["is_normal"].to_numpy(bool), s["score"].to_numpy(float))
                      for lab, s in ((lab, read_scores_file(p)) for lab, p in names.items())}
            plot_roc(frames, png, f"{dataset}: normal = {c}")
        links.append(f"[{c}]({png.relative_to(store.outdir).as_posix()})")
    return links


def _task_section(store: ResultsStore, g: pd.DataFrame, dataset: str, plots: bool) -> list[str]:
    out = []
    for r in g.sort_values("seed").drop_duplicates(["normal_class", "label"]).to_dict("records"):
        name = run_name(r)
        path = store.json_path(f"history/{name}")
        history = store.read_json(f"history/{name}") if path.exists() else None
        if not history or not _heads(history):
            continue
        link = ""
        if plots:
            png = store.outdir / "plots" / f"tasks_{name}.png"
            if _stale(png, [path]):
                plot_task_curves(history, png, f"{dataset} / {r['normal_class']} / {r['label']}")
            link = f" ([curves]({png.relative_to(store.outdir).as_posix()}))"
        out += [f"<details><summary>{r['normal_class']} / {r['label']} (seed {r['seed']}){link}</summary>", "",
                task_table(history), "", "</details>", ""]
    return out


def _data_notes(df: pd.DataFrame) -> dict[tuple, str]:
    """(dataset, data) -> ', field=value' for the data-selection fields that differ between a data set's rows."""
    notes = {}
    for dataset, g in df.groupby("dataset", sort=False):
        texts = list(dict.fromkeys(g["data"].where(g["data"].notna(), None)))
        if len(texts) < 2:
            continue
        parsed = {t: json.loads(t) if isinstance(t, str) and t.startswith("{") else {} for t in texts}
        keys = sorted({k for p in parsed.values() for k in p})
        diff = [k for k in keys if len({json.dumps(p.get(k), default=str) for p in parsed.values()}) > 1]
        for t in texts:
            notes[(dataset, t)] = ", " + (", ".join(f"{k}={parsed[t].get(k)}" for k in diff) if parsed[t]
                                          else "data selection not recorded")
    return notes


def _ours(path: Path) -> bool:
    """Whether `path` is free or a report mtssad wrote (its first line is MARKER)."""
    if not path.exists():
        return True
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.readline().rstrip("\n") in (MARKER, _OLD_FIRST_LINE)


def _report_path(outdir: Path) -> Path:
    """OUTDIR/report.md unless a report.md not written by mtssad is there (then OUTDIR/mtssad-report.md)."""
    path, alt = outdir / "report.md", outdir / "mtssad-report.md"
    if _ours(path):
        return path
    if not _ours(alt):
        raise OutputDirError(f"{outdir}: report.md and mtssad-report.md both exist and were not written by mtssad; "
                               "move one aside to get a report")
    log.warning("%s was not written by mtssad (no marker line): left untouched; the report goes to %s", path, alt.name)
    return alt


def render_report(outdir, *, plots: bool = True) -> Path:
    """Write OUTDIR/report.md (and OUTDIR/plots/*.png unless plots=False) from the stored results.

    A report.md without mtssad's first-line MARKER is someone else's: it is left untouched and the
    report goes to OUTDIR/mtssad-report.md (with a warning). Rows of one data set loaded with
    different data selections (--max-train, --side, ...) get separate sections, never one average.
    """
    store = ResultsStore(outdir)
    path = _report_path(store.outdir)  # before any plot is drawn
    df = store.load()
    if "data" not in df:  # a file written before the data column
        df["data"] = None
    notes = _data_notes(df)
    lines = [MARKER, "# mtssad results", "", f"{len(df)} result row(s) in `{store.path.name}`. AUROC etc. in %; "
             f"paper figures from {CITATION}. {WARN} marks ours more than {BELOW_PAPER:g} AUROC points "
             "below the paper. Cells average over seeds.", ""]
    if df.empty:
        lines.append("No results yet.")
    for (dataset, data, split), g in df.groupby(["dataset", "data", "split"], sort=False, dropna=False):
        g = g.assign(label=_labels(g))
        split = "test" if pd.isna(split) else split
        has_sweep = g["selected"].notna().any()
        main = g[g["selected"].fillna(True).astype(bool)]
        note = notes.get((dataset, None if pd.isna(data) else data), "")
        lines += [f"## {dataset} ({split}{note})", "", "### AUROC per normal class", ""]
        table, flagged = _main_table(main, dataset)
        lines += [table, ""]
        if flagged:
            lines += [f"{WARN} at least one figure is more than {BELOW_PAPER:g} points below the paper.", ""]
        lines += ["### All metrics (mean over normal classes)", "", _metric_table(main, dataset), ""]
        heads = _head_table(main)
        if heads:
            lines += ["### AUROC of each head's score alone (mean over classes)", "", heads, ""]
        if has_sweep:
            sweep = g[g["selected"].notna()]
            lines += ["### Chosen per class on validation data (never on test)", "", chosen_table(sweep), ""]
            if plots:
                links = []
                for m, gm in sweep.groupby("method", sort=False):
                    if gm.groupby("normal_class").size().max() < 2:
                        continue  # one config per class: nothing was searched
                    ident = [dataset, None if pd.isna(data) else data, split, m]
                    png = store.outdir / "plots" / f"{file_name(['selection', dataset, split, m], ident)}.png"
                    plot_selection(gm, png, f"{dataset} / {m}: validation AUROC per config")
                    links.append(f"[{m}]({png.relative_to(store.outdir).as_posix()})")
                if links:
                    lines += ["Validation AUROC across the searched configs (grid x k, and 'no jigsaw' = the "
                              "geometric heads alone): " + ", ".join(links), ""]
            lines += ["### Sweep trials (chosen on validation data, never on test)", "", _trials_table(sweep), ""]
        if plots:
            links = _roc_plots(store, main, dataset, split, data)
            if links:
                lines += ["ROC curves: " + ", ".join(links), ""]
        tasks = _task_section(store, main, dataset, plots)
        if tasks:
            lines += ["### Task suitability (last epoch; held-out normal vs anomalous accuracy)", "", *tasks]
    others = sorted(p.name for p in store.outdir.glob("*.png"))
    if others:
        lines += ["## Other plots", "", *(f"- [{n}]({n})" for n in others), ""]
    atomic_write_bytes(path, "\n".join(lines).encode())
    return path
