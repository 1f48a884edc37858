"""Profile of the two hot paths (scoring a batch, one training step) and the fix it led to.

torch.profiler's top operators for ours' default plan (11 variants per image) on
1x32x32 images (digits' shape), WRN-10-1 and WRN-16-4, then the before/after timing
of the change the profile pointed at: NCHW (before) vs channels_last (after,
`DetectorConfig.channels_last`, the default), timed alternately in one process so
the ratio holds on a noisy machine.

    python benchmarks/profile_hot_paths.py [--quick]
"""

from __future__ import annotations

import statistics
import time

from _common import parse_args, write_results

IMAGE_SHAPE = (1, 32, 32)


def build(backbone: str, channels_last: bool):
    from mtssad.methods import make_method

    return make_method("ours", backbone=backbone, device="cpu", progress=False,
                       channels_last=channels_last).init_model(IMAGE_SHAPE)


def score_fn(det, x):
    from mtssad.scoring import head_scores, variant_probs

    def run():
        det.model_.eval()
        head_scores(variant_probs(det.model_, det.plan_, x), det.plan_)

    return run


def train_fn(det, x):
    import torch

    from mtssad.train import make_optimizer, train_step

    opt = make_optimizer(det.model_, det.config)
    gen = torch.Generator().manual_seed(0)
    return lambda: train_step(det.model_, det.plan_, x, opt, device=torch.device("cpu"), generator=gen)


def top_ops(fn, n: int = 6) -> list[tuple[str, float]]:
    """(operator, share of self CPU time) for the n most expensive operators of one call."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:n]
    return [(e.key, e.self_cpu_time_total / total) for e in ranked]


def alternate(fa, fb, repeat: int) -> tuple[float, float]:
    """Median seconds of fa and fb, run A B A B ... after one warm-up each."""
    fa(), fb()
    ta, tb = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fa()
        ta.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fb()
        tb.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    import torch

    from mtssad.train import to_model_input

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (128, *IMAGE_SHAPE), dtype=torch.uint8, generator=g)
    backbones = ["wrn-10-1"] if args.quick else ["wrn-10-1", "wrn-16-4"]
    rows, notes = [], []
    for bb in backbones:
        repeat = 3 if (args.quick or bb == "wrn-16-4") else 7
        score_n, train_n = (64, 16) if bb == "wrn-16-4" else (128, 32)
        x_score = to_model_input(images[:score_n], torch.device("cpu"))
        x_train = images[:train_n]
        before, after = build(bb, False), build(bb, True)
        after.model_.load_state_dict(before.model_.state_dict())  # same weights: only the layout differs
        for path, make, x, n in (("score", score_fn, x_score, score_n), ("train step", train_fn, x_train, train_n)):
            ops = top_ops(make(before, x))
            notes.append(f"{bb} {path} (NCHW) top self-CPU operators: "
                         + ", ".join(f"{name} {100 * share:.0f}%" for name, share in ops))
            t_before, t_after = alternate(make(before, x), make(after, x), repeat)
            rows.append({"backbone": bb, "path": path, "images": n, "variants": before.plan_.num_variants,
                         "nchw_ms": 1e3 * t_before, "channels_last_ms": 1e3 * t_after,
                         "speedup": t_before / t_after})
            print(rows[-1], flush=True)
    write_results(
        "profile_hot_paths" + ("_quick" if args.quick else ""), rows,
        ["backbone", "path", "images", "variants", "nchw_ms", "channels_last_ms", "speedup"],
        title="Hot-path profile: NCHW (before) vs channels_last (after), CPU",
        settings={"quick": args.quick, "image_shape": list(IMAGE_SHAPE), "threads": args.threads,
                  "plan": "ours default: v, h, rot, 3x3 jigsaw k=3 (11 variants)"},
        notes=notes + ["times: median of alternating runs in one process; speedup = nchw / channels_last"],
    )


if __name__ == "__main__":
    main()
