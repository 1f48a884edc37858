"""Pretext transforms, batched on (N, C, H, W) tensors on any device.

A `Task` makes the variants of a batch for one head. A `Plan` lays out every
distinct input the network sees for one original image and the label each head
must predict for it (-1 = that head does not score that input):

    ours (defaults): variant 0 = the raw image (label 0 for v, h and rot), then
    v -t, v +t, h -t, h +t, rot 90/180/270, then the jigsaw puzzles of perm 0..k-1
    (perm 0 = the identity puzzle: patches cut with margins, placed in their own
    order)  -> 8 + k = 11 variants, 13 labels.

The geometric heads share the raw image as their identity input; the jigsaw head
does not: a raw-image class would be told apart from the puzzles by the margin
grid alone ("grid or no grid"), on normal and anomalous images alike.

Composed plans (MHRot's 36, GeoTrans's 72) apply tasks one after another.
Nothing here loops over images: translations slice one padded tensor,
rotations use `torch.rot90`, jigsaw is one gather + one scatter.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .config import DetectorConfig, factorial_exceeds, jigsaw_k_problem


class Task:
    """One self-supervised head: `num_classes` transforms, class 0 = identity."""

    name: str
    num_classes: int
    # True when class 0 is the raw image (shared by every such head in a plan, computed once);
    # False when the task's identity class is itself a transformed input (the jigsaw's identity puzzle).
    raw_identity: bool = True

    def variants(self, x: torch.Tensor, *, train: bool, generator: torch.Generator | None) -> torch.Tensor:
        """(N, C, H, W) -> (num_classes - 1, N, C, H, W): the non-identity transforms in class order."""
        raise TypeError(f"{type(self).__name__} must define variants()")

    def all_variants(self, x: torch.Tensor, *, train: bool, generator=None) -> torch.Tensor:
        """(N, C, H, W) -> (num_classes, N, C, H, W), identity first."""
        return torch.cat([x.unsqueeze(0), self.variants(x, train=train, generator=generator)], dim=0)


class Translation(Task):
    """Shift by 0, -t, +t pixels along one axis; the uncovered border is reflect-padded (MHRot)."""

    num_classes = 3

    def __init__(self, axis: str, t: int):
        self.name = "vertical" if axis == "vertical" else "horizontal"
        self.t = t
        self._dim = 2 if axis == "vertical" else 3

    def variants(self, x, *, train=False, generator=None):
        t, n = self.t, x.shape[self._dim]
        pad = (0, 0, t, t) if self._dim == 2 else (t, t, 0, 0)
        padded = F.pad(x, pad, mode="reflect")  # (N, C, H+2t, W) or (N, C, H, W+2t)
        # out[i] = x[i - s]: a shift of s (+ = down/right) reads the padded window starting at t - s.
        up = padded.narrow(self._dim, 2 * t, n)  # s = -t: content moves up/left
        down = padded.narrow(self._dim, 0, n)  # s = +t: content moves down/right
        return torch.stack([up, down], dim=0)  # (2, N, C, H, W)


class Rotation(Task):
    """Counter-clockwise turns of 0, 90, 180, 270 degrees (square images only)."""

    name = "rotation"
    num_classes = 4

    def variants(self, x, *, train=False, generator=None):
        return torch.stack([torch.rot90(x, r, dims=(2, 3)) for r in (1, 2, 3)], dim=0)  # (3, N, C, H, W)


class Flip(Task):
    """Horizontal mirror (GeoTrans's first factor)."""

    name = "flip"
    num_classes = 2

    def variants(self, x, *, train=False, generator=None):
        return torch.flip(x, dims=(3,)).unsqueeze(0)  # (1, N, C, H, W)


def jigsaw_permutations(n_cells: int, k: int, seed: int, *, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """k distinct permutations of range(n_cells), identity at index 0, drawn once from `seed`.

    grid: the (n_h, n_w) of the n_cells cells, named in the error when k does not fit (default (n_cells, 1)).
    """
    problem = jigsaw_k_problem(grid or (n_cells, 1), k)
    if problem:
        raise ValueError(problem)
    rng = np.random.default_rng(seed)
    perms = [tuple(range(n_cells))]
    seen = set(perms)
    if not factorial_exceeds(n_cells, 5040):  # small space: sample without replacement from the whole list
        rest = [p for p in itertools.permutations(range(n_cells)) if p not in seen]
        for i in rng.permutation(len(rest))[: k - 1]:
            perms.append(rest[i])
    else:
        while len(perms) < k:
            p = tuple(int(v) for v in rng.permutation(n_cells))
            if p not in seen:
                seen.add(p)
                perms.append(p)
    return torch.tensor(perms, dtype=torch.long)  # (k, n_cells)


class Jigsaw(Task):
    """Cut an n_h x n_w grid, take a (cell - margin) patch from each cell, place patches permuted.

    Target cell p receives the patch of source cell perm[p]. Source patches sit at a
    random offset in [0, margin] per image and cell when training, at margin // 2 when
    evaluating; they are placed at margin // 2 inside their target cell. Pixels not
    covered by a patch take the image's per-channel mean. Every class is a puzzle, the
    identity (class 0) included: same margins, same offsets, patches in their own order.
    """

    name = "jigsaw"
    raw_identity = False

    def __init__(self, grid: tuple[int, int], permutations: torch.Tensor, margin: int, side: tuple[int, int]):
        self.grid, self.margin = grid, margin
        self.permutations = permutations  # (k, P) long
        self.num_classes = permutations.shape[0]
        n_h, n_w = grid
        H, W = side
        self.cell = (H // n_h, W // n_w)
        self.patch = (self.cell[0] - margin, self.cell[1] - margin)
        ch, cw = self.cell
        ph, pw = self.patch
        cy = torch.arange(n_h).repeat_interleave(n_w) * ch  # (P,) top row of each cell
        cx = torch.arange(n_w).repeat(n_h) * cw  # (P,) left column of each cell
        u = torch.arange(ph).view(1, ph, 1)
        v = torch.arange(pw).view(1, 1, pw)
        m0 = margin // 2
        # Flat canvas index of every pixel of the patch placed in target cell p: (P, ph, pw).
        self._target = ((cy.view(-1, 1, 1) + m0 + u) * W + cx.view(-1, 1, 1) + m0 + v).flatten(1)
        # Flat index of the patch pixel relative to its source cell's corner, offset (0, 0): (P, ph*pw).
        self._cell_origin = cy * W + cx  # (P,)
        self._within = (u * W + v).flatten(1)  # (1, ph*pw)
        self._W = W

    def _constants(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        """(permutations, cell origins, within-patch offsets, target indices) on `device`, copied there once."""
        cache = self.__dict__.setdefault("_on_device", {})
        key = str(device)
        if key not in cache:
            cache[key] = tuple(t.to(device) for t in (self.permutations, self._cell_origin, self._within, self._target))
        return cache[key]

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_on_device"}  # device caches are not pickled

    def variants(self, x, *, train=False, generator=None):
        """(N, C, H, W) -> (k - 1, N, C, H, W): the non-identity puzzles."""
        return self.all_variants(x, train=train, generator=generator)[1:]

    def all_variants(self, x, *, train=False, generator=None):
        """(N, C, H, W) -> (k, N, C, H, W): the puzzles of every permutation, identity puzzle first.

        One set of random patch offsets per image serves all k puzzles, so the classes differ
        only in the patch order.
        """
        N, C, H, W = x.shape
        P = self.permutations.shape[1]
        dev = x.device
        perms, cell_origin, within, target = self._constants(dev)
        if train and self.margin > 0:
            gen_dev = generator.device if generator is not None else torch.device("cpu")
            off = torch.randint(0, self.margin + 1, (2, N, P), generator=generator, device=gen_dev).to(dev)
        else:
            off = torch.full((2, N, P), self.margin // 2, device=dev)
        # Source start of each cell's patch per image: (N, P).
        src_start = cell_origin + off[0] * W + off[1]
        # Source flat indices of patch pixels, per image and source cell: (N, P, L).
        src = src_start.unsqueeze(-1) + within
        # For each permutation, target cell p reads source cell perm[p]: (k, N, P, L).
        src = src[:, perms].permute(1, 0, 2, 3)
        K, L = perms.shape[0], src.shape[-1]
        flat = x.flatten(2)  # (N, C, H*W)
        src_idx = src.reshape(K, N, 1, P * L).expand(K, N, C, P * L)
        vals = torch.gather(flat.unsqueeze(0).expand(K, N, C, H * W), 3, src_idx)  # (k, N, C, P*L)
        mean = flat.mean(dim=2, keepdim=True)  # (N, C, 1)
        canvas = mean.unsqueeze(0).expand(K, N, C, H * W).clone()  # (k, N, C, H*W)
        tgt_idx = target.reshape(1, 1, 1, P * L).expand(K, N, C, P * L)
        canvas.scatter_(3, tgt_idx, vals)
        return canvas.view(K, N, C, H, W)


@dataclass
class Head:
    name: str
    num_classes: int


class Plan:
    """All inputs made from one image, and the labels every head must predict for them.

    `labels` is (V, n_heads) long, -1 where a head does not score variant v.
    `make(x)` returns (V * N, C, H, W), variant-major: rows v*N .. v*N+N-1 are variant v.
    `loss_weight` scales each image's summed cross-entropies: 1 for eq. 7 (a sum over the
    13 single transforms), 1/V for composed plans, whose reference implementations
    (MHRot, GeoTrans) average over the 36 / 72 compositions; summing 108 terms at
    lr 0.1 diverged on digits (training accuracy stayed at chance).
    """

    def __init__(self, tasks: list[Task], heads: list[Head], labels: torch.Tensor, maker, loss_weight: float = 1.0):
        self.loss_weight = loss_weight
        self.tasks = tasks
        self.heads = heads
        self.labels = labels
        self._maker = maker

    @property
    def num_variants(self) -> int:
        return self.labels.shape[0]

    def head_targets(self, i: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(variant indices, their labels) of head i's labelled variants, both (V_h,) long on `device`.

        Cached per device, so a training step copies nothing from CPU memory and indexes without a boolean mask.
        """
        key = (i, str(device))
        cache = self.__dict__.setdefault("_targets", {})
        if key not in cache:
            keep = (self.labels[:, i] >= 0).nonzero().squeeze(1)
            cache[key] = (keep.to(device), self.labels[keep, i].to(device))
        return cache[key]

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_targets"}  # device caches are not pickled

    @property
    def head_names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.heads)

    def make(self, x: torch.Tensor, *, train: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        v = self._maker(x, train=train, generator=generator)  # (V, N, C, H, W)
        return v.flatten(0, 1)  # (V*N, C, H, W)


class MultitaskMaker:
    """The paper's variants: [the raw image, once, if any task has a raw identity], then each
    raw-identity task's m - 1 other transforms, then each other task's m (the jigsaw's k puzzles).

    A class, not a closure, so that a Plan (and a fitted detector holding one) pickles.
    """

    def __init__(self, tasks: list[Task]):
        self.tasks = tasks
        self.shared = any(t.raw_identity for t in tasks)

    def __call__(self, x, *, train, generator):
        parts = [x.unsqueeze(0)] if self.shared else []
        for t in self.tasks:
            make = t.variants if t.raw_identity else t.all_variants
            parts.append(make(x, train=train, generator=generator))
        return torch.cat(parts, dim=0)  # (V, N, C, H, W)


def multitask_plan(tasks: list[Task]) -> Plan:
    """The paper's plan: each transform alone; the raw image, identity of every raw-identity head, once."""
    shared = any(t.raw_identity for t in tasks)
    rows = [[0 if t.raw_identity else -1 for t in tasks]] if shared else []
    for i, task in enumerate(tasks):
        for j in range(1 if task.raw_identity else 0, task.num_classes):
            rows.append([j if h == i else -1 for h in range(len(tasks))])
    heads = [Head(t.name, t.num_classes) for t in tasks]
    return Plan(tasks, heads, torch.tensor(rows, dtype=torch.long), MultitaskMaker(tasks))


class ComposedMaker:
    """Every composition of the tasks' transforms, first task applied first (a picklable class, not a closure)."""

    def __init__(self, tasks: list[Task]):
        self.tasks = tasks

    def __call__(self, x, *, train, generator):
        v = x.unsqueeze(0)  # (1, N, C, H, W)
        for t in self.tasks:
            n_prev = v.shape[0]
            v = t.all_variants(v.flatten(0, 1), train=train, generator=generator)  # (m, n_prev*N, C, H, W)
            v = v.view(t.num_classes, n_prev, *x.shape).transpose(0, 1).flatten(0, 1)  # (n_prev*m, N, C, H, W)
        return v


def composed_plan(tasks: list[Task], joint_head: str | None = None) -> Plan:
    """Every composition of the tasks' transforms (first task applied first).

    One head per task (MHRot), or, with `joint_head`, a single head whose class is the
    composition's index (GeoTrans).
    """
    combos = list(itertools.product(*[range(t.num_classes) for t in tasks]))
    if joint_head:
        heads = [Head(joint_head, len(combos))]
        labels = torch.arange(len(combos)).view(-1, 1)
    else:
        heads = [Head(t.name, t.num_classes) for t in tasks]
        labels = torch.tensor(combos, dtype=torch.long)
    return Plan(tasks, heads, labels, ComposedMaker(tasks), loss_weight=1.0 / len(combos))


def check_image_fits(side: tuple[int, int], grid: tuple[int, int], margin: int) -> None:
    """The jigsaw needs every patch to be at least 1 px after the margin."""
    H, W = side
    n_h, n_w = grid
    if H // n_h - margin < 1 or W // n_w - margin < 1:
        raise ValueError(
            f"images of {H}x{W} px are too small for a {n_h}x{n_w} jigsaw grid with margin {margin}: "
            f"expected H >= {n_h * (margin + 1)} and W >= {n_w * (margin + 1)}"
        )


_DEFAULT = DetectorConfig  # the class's attributes are the fields' defaults: the one place they are set


def build_tasks(names, side: tuple[int, int], *, grid=_DEFAULT.grid, k=_DEFAULT.k, margin=_DEFAULT.margin,
                shift=_DEFAULT.shift, seed=_DEFAULT.seed, permutations: torch.Tensor | None = None) -> list[Task]:
    """Tasks by head name, sized for images of `side` = (H, W); `permutations` reuses saved jigsaw ones.

    Defaults: DetectorConfig's. The detector passes its validated config's values.
    """
    H, W = side
    out: list[Task] = []
    for name in names:
        if name == "vertical":
            out.append(Translation("vertical", _shift_px(H, shift)))
        elif name == "horizontal":
            out.append(Translation("horizontal", _shift_px(W, shift)))
        elif name == "rotation":
            if H != W:
                raise ValueError(f"the rotation task needs square images; got {H}x{W}")
            out.append(Rotation())
        elif name == "flip":
            out.append(Flip())
        elif name == "jigsaw":
            check_image_fits(side, grid, margin)
            perms = permutations
            if perms is None:
                perms = jigsaw_permutations(grid[0] * grid[1], k, seed, grid=tuple(grid))
            out.append(Jigsaw(tuple(grid), perms, margin, side))
        else:
            raise ValueError(f"unknown task {name!r}")
    return out


def _shift_px(n: int, shift: float) -> int:
    t = int(round(n * shift))
    if not 1 <= t < n:
        raise ValueError(f"a translation of {shift} x {n} px rounds to {t} px; expected 1 <= t < {n}")
    return t
