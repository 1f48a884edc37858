"""MHRot (Hendrycks et al. 2019): vertical, horizontal and rotation heads trained on compositions.

Every image is seen through all 3 x 3 x 4 = 36 compositions (shift vertically, then
horizontally, then rotate); each of the three heads predicts its own factor. The
score is eq. 4 of the paper:

    s(x) = sum over the 36 compositions T of sum over heads h of softmax(f_h(T(x)))[label_h(T])

i.e. the sum of the three per-head sums that `score_tasks` returns (not their mean, as
for ours: with `score_norm="none"` `score_samples` is exactly eq. 4; the other
`score_norm` options keep the base class's normalized mean).
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import GEOMETRIC_TASKS, expand_tasks
from ..detector import MultiTaskDetector, init_signature, register_detector
from ..scoring import head_scores
from ..transforms import Plan, build_tasks, composed_plan
from . import register_method


def fixed_geometric_params(params: dict, method: str) -> dict:
    """Detector params with tasks pinned to the geometric heads (a composed-transform baseline's only setting)."""
    params = dict(params)
    tasks = params.pop("tasks", GEOMETRIC_TASKS)
    if expand_tasks(tasks) != GEOMETRIC_TASKS:
        raise ValueError(f"{method} always uses the vertical, horizontal and rotation transforms; got tasks={tasks!r}")
    return {**params, "tasks": GEOMETRIC_TASKS}


def eq4_scores(probs: dict[str, torch.Tensor], plan: Plan) -> torch.Tensor:
    """Eq. 4 from softmax outputs: head -> (V, N, m) -> (N,) sum over compositions and heads."""
    return torch.stack(list(head_scores(probs, plan).values())).sum(0)


@register_detector
class MHRotDetector(MultiTaskDetector):
    """MHRot on the shared Wide-ResNet; the parameters are MultiTaskDetector's, with tasks fixed to the geometric
    heads."""

    def __init__(self, **params):
        params.setdefault("tasks", GEOMETRIC_TASKS)
        super().__init__(**params)

    __init__.__signature__ = init_signature(MultiTaskDetector, tasks=GEOMETRIC_TASKS)

    def _config_params(self) -> dict:
        return fixed_geometric_params(super()._config_params(), "MHRot")

    def _make_plan(self, side: tuple[int, int], permutations: torch.Tensor | None = None) -> Plan:
        return composed_plan(build_tasks(GEOMETRIC_TASKS, side, shift=self.config_.shift))  # 36 variants, 3 heads

    def _combine(self, per_head: dict[str, np.ndarray]) -> np.ndarray:
        if self.config_.score_norm != "none":
            return super()._combine(per_head)
        return np.sum([per_head[h].astype(np.float64) for h in self._scored_heads(per_head)], axis=0)  # eq. 4


@register_method("mhrot", neural=True, description="MHRot: 36 composed v x h x rot transforms, three heads, eq. 4")
def _factory(**params):
    params.pop("tasks", None)  # the method fixes its heads, as the ablation methods do
    return MHRotDetector(**params)
