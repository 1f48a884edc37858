"""Task-suitability diagnostic (paper section 2.1): is a pretext head useful for this normal class?

A head is *too hard* when its accuracy on held-out normal images is near chance (it
learned nothing that transfers beyond the training images), and *too easy* when it
is near 100% on both held-out normals and anomalies (it cannot tell them apart).
The same rule feeds the report's table and `head_selection="diagnostic"`.
"""

from __future__ import annotations

TOO_HARD_MARGIN = 0.05  # "near chance": normal accuracy <= 1/classes + this
TOO_EASY_ACCURACY = 0.98  # "near 100%": both normal and anomaly accuracy >= this
UNSUITED = ("too hard", "too easy")


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
