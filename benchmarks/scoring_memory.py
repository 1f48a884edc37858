"""Peak memory of MultiTaskDetector.score_samples: it streams score_batch_size images at a time.

Each measurement runs in a fresh subprocess (resource.getrusage maxrss is a high-water
mark, so runs must not share a process): build N random 1x16x16 uint8 images, fit a
WRN-10-1 detector fitted for one epoch (barely trained; memory does not depend on the weights) on
32 of them, record maxrss, score all N, record maxrss again; each size runs 3 times
(quick: 2) and the median run is reported. Peak RSS for 20k images
(quick: 5k) against 2k should be ~1: memory is bounded by the batch, not by N.

    python benchmarks/scoring_memory.py [--quick]
"""

from __future__ import annotations

import json
import subprocess
import sys

from _common import parse_args, write_results

SHAPE = (1, 16, 16)
BATCH = 256  # DetectorConfig.score_batch_size default


def measure(n: int, threads: int) -> dict:
    """In this process: RSS before/after scoring n images, in MiB."""
    import resource
    import time

    import numpy as np
    import torch

    from mtssad import MultiTaskDetector

    torch.set_num_threads(threads)
    mib = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # noqa: E731 (Linux: KiB)
    images = np.random.default_rng(0).integers(0, 256, (n, *SHAPE), dtype=np.uint8)
    det = MultiTaskDetector(backbone="wrn-10-1", epochs=1, min_steps=0, device="cpu", progress=False, score_batch_size=BATCH)
    det.fit(images[:32])
    before = mib()
    t0 = time.perf_counter()
    scores = det.score_samples(images)
    assert scores.shape == (n,)
    return {"images": n, "images_mib": images.nbytes / 2**20, "maxrss_before_mib": before,
            "peak_rss_mib": mib(), "score_seconds": time.perf_counter() - t0}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(measure(int(sys.argv[2]), int(sys.argv[3]))))
        return
    args = parse_args(__doc__.splitlines()[0])
    sizes = (2000, 5000 if args.quick else 20000)
    runs = 2 if args.quick else 3  # peak RSS varies by ~50 MiB between identical processes (allocator, threads)
    rows = []
    for n in sizes:
        each = []
        for _ in range(runs):
            out = subprocess.run([sys.executable, __file__, "--child", str(n), str(args.threads)], check=True,
                                 capture_output=True, text=True)
            each.append(json.loads(out.stdout.strip().splitlines()[-1]))
        each.sort(key=lambda r: r["peak_rss_mib"])
        row = each[len(each) // 2]  # the median run
        row["peak_rss_mib_each_run"] = [r["peak_rss_mib"] for r in each]
        rows.append(row)
        print(f"{n} images: peak RSS {row['peak_rss_mib']:.0f} MiB (runs: "
              f"{', '.join(f'{r:.0f}' for r in row['peak_rss_mib_each_run'])})", flush=True)
    for r in rows:
        r["peak_vs_2k"] = r["peak_rss_mib"] / rows[0]["peak_rss_mib"]
        r["growth_during_scoring_mib"] = r["peak_rss_mib"] - r["maxrss_before_mib"]
    ratio = rows[-1]["peak_vs_2k"]
    write_results(
        "scoring_memory", rows,
        ["images", "images_mib", "maxrss_before_mib", "peak_rss_mib", "growth_during_scoring_mib", "peak_vs_2k",
         "score_seconds"],
        title="Peak RSS while scoring: streaming keeps it flat",
        settings={"quick": args.quick, "runs_per_size": runs, "image_shape": list(SHAPE), "backbone": "wrn-10-1", "score_batch_size": BATCH,
                  "method": "ours (11 variants)", "threads": args.threads},
        notes=[f"median-run peak RSS {sizes[1]} vs {sizes[0]} images: {ratio:.3f}x ({'flat' if ratio < 1.1 else 'NOT flat'}); "
               "the image array itself is included in RSS"],
    )


if __name__ == "__main__":
    main()
