import math

import pytest
import torch

from mtssad.config import DetectorConfig, jigsaw_k_problem
from mtssad.transforms import (Jigsaw, Rotation, Translation, build_tasks, check_image_fits, composed_plan,
                               jigsaw_permutations, multitask_plan)


def ramp(n=1, c=1, h=8, w=8):
    return torch.arange(n * c * h * w, dtype=torch.float32).view(n, c, h, w)


def test_rot90_four_times_is_identity_and_one_turn_is_ccw():
    x = ramp(2, 3)
    r = Rotation()
    v = r.variants(x)
    assert v.shape == (3, 2, 3, 8, 8)
    again = x
    for _ in range(4):
        again = Rotation().variants(again)[0]
    assert torch.equal(again, x)
    # counter-clockwise: the top-right pixel moves to the top-left
    assert v[0, 0, 0, 0, 0] == x[0, 0, 0, -1]
    assert torch.equal(v[1], torch.flip(x, dims=(2, 3)))


def test_vertical_translation_content_and_reflect_padding():
    x = ramp(1, 1, 8, 4)
    t = Translation("vertical", 2)
    up, down = t.variants(x)
    # -t: content moves up by 2; the bottom rows are reflections of rows 6, 5 (reflect excludes the edge)
    assert torch.equal(up[0, 0, :6], x[0, 0, 2:])
    assert torch.equal(up[0, 0, 6], x[0, 0, 6]) and torch.equal(up[0, 0, 7], x[0, 0, 5])
    # +t: content moves down by 2; the top rows reflect rows 2, 1
    assert torch.equal(down[0, 0, 2:], x[0, 0, :6])
    assert torch.equal(down[0, 0, 0], x[0, 0, 2]) and torch.equal(down[0, 0, 1], x[0, 0, 1])


def test_horizontal_translation_moves_columns():
    x = ramp(1, 1, 4, 8)
    left, right = Translation("horizontal", 2).variants(x)
    assert torch.equal(left[0, 0, :, :6], x[0, 0, :, 2:])
    assert torch.equal(right[0, 0, :, 2:], x[0, 0, :, :6])


def test_permutations_distinct_identity_first_seeded():
    p = jigsaw_permutations(9, 12, seed=3)
    assert p.shape == (12, 9)
    assert p[0].tolist() == list(range(9))
    assert len({tuple(r) for r in p.tolist()}) == 12
    assert all(sorted(r) == list(range(9)) for r in p.tolist())
    assert torch.equal(p, jigsaw_permutations(9, 12, seed=3))
    assert not torch.equal(p, jigsaw_permutations(9, 12, seed=4))
    small = jigsaw_permutations(4, 23, seed=0)  # all but one of 4! = 24
    assert len({tuple(r) for r in small.tolist()}) == 23
    with pytest.raises(ValueError, match=r"k must satisfy"):
        jigsaw_permutations(4, 24, seed=0)


def test_jigsaw_places_patches_for_known_permutation_and_offset():
    # 2x2 grid on 8x8, margin 2: cells 4x4, patches 2x2, eval offset 1 inside source and target cell.
    x = ramp(1, 1, 8, 8)
    perms = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    jig = Jigsaw((2, 2), perms, margin=2, side=(8, 8))
    out = jig.variants(x, train=False)[0, 0, 0]  # (8, 8)
    img = x[0, 0]
    # target cell 0 (top-left) gets source cell 3 (bottom-right): source patch rows 5:7, cols 5:7
    assert torch.equal(out[1:3, 1:3], img[5:7, 5:7])
    # target cell 1 (top-right) gets source cell 2 (bottom-left)
    assert torch.equal(out[1:3, 5:7], img[5:7, 1:3])
    assert torch.equal(out[5:7, 1:3], img[1:3, 5:7])
    # gaps are the image mean
    assert torch.allclose(out[0, 0], img.mean()) and torch.allclose(out[4, 4], img.mean())


def test_jigsaw_identity_eval_keeps_centre_pixels_and_training_offsets_vary():
    x = torch.rand(4, 3, 12, 12)
    perms = jigsaw_permutations(9, 3, 0)
    jig = Jigsaw((3, 3), perms, margin=2, side=(12, 12))
    v = jig.all_variants(x, train=False)
    assert v.shape == (3, 4, 3, 12, 12)
    g = torch.Generator().manual_seed(0)
    a = jig.variants(x, train=True, generator=g)
    b = jig.variants(x, train=True, generator=g)
    assert not torch.equal(a, b)  # random offsets in training
    assert torch.equal(jig.variants(x, train=False), jig.variants(x, train=False))  # fixed in eval
    # every placed pixel comes from the same image: values stay in that image's range
    assert (v[1:].amax(dim=(2, 3, 4)) <= x.amax(dim=(1, 2, 3))).all()


def test_multitask_plan_layout_and_labels():
    tasks = build_tasks(("vertical", "horizontal", "rotation", "jigsaw"), (32, 32), k=3)
    plan = multitask_plan(tasks)
    assert plan.num_variants == 11  # raw image once + 2 + 2 + 3, then the jigsaw's 3 puzzles (identity puzzle incl.)
    assert plan.head_names == ("vertical", "horizontal", "rotation", "jigsaw")
    assert plan.labels[0].tolist() == [0, 0, 0, -1]  # the raw image is no jigsaw class
    assert plan.labels[1].tolist() == [1, -1, -1, -1] and plan.labels[2].tolist() == [2, -1, -1, -1]
    assert plan.labels[5:8, 2].tolist() == [1, 2, 3]
    assert plan.labels[8:, 3].tolist() == [0, 1, 2]
    assert int((plan.labels >= 0).sum()) == 13  # 3 + 3 + 4 + 3 labelled outputs
    x = torch.rand(5, 1, 32, 32)
    xv = plan.make(x, train=False)
    assert xv.shape == (55, 1, 32, 32)
    assert torch.equal(xv[:5], x)  # variant-major: rows 0..4 are the raw image
    assert torch.equal(xv[5 * 5:5 * 6], torch.rot90(x, 1, dims=(2, 3)))
    assert torch.equal(xv[5 * 8:5 * 9], tasks[3].all_variants(x, train=False)[0])  # identity puzzle
    jig_only = multitask_plan(build_tasks(("jigsaw",), (32, 32), k=3))
    assert jig_only.num_variants == 3 and jig_only.labels[:, 0].tolist() == [0, 1, 2]  # no raw image at all


def test_jigsaw_identity_class_is_a_puzzle_with_margins():
    """Class 0 of the jigsaw head must carry the same margin grid as the shuffled classes (METHOD.md)."""
    x = torch.rand(2, 1, 12, 12) + 1.0  # no pixel equals the mean by chance
    jig = Jigsaw((3, 3), jigsaw_permutations(9, 3, 0), margin=2, side=(12, 12))
    v = jig.all_variants(x, train=False)  # (3, 2, 1, 12, 12)
    ident = v[0]
    assert not torch.equal(ident, x)
    mean = x.mean(dim=(2, 3), keepdim=True)
    gap = torch.zeros(12, 12, dtype=torch.bool)  # cells 4x4, patches 2x2 at offset 1: rows/cols 0 and 3 of a cell
    for i in range(12):
        if i % 4 in (0, 3):
            gap[i, :] = True
            gap[:, i] = True
    for puzzle in v:  # identity and shuffles alike: the gaps hold the mean, the patches hold image pixels
        assert torch.allclose(puzzle[..., gap], mean.expand_as(puzzle)[..., gap])
        assert not torch.isclose(puzzle[..., ~gap], mean.expand_as(puzzle)[..., ~gap]).any()
    assert torch.equal(ident[..., ~gap], x[..., ~gap])  # identity: every patch in its own place
    assert torch.equal(jig.variants(x, train=False), v[1:])
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = jig.all_variants(x, train=True, generator=g1)  # one set of offsets shared by the k puzzles
    assert torch.equal(a[0].flatten(2).sort(2).values, a[1].flatten(2).sort(2).values)
    assert torch.equal(a, jig.all_variants(x, train=True, generator=g2))


def test_composed_plan_mhrot_36_distinct_and_labelled():
    tasks = build_tasks(("vertical", "horizontal", "rotation"), (16, 16))
    plan = composed_plan(tasks)
    assert plan.num_variants == 36
    assert len({tuple(r) for r in plan.labels.tolist()}) == 36
    x = torch.rand(2, 1, 16, 16)
    xv = plan.make(x, train=False).view(36, 2, 1, 16, 16)
    # label (1, 2, 3): shift up, then right, then rotate 270
    i = plan.labels.tolist().index([1, 2, 3])
    up = tasks[0].variants(x)[0]
    ur = tasks[1].variants(up)[1]
    assert torch.equal(xv[i], torch.rot90(ur, 3, dims=(2, 3)))
    assert len({xv[j, 0].numpy().tobytes() for j in range(36)}) == 36


def test_bad_configs_and_sizes_raise_clear_errors():
    with pytest.raises(ValueError, match="too small for a 3x3 jigsaw grid"):
        check_image_fits((8, 8), (3, 3), 2)
    with pytest.raises(ValueError, match=r"k must satisfy 2 <= k < \(2\*2\)! = 24"):
        DetectorConfig(grid=(2, 2), k=24)
    with pytest.raises(ValueError, match="at least 2 cells"):
        DetectorConfig(grid=(0, 3))
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        DetectorConfig(epochs=0)
    with pytest.raises(ValueError, match="min_steps must be an integer >= 0"):
        DetectorConfig(min_steps=-1)
    with pytest.raises(ValueError, match="rotation task needs square"):
        build_tasks(("rotation",), (32, 16))
    with pytest.raises(ValueError, match="unknown task"):
        DetectorConfig(tasks=("colour",))
    assert DetectorConfig(tasks=("geometric",)).tasks == ("vertical", "horizontal", "rotation")
    assert DetectorConfig(grid=(4, 2), k=5).grid == (4, 2)  # non-square grid that fits
    with pytest.raises(ValueError, match="too small"):
        build_tasks(("jigsaw",), (32, 8), grid=(4, 4), margin=2)
    assert math.factorial(9) > 3


@pytest.mark.parametrize("grid, k", [((2, 2), 24), ((2, 2), 1), ((3, 1), 6), ((40, 40), 0)])
def test_the_k_fits_grid_rule_is_one_rule_with_one_message_everywhere(grid, k):
    from mtssad.distributed.sweep_space import sweep_trials

    message = jigsaw_k_problem(grid, k)
    assert message == f"k must satisfy 2 <= k < ({grid[0]}*{grid[1]})! = " + (
        str(math.factorial(grid[0] * grid[1])) if grid != (40, 40) else "more than 10^18") + f" for a {grid[0]}x" \
        f"{grid[1]} grid; got k={k}"
    with pytest.raises(ValueError) as config_error:
        DetectorConfig(grid=grid, k=k)
    with pytest.raises(ValueError) as transform_error:
        build_tasks(("jigsaw",), (400, 400), grid=grid, k=k, margin=1)
    _, skipped = sweep_trials([0], ["ours"], [f"{grid[0]}x{grid[1]}"], [k], image_side=(400, 400), margin=1)
    assert str(config_error.value) == str(transform_error.value) == skipped[0][3] == message
    assert jigsaw_k_problem(grid, 2) is None and jigsaw_k_problem((3, 3), 362879) is None


def test_loss_is_eq7_sum_for_ours_and_composition_mean_for_composed_plans():
    from mtssad.train import plan_loss

    ours = multitask_plan(build_tasks(("vertical", "horizontal", "rotation", "jigsaw"), (16, 16), grid=(2, 2),
                                      margin=1))
    mh = composed_plan(build_tasks(("vertical", "horizontal", "rotation"), (16, 16)))
    n = 5
    for plan, expected in ((ours, 3 * math.log(3) + 3 * math.log(3) + 4 * math.log(4) + 3 * math.log(3)),
                           (mh, math.log(3) + math.log(3) + math.log(4))):
        uniform = {h.name: torch.zeros(plan.num_variants * n, h.num_classes) for h in plan.heads}  # CE = ln(m) per term
        loss, _, counted = plan_loss(uniform, plan, n)
        assert math.isclose(float(loss), expected, rel_tol=1e-6)
    assert counted == {"vertical": 36 * n, "horizontal": 36 * n, "rotation": 36 * n}
