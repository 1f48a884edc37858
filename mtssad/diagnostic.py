"""Task-suitability diagnostic (paper section 2.1): is a pretext head useful for this normal class?

A head is *too hard* when its accuracy on held-out normal images is near chance (it
learned nothing that transfers beyond the training images), and *too easy* when it
is near 100% on both held-out normals and anomalies (it cannot tell them apart).
The same rule feeds the report's table and `head_selection="diagnostic"`.

`head_selection="validation"` decides from detection instead: among a few head subsets
(`validation_candidates`: all heads, and the geometric heads alone), the one whose eq. 6 score
has the best AUROC on labelled validation data (`choose_on_validation`, ties to the first).
The diagnostic reads task accuracy, which need not track detection: on glyphs the jigsaw head
was "too easy" on 29 of 30 runs and dropping it by the diagnostic did not help (74.6 vs 74.8),
while the validation AUROC ranked ours and geometric-only as test did on three font classes.
"""

from __future__ import annotations

TOO_HARD_MARGIN = 0.05  # "near chance": normal accuracy <= 1/classes + this
TOO_EASY_ACCURACY = 0.98  # "near 100%": both normal and anomaly accuracy >= this
UNSUITED = ("too hard", "too easy")
# validation AUROCs closer than this are equal (first candidate wins): one rank statistic summed in another
# order differs in the last bit
AUROC_TIE = 1e-9


def head_verdict(normal: float | None, anomaly: float | None, num_classes: int | None) -> str:
    """'too hard', 'too easy', 'suited' or 'unknown (...)' from held-out accuracies of one head."""
    chance = 1 / num_classes if num_classes else None
    if normal is None:
        return "unknown (no held-out accuracy)"
    if chance is not None and normal <= chance + TOO_HARD_MARGIN:
        return "too hard"
    if anomaly is None:
        return "unknown (no anomalous held-out data)"
    if normal >= TOO_EASY_ACCURACY and anomaly >= TOO_EASY_ACCURACY:
        return "too easy"
    return "suited"


def select_heads(verdicts: dict[str, str]) -> tuple[str, ...]:
    """Heads not found unsuited, in order; all heads when every one is unsuited (a score needs one)."""
    kept = tuple(h for h, v in verdicts.items() if v not in UNSUITED)
    return kept or tuple(verdicts)


def validation_candidates(heads) -> list[tuple[str, tuple[str, ...]]]:
    """The head subsets `head_selection="validation"` compares, in order of preference (first wins ties).

    ("all", heads), then ("geometric", heads without jigsaw) when `heads` has the jigsaw head and
    another; a set without the jigsaw head (or the jigsaw head alone) has nothing to choose.
    """
    heads = tuple(heads)
    out = [("all", heads)]
    rest = tuple(h for h in heads if h != "jigsaw")
    if "jigsaw" in heads and rest:
        out.append(("geometric", rest))
    return out


def choose_on_validation(aurocs: dict[str, float]) -> str:
    """The candidate name with the best validation AUROC: better by more than AUROC_TIE, first wins ties, NaN never.

    Raises ValueError when every AUROC is NaN (nothing to choose on).
    """
    best = None
    for name, a in aurocs.items():
        if a == a and (best is None or a > aurocs[best] + AUROC_TIE):
            best = name
    if best is None:
        raise ValueError(f"no candidate head set has a validation AUROC: {aurocs}")
    return best
