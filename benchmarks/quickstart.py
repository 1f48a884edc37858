"""Time the README's main job, `mtssad sweep` with its defaults, as a new user runs it; table its selected rows.

    python benchmarks/quickstart.py [--out OUTDIR] [-- extra sweep flags]

Runs `mtssad sweep --out OUTDIR --local` in a subprocess (a private local Ray; nothing else should run
on the machine), records the wall time, when the first progress line appeared, and the 1-minute load
average every 10 s, then reads OUTDIR/results.parquet: per class the config selected on validation
(grid, k, heads), its validation AUROC and its test AUROC (test is never used to choose). Writes
benchmarks/results/sweep_quickstart.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/quickstart-bench")
    p.add_argument("extra", nargs="*", help="more `mtssad sweep` flags (after --)")
    args = p.parse_args(argv)
    cmd = [sys.executable, "-m", "mtssad.cli", "sweep", "--out", args.out, "--local", *args.extra]
    loads, first_line = [os.getloadavg()[0]], [None]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def sample():
        while proc.poll() is None:
            time.sleep(10)
            loads.append(os.getloadavg()[0])

    threading.Thread(target=sample, daemon=True).start()
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        print(line, end="", flush=True)
        if first_line[0] is None and line.strip():
            first_line[0] = time.perf_counter() - t0
    code = proc.wait()
    wall = time.perf_counter() - t0
    if code != 0:
        print(f"mtssad sweep exited {code}", file=sys.stderr)
        return code
    import pandas as pd

    df = pd.read_parquet(Path(args.out) / "results.parquet")
    sel = df[df["selected"].fillna(False).astype(bool)].sort_values("normal_class")
    def cell(r, key):
        v = r.get(key)
        return "-" if v is None or (isinstance(v, float) and v != v) else v

    jig = ["jigsaw" in str(cell(r, "heads")) for _, r in sel.iterrows()]
    rows = [f"| {r.normal_class} | {cell(r, 'grid') if j else '-'} | {cell(r, 'k') if j else '-'} | {cell(r, 'heads')} | "
            f"{100 * r['val_auroc']:.1f} | {100 * r['auroc']:.1f} |" for (_, r), j in zip(sel.iterrows(), jig)]
    steps = sorted(int(v) for v in df["steps_trained"].dropna().unique()) if "steps_trained" in df else []
    jigsaw = sum(jig)
    md = [f"# The quickstart `mtssad sweep` ({len(df)} configs, {len(sel)} classes)", "",
          f"`python benchmarks/quickstart.py` = `mtssad sweep --out OUTDIR --local {' '.join(args.extra)}` on this 2-CPU "
          f"machine: **{wall / 60:.1f} min wall** ({wall:.0f} s), first progress line after {first_line[0]:.0f} s; "
          f"1-minute load average {loads[0]:.1f} at the start, {max(loads):.1f} at the peak, {loads[-1]:.1f} at the end "
          "(2.0 = both CPUs busy). Steps trained per config: "
          f"{', '.join(map(str, steps)) or '-'}.", "",
          f"Mean test AUROC of the configs selected on validation: **{100 * sel['auroc'].mean():.2f}** "
          f"(validation {100 * sel['val_auroc'].mean():.2f})" +
          f"; the jigsaw head was kept for {jigsaw} of {len(sel)} classes.", "",
          "| class | grid | k | heads | val AUROC % | test AUROC % |", "|---|---|---|---|---|---|", *rows, ""]
    (HERE / "results" / "sweep_quickstart.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
