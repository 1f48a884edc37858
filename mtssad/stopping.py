"""Early stopping of a fit on held-out data, with the best weights kept (`DetectorConfig.early_stopping`).

    stopper = EarlyStopping(measure, monitor="val_auroc", every=25, patience=4)
    fit_epochs(..., stopper=stopper)       # run_epochs asks `due`, then `update`; restores the best weights

`measure()` returns a dict of held-out metrics (`held_out_metrics`); `monitor` names the one that
decides (val_auroc: higher is better; val_loss: lower is better). Measuring never touches the
training's random streams or its BatchNorm running averages (they are saved and put back), so a
fit that is stopped early is the same fit as a longer one cut at the kept step: the budget study
(benchmarks/budget.py) replays every rule from one trajectory because of that.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from .transforms import Plan

LOWER_IS_BETTER = {"val_loss"}
TIE = 1e-9  # improvements smaller than this are ties (the earlier step is kept)
BN_IMAGES = 512  # training images a measurement recomputes BatchNorm statistics over (all of them at the end)


class EarlyStopping:
    """Measure every `every` optimizer steps; stop after `patience` measurements without improvement.

    patience=None never stops (the budget study records whole trajectories this way). The weights
    (and buffers) of the best measurement are kept on the host's memory of the model's device and
    put back by `restore_best` when training ends.
    """

    def __init__(self, measure: Callable[[], dict], *, monitor: str, every: int, patience: int | None):
        self.measure, self.monitor, self.every, self.patience = measure, monitor, every, patience
        self.next_at = every
        self.trace: list[dict] = []  # {"steps": s, metric: value, ...} per measurement
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.last_step: int | None = None
        self._best_state: dict | None = None
        self._bad = 0

    def due(self, steps: int, *, last: bool = False) -> bool:
        """Whether the epoch that ended at `steps` optimizer steps measures (the last epoch always does)."""
        return steps >= self.next_at or last

    def _better(self, value: float) -> bool:
        if value != value:  # NaN never improves
            return False
        if self.best_value is None:
            return True
        if self.monitor in LOWER_IS_BETTER:
            return value < self.best_value - TIE
        return value > self.best_value + TIE

    def advance(self, steps: int) -> None:
        """Move the schedule past `steps`; every DDP rank calls it (rank 0 through `update`), so all stay in step."""
        self.last_step = steps
        self.next_at = (steps // self.every + 1) * self.every

    def update(self, steps: int, model: nn.Module, stats: dict | None = None) -> bool:
        """Measure now; keep the weights if best; return True when the fit should stop."""
        metrics = self.measure()
        self.trace.append({"steps": steps, **metrics})
        if stats is not None:
            stats.update({f"stop/{k}": v for k, v in metrics.items()})
        value = metrics[self.monitor]
        self.advance(steps)
        if self._better(value):
            self.best_value, self.best_step, self._bad = value, steps, 0
            self._best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self._bad += 1
        return self.patience is not None and self._bad >= self.patience

    def state_dict(self) -> dict:
        """What a resumed fit needs to go on deciding as an uninterrupted one would (a DDP checkpoint holds it)."""
        return {"next_at": self.next_at, "trace": self.trace, "best_value": self.best_value,
                "best_step": self.best_step, "last_step": self.last_step, "bad": self._bad,
                "best_state": self._best_state}

    def load_state_dict(self, state: dict) -> None:
        self.next_at, self.trace, self.best_value = state["next_at"], list(state["trace"]), state["best_value"]
        self.best_step, self.last_step, self._bad = state["best_step"], state["last_step"], state["bad"]
        self._best_state = state["best_state"]

    def restore_best(self, model: nn.Module) -> None:
        """Load the best measurement's weights unless the model already holds them (it ended on its best step)."""
        if self._best_state is not None and self.best_step != self.last_step:
            model.load_state_dict(self._best_state)
        self._best_state = None  # memory back; best_step stays for the record


def _batchnorms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def plan_loss_eval(model: nn.Module, plan: Plan, images: torch.Tensor, *, device: torch.device,
                   batch_size: int = 256) -> float:
    """Mean over `images` of eq. 7's summed cross-entropies (`train.plan_loss`), in eval mode with evaluation
    offsets."""
    from .train import plan_loss, to_model_input

    model.eval()
    total, n = 0.0, 0
    for start in range(0, len(images), batch_size):
        x = to_model_input(images[start:start + batch_size], device)  # (B, C, H, W)
        loss, _, _ = plan_loss(model(plan.make(x, train=False)), plan, len(x))  # the batch's mean
        total += float(loss) * len(x)
        n += len(x)
    return total / max(1, n)


def held_out_metrics(model: nn.Module, plan: Plan, *, device: torch.device, X_train: torch.Tensor,
                     normals: torch.Tensor | None = None, X_val: torch.Tensor | None = None,
                     y_val: np.ndarray | None = None, heads=None, batch_size: int = 256,
                     extra_sets: dict | None = None) -> Callable[[], dict]:
    """A `measure` for EarlyStopping: BatchNorm recomputed on (a fixed subset of) X_train, then

    val_loss   = the held-out normals' self-supervised loss (`normals`; needs no anomalies),
    val_auroc  = AUROC of the plain eq. 6 score (mean of per-head sums over `heads`) on labelled X_val,
    <name>_auroc for each extra_sets[name] = (X, y) (the budget study's selection and test sets).
    BatchNorm running averages and train/eval mode are put back afterwards.
    """
    from .metrics import auroc
    from .scoring import head_scores, score_images
    from .train import recalibrate_batchnorm

    bn_images = X_train[:BN_IMAGES] if len(X_train) > BN_IMAGES else X_train

    def auroc_of(X, y) -> float:
        per_head = score_images(model, plan, X, device=device, batch_size=batch_size, reduce=head_scores,
                                progress=False)
        use = [h for h in (heads or per_head) if h in per_head] or list(per_head)
        return float(auroc(np.asarray(y).astype(int), np.mean([per_head[h] for h in use], axis=0)))

    def measure() -> dict:
        was_training = model.training
        bns = _batchnorms(model)
        saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in bns
                 if m.running_mean is not None]
        recalibrate_batchnorm(model, plan, bn_images, batch_size=batch_size, device=device)
        out = {}
        try:
            if normals is not None and len(normals):
                out["val_loss"] = plan_loss_eval(model, plan, normals, device=device, batch_size=batch_size)
            if X_val is not None and y_val is not None and 0 < np.asarray(y_val).astype(bool).sum() < len(y_val):
                out["val_auroc"] = auroc_of(X_val, y_val)
            for name, (X, y) in (extra_sets or {}).items():
                out[f"{name}_auroc"] = auroc_of(X, y)
        finally:
            for m, (mean, var, n) in zip([m for m in bns if m.running_mean is not None], saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(n)
            model.train(was_training)
        return out

    return measure

