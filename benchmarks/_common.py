"""Helpers shared by the benchmark scripts: threads, timing, machine info, result files.

Each benchmark is run from the repository root (`python benchmarks/NAME.py [--quick]`),
prints a table and writes benchmarks/results/NAME.json (metadata + rows) and NAME.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

# Where results go: benchmarks/results (committed), or MTSSAD_BENCH_RESULTS for a rerun to compare (compare.py).
RESULTS = Path(os.environ.get("MTSSAD_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run standalone from a checkout too


def parse_args(description: str, *, threads: int | None = 2) -> argparse.Namespace:
    """--quick (< 2 min on 2 CPUs) and --threads; sets torch's intra-op threads."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="fewer images and repeats (< 2 min on 2 CPUs)")
    p.add_argument("--threads", type=int, default=threads, help="torch CPU threads (default %(default)s)")
    args = p.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return args


def median_seconds(fn, *, repeat: int, warmup: int = 1) -> float:
    """Median wall time of `fn()` over `repeat` runs after `warmup` untimed ones (syncs CUDA if present)."""
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine_info() -> dict:
    import torch

    info = {
        "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_results(name: str, rows: list[dict], columns: list[str], *, title: str, settings: dict,
                  notes: list[str] = ()) -> None:
    """Print the table; write results/NAME.json (settings, machine, rows) and results/NAME.md."""
    table = markdown_table(rows, columns)
    print(table)
    for n in notes:
        print(n)
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"benchmark": name, "settings": settings, "machine": machine_info(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "notes": list(notes)}
    (RESULTS / f"{name}.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    md = [f"# {title}", "", f"Settings: `{json.dumps(settings)}`", "",
          f"Machine: `{json.dumps(meta['machine'])}` ({meta['date']})", "", table, ""]
    md += [f"- {n}" for n in notes]
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")
    print(f"wrote {RESULTS / name}.json and .md")


def scoring_setup(method: str, backbone: str, image_shape: tuple[int, int, int], device: str = "cpu", **params):
    """(detector, reducer): an untrained `method` with plan_ and model_ built, and the reducer its score uses."""
    from mtssad.methods import make_method
    from mtssad.scoring import head_scores

    det = make_method(method, backbone=backbone, device=device, progress=False, **params).init_model(image_shape)
    reduce = head_scores
    if method == "geotrans" and det.geotrans_score == "dirichlet":  # include the Dirichlet score's cost
        import torch

        from mtssad.methods.geotrans import dirichlet_reducer

        V = det.plan_.num_variants
        reduce = dirichlet_reducer(torch.full((V, V), 1.5, dtype=torch.float64))
    return det, reduce
