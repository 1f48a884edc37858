"""Cost of building the variants of a batch (plan.make) against the forward pass on them.

Ours' default plan (v, h, rot, 3x3 jigsaw with k = 3: 11 variants) on 3x32x32 images,
WRN-16-4, batch 256 originals (quick: 64) on CPU; also each task's share, and the
composed plans of MHRot and GeoTrans. Target: plan.make <= 10% of the forward time.

    python benchmarks/transforms.py [--quick]
"""

from __future__ import annotations

from _common import median_seconds, parse_args, write_results

IMAGE_SHAPE = (3, 32, 32)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    import torch

    from mtssad.methods import make_method
    from mtssad.train import to_model_input

    batch = 64 if args.quick else 256
    repeat = 20  # transform timings are ms-scale: many repeats make the median robust to a busy machine
    g = torch.Generator().manual_seed(0)
    x = to_model_input(torch.randint(0, 256, (batch, *IMAGE_SHAPE), dtype=torch.uint8, generator=g), torch.device("cpu"))
    dets = {m: make_method(m, backbone="wrn-16-4", device="cpu", progress=False).init_model(IMAGE_SHAPE)
            for m in ("ours", "mhrot", "geotrans")}
    ours = dets["ours"]
    ours.model_.eval()
    xv = ours.plan_.make(x, train=False)
    with torch.inference_mode():
        ours.model_(xv[:16])  # warm-up
        forward = median_seconds(lambda: ours.model_(xv), repeat=1 if args.quick else 3, warmup=0)
    rows = [{"what": f"forward WRN-16-4 on ours' {len(xv)} variants", "ms": 1e3 * forward, "pct_of_forward": 100.0}]

    def add(what, fn):
        with torch.inference_mode():
            s = median_seconds(fn, repeat=repeat, warmup=1)
        rows.append({"what": what, "ms": 1e3 * s, "pct_of_forward": 100 * s / forward})
        return s

    make_eval = add(f"ours plan.make (eval, {ours.plan_.num_variants} variants)", lambda: ours.plan_.make(x, train=False))
    make_train = add("ours plan.make (train, random jigsaw offsets)", lambda: ours.plan_.make(x, train=True, generator=g))
    for task in ours.plan_.tasks:
        add(f"  {task.name} variants (eval)", lambda t=task: t.variants(x, train=False))
    add("  jigsaw variants (train)", lambda: ours.plan_.tasks[-1].variants(x, train=True, generator=g))
    for m, V in (("mhrot", 36), ("geotrans", 72)):  # their forward is V / (ours' variants) times ours'
        s = median_seconds(lambda: dets[m].plan_.make(x, train=False), repeat=repeat, warmup=1)
        rows.append({"what": f"{m} plan.make ({V} variants), vs its own forward (est.)", "ms": 1e3 * s,
                     "pct_of_forward": 100 * s / (forward * V / ours.plan_.num_variants)})
    worst = max(make_eval, make_train) / forward
    write_results(
        "transforms", rows, ["what", "ms", "pct_of_forward"],
        title="Transform cost vs forward pass (CPU)",
        settings={"quick": args.quick, "batch": batch, "image_shape": list(IMAGE_SHAPE), "backbone": "wrn-16-4",
                  "repeat": repeat, "threads": args.threads},
        notes=[f"target plan.make <= 10% of forward: {'met' if worst <= 0.10 else 'NOT met'} ({100 * worst:.2f}%)",
               "MHRot/GeoTrans forward estimated as V/10 x ours' measured forward (same backbone, linear in rows)"],
    )


if __name__ == "__main__":
    main()
