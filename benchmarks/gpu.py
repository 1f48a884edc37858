"""GPU throughput of WRN-16-4: training and scoring images/s, ours vs MHRot, AMP off and on.

Run on a machine with a CUDA device, from the repository root (a few minutes):

    python benchmarks/gpu.py [--quick]

Writes benchmarks/results/gpu.json and .md with the GPU's name. Untrained networks on
random 3x32x32 images (throughput does not depend on weights or content). Training:
`mtssad.train.train_step` on batches of 32 originals (each expanded to all its variants,
the paper's setting); scoring: `mtssad.scoring.score_images` at score_batch_size 256.
On a machine without CUDA it refuses and exits with status 2.
"""

from __future__ import annotations

import sys

from _common import median_seconds, parse_args, write_results

METHODS = ("ours", "mhrot")
IMAGE_SHAPE = (3, 32, 32)


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], threads=None)
    import torch

    if not torch.cuda.is_available():
        print("no GPU here; run on a GPU machine (python benchmarks/gpu.py); nothing measured, nothing written",
              file=sys.stderr)
        return 2
    from mtssad.methods import make_method
    from mtssad.scoring import score_images
    from mtssad.train import make_optimizer, train_step

    torch.backends.cudnn.benchmark = True
    train_steps, n_score = (10, 512) if args.quick else (50, 4096)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_score, *IMAGE_SHAPE), dtype=torch.uint8, generator=g)
    train_batch = images[:32]
    rows = []
    for amp in (False, True):
        for method in METHODS:
            det = make_method(method, backbone="wrn-16-4", device="cuda", amp=amp, progress=False).init_model(IMAGE_SHAPE)
            model, plan, dev = det.model_, det.plan_, det.device_
            opt = make_optimizer(model, det.config)

            def step():
                for _ in range(train_steps):
                    train_step(model, plan, train_batch, opt, device=dev, generator=g, amp=amp)

            train_s = median_seconds(step, repeat=3, warmup=1)

            def score():
                score_images(model, plan, images, device=dev, batch_size=256, amp=amp)

            score_s = median_seconds(score, repeat=3, warmup=1)
            rows.append({"method": method, "amp": amp, "forward_passes": plan.num_variants,
                         "train_images_per_s": 32 * train_steps / train_s, "score_images_per_s": n_score / score_s,
                         "peak_gpu_mem_gib": torch.cuda.max_memory_allocated() / 2**30})
            torch.cuda.reset_peak_memory_stats()
            print(rows[-1], flush=True)
    for r in rows:
        ref = next(x for x in rows if x["method"] == "mhrot" and x["amp"] == r["amp"])
        r["score_speedup_vs_mhrot"] = r["score_images_per_s"] / ref["score_images_per_s"]
        r["train_speedup_vs_mhrot"] = r["train_images_per_s"] / ref["train_images_per_s"]
    write_results(
        "gpu", rows, ["method", "amp", "forward_passes", "train_images_per_s", "score_images_per_s",
                      "score_speedup_vs_mhrot", "train_speedup_vs_mhrot", "peak_gpu_mem_gib"],
        title=f"GPU throughput, WRN-16-4 ({torch.cuda.get_device_name(0)})",
        settings={"quick": args.quick, "backbone": "wrn-16-4", "image_shape": list(IMAGE_SHAPE), "train_batch": 32,
                  "train_steps_per_timing": train_steps, "score_images": n_score, "score_batch_size": 256,
                  "gpu": torch.cuda.get_device_name(0), "weights": "untrained"},
        notes=["median of 3 timings after one warm-up; AMP = torch.autocast on CUDA (DetectorConfig.amp)"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
