"""GeoTrans (Golan & El-Yaniv 2018): one 72-way head over flip x vertical x horizontal x rotation.

Transform i (i = 0..71, flip applied first, rotation last) is the class the head must
predict. Two scores (`geotrans_score`):

- "dirichlet" (the paper's): after training, fit per transform i a Dirichlet(alpha_i)
  to the softmax vectors y(T_i(x)) of the training images by maximum likelihood, then

      score(x) = sum_i log Dir(y(T_i(x)); alpha_i)
               = sum_i (alpha_i - 1) . log y(T_i(x)) + sum_i log B(alpha_i)^-1

  The first term is Golan's eq. 3; the log-normalizer is a constant (the same for
  every image), added so the score is a true log-likelihood; it changes no ranking.
- "softmax": sum_i softmax(f(T_i(x)))[i], the simple score.

The fit is Minka's maximum likelihood from a moment-matching start, by Newton's method
(Minka's fixed point, Golan's choice, is an option of `fit_dirichlet`; it reaches the same
maximum but took thousands of iterations, > 10 s, on (72, 72) fits). Numerical safeguards:
probabilities clipped to [PROB_EPS, 1] and renormalized (float32 softmax outputs can be
exactly 0), capped iterations, alpha floored at ALPHA_FLOOR.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import digamma, gammaln, polygamma

from ..config import GEOMETRIC_TASKS
from ..detector import DetectorFileError, MultiTaskDetector, init_signature, register_detector
from ..scoring import score_images
from ..transforms import Plan, build_tasks, composed_plan
from . import register_method
from .mhrot import fixed_geometric_params

HEAD = "geotrans"
GEOTRANS_TASKS = ("flip", "vertical", "horizontal", "rotation")  # 2 x 3 x 3 x 4 = 72
GEOTRANS_SCORES = ("dirichlet", "softmax")
PROB_EPS = 1e-6  # softmax outputs are clipped to [PROB_EPS, 1] (then renormalized) before the log
ALPHA_FLOOR = 1e-3  # the fixed point can drive an unused class's alpha to 0; keep it positive


def inv_digamma(y: np.ndarray, newton_steps: int = 5) -> np.ndarray:
    """x with digamma(x) = y (Minka 2000, appendix C): asymptotic start, then Newton."""
    with np.errstate(divide="ignore"):  # np.where evaluates both branches
        x = np.where(y >= -2.22, np.exp(np.minimum(y, 50.0)) + 0.5, -1.0 / (y + np.euler_gamma))
    for _ in range(newton_steps):
        x = x - (digamma(x) - y) / polygamma(1, x)
    return x


def dirichlet_stats(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Samples (n, ..., K) on the simplex -> (mean log p, mean p, mean p^2), each (..., K); the MLE's inputs."""
    p = clip_simplex(np.asarray(p, dtype=np.float64))
    return np.log(p).mean(0), p.mean(0), (p * p).mean(0)


def clip_simplex(p):
    """Clip to [PROB_EPS, 1] along the last axis and renormalize (numpy or torch)."""
    p = p.clip(PROB_EPS, 1.0)
    return p / p.sum(-1, keepdims=True) if isinstance(p, np.ndarray) else p / p.sum(-1, keepdim=True)


def fit_dirichlet(mean_log: np.ndarray, mean: np.ndarray, mean_sq: np.ndarray, *, method: str = "newton",
                  max_iter: int | None = None, tol: float = 1e-8) -> np.ndarray:
    """Maximum-likelihood Dirichlet parameters (..., K) from sufficient statistics (Minka 2000).

    Start: moment matching, alpha = s * E[p] with the precision s = (E[p_k] - E[p_k^2]) / Var[p_k]
    (median over k). Then either Minka's fixed point (`method="fixed-point"`, Golan's choice,
    alpha_k <- inv_digamma(digamma(sum alpha) + E[log p_k]); linear convergence, thousands of
    iterations when the precision is large) or Newton's method on the same concave likelihood
    (default, Minka's eq. 10-18: the Hessian is diagonal plus rank one, so a step is O(K);
    the step is halved until alpha stays above ALPHA_FLOOR). Both stop when the largest
    relative change is below `tol` or after `max_iter` steps (default 100 Newton / 5000 fixed-point).
    Independent fits are vectorized over the leading axes.
    """
    if method not in ("newton", "fixed-point"):
        raise ValueError(f"method must be 'newton' or 'fixed-point'; got {method!r}")
    var = mean_sq - mean**2
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(var > 0, (mean - mean_sq) / var, np.nan)
    s = np.nan_to_num(np.nanmedian(np.where(s > 0, s, np.nan), axis=-1, keepdims=True), nan=1.0)
    alpha = np.maximum(s * mean, ALPHA_FLOOR)
    step = _newton_step if method == "newton" else _fixed_point_step
    for _ in range(max_iter or (100 if method == "newton" else 5000)):
        new = step(alpha, mean_log)
        done = np.max(np.abs(new - alpha) / alpha) < tol
        alpha = new
        if done:
            break
    return alpha


def _fixed_point_step(alpha: np.ndarray, mean_log: np.ndarray) -> np.ndarray:
    return np.maximum(inv_digamma(digamma(alpha.sum(-1, keepdims=True)) + mean_log), ALPHA_FLOOR)


def _newton_step(alpha: np.ndarray, mean_log: np.ndarray) -> np.ndarray:
    total = alpha.sum(-1, keepdims=True)
    g = digamma(total) - digamma(alpha) + mean_log  # gradient of the mean log-likelihood
    q = -polygamma(1, alpha)  # Hessian = diag(q) + z 1 1^T
    z = polygamma(1, total)
    b = (g / q).sum(-1, keepdims=True) / (1.0 / z + (1.0 / q).sum(-1, keepdims=True))
    delta = (g - b) / q  # Newton step: alpha - delta
    t = np.ones_like(total)
    for _ in range(40):  # halve the step of any fit that would leave the floor
        bad = (alpha - t * delta < ALPHA_FLOOR).any(-1, keepdims=True)
        if not bad.any():
            break
        t = np.where(bad, t / 2, t)
    return np.maximum(alpha - t * delta, ALPHA_FLOOR)


def dirichlet_log_norm(alpha: np.ndarray) -> np.ndarray:
    """log Gamma(sum alpha) - sum log Gamma(alpha_k), per leading index."""
    return gammaln(alpha.sum(-1)) - gammaln(alpha).sum(-1)


def _stats_reducer(probs: dict[str, torch.Tensor], plan: Plan) -> dict[str, torch.Tensor]:
    """Per-batch sums of log p, p, p^2 for every transform: each (1, V, K)."""
    p = clip_simplex(probs[HEAD].double())  # (V, N, K)
    return {"log": p.log().sum(1)[None], "p": p.sum(1)[None], "p2": (p * p).sum(1)[None]}


def dirichlet_reducer(alpha: torch.Tensor):
    """Reducer: (V, N, K) softmax outputs -> {HEAD: (N,) sum over transforms of the Dirichlet log-density}."""
    weight = alpha - 1.0  # (V, K)
    const = torch.as_tensor(dirichlet_log_norm(alpha.cpu().numpy()).sum())

    def reduce(probs, plan):
        logp = clip_simplex(probs[HEAD].double()).log()  # (V, N, K)
        return {HEAD: torch.einsum("vnk,vk->n", logp, weight.to(logp)) + const.to(logp)}

    return reduce


@register_detector
class GeoTransDetector(MultiTaskDetector):
    """GeoTrans on the shared Wide-ResNet; MultiTaskDetector's parameters (tasks fixed) plus `geotrans_score`.

    config.tasks reads the geometric heads (DetectorConfig knows no "flip"); the plan adds the flip.
    Fitted attribute (dirichlet score): dirichlet_alpha_, (72, 72) float64, row i = alpha of transform i.
    """

    def __init__(self, *, geotrans_score: str = "dirichlet", **params):
        params.setdefault("tasks", GEOMETRIC_TASKS)
        super().__init__(**params)
        self.geotrans_score = geotrans_score

    __init__.__signature__ = init_signature(MultiTaskDetector, tasks=GEOMETRIC_TASKS, geotrans_score="dirichlet")

    def _config_params(self) -> dict:
        if self.geotrans_score not in GEOTRANS_SCORES:
            raise ValueError(f"geotrans_score must be one of {GEOTRANS_SCORES}; got {self.geotrans_score!r}")
        return fixed_geometric_params(super()._config_params(), "GeoTrans")

    def _make_plan(self, side: tuple[int, int], permutations: torch.Tensor | None = None) -> Plan:
        tasks = build_tasks(GEOTRANS_TASKS, side, shift=self.config_.shift)
        return composed_plan(tasks, joint_head=HEAD)  # 72 variants, one 72-way head

    def _fit_score_model(self, X: torch.Tensor) -> None:
        if self.geotrans_score != "dirichlet":
            return
        sums = score_images(self.model_, self.plan_, X, device=self.device_, batch_size=self.config_.score_batch_size,
                            amp=self.config_.amp, reduce=_stats_reducer)
        n = len(X)
        stats = [sums[k].sum(0) / n for k in ("log", "p", "p2")]  # each (V, K)
        self.dirichlet_alpha_ = torch.from_numpy(fit_dirichlet(*stats))

    def _head_scores(self, X: torch.Tensor) -> dict[str, np.ndarray]:
        if self.geotrans_score != "dirichlet":
            return super()._head_scores(X)
        return score_images(self.model_, self.plan_, X, device=self.device_, batch_size=self.config_.score_batch_size,
                            amp=self.config_.amp, reduce=dirichlet_reducer(self.dirichlet_alpha_))

    def _extra_tensors(self) -> dict[str, torch.Tensor]:
        out = {"geotrans_score": torch.tensor(list(self.geotrans_score.encode()), dtype=torch.uint8)}
        if self.geotrans_score == "dirichlet":
            out["dirichlet_alpha"] = self.dirichlet_alpha_
        return out

    def _load_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if "geotrans_score" not in tensors:
            raise DetectorFileError("a GeoTransDetector file without its geotrans_score; was it written by mtssad?")
        self.geotrans_score = bytes(tensors["geotrans_score"].cpu().tolist()).decode()
        if self.geotrans_score == "dirichlet":
            if "dirichlet_alpha" not in tensors:
                raise DetectorFileError("a GeoTransDetector file (dirichlet score) without its fitted alphas")
            self.dirichlet_alpha_ = tensors["dirichlet_alpha"].cpu().double()


@register_method("geotrans", neural=True,
                 description="GeoTrans: 72 flip x v x h x rot transforms, one head, Dirichlet score")
def _factory(*, geotrans_score: str = "dirichlet", **params):
    params.pop("tasks", None)  # the method fixes its transforms
    return GeoTransDetector(geotrans_score=geotrans_score, **params)
