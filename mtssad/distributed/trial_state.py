"""What a class trial checkpoints, and reads back when Tune restores it (sweep_trial.py's module notes).

rows.json (every finished config's row), state.json (counters, the best's test metrics in DDP mode),
best_scores.parquet, best_history.json, best_detector.pt (the best config's detector file, in-process
mode): a few KB to ~11 MB, so a restored trial continues at its next config on any node.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

ROWS_FILE, STATE_FILE = "rows.json", "state.json"
BEST_SCORES, BEST_HISTORY, BEST_DETECTOR = "best_scores.parquet", "best_history.json", "best_detector.pt"


@dataclass
class TrialState:
    """What a class trial checkpoints: its finished rows and counters (JSON), and the best config's outputs."""

    rows: list = field(default_factory=list)  # finished configs' rows, in training order
    starts: int = 0  # how many times this trial has started (restores + 1)
    fits: int = 0  # fits run by this trial over all its starts
    best_name: str | None = None  # row_key text of the best config so far (whose scores/history are kept)
    best_scores: object = None  # pandas DataFrame of the best config's per-image test scores (once scored)
    best_history: list | None = None  # its per-epoch training history
    best_detector: bytes | None = None  # its detector file (to_bytes), so a restored trial can still score test
    best_test: dict | None = None  # DDP mode: its test metrics from rank 0's scores, attached to its row at the end
    best_model: object = field(default=None, repr=False)  # the fitted best detector in memory (not checkpointed)

    def best_index(self) -> int | None:
        """Index in rows of the best config so far (None before the first)."""
        from ..results import row_key

        for i, r in enumerate(self.rows):
            if json.dumps(list(row_key(r))) == self.best_name:
                return i
        return None

    def save(self, directory: str) -> None:
        with open(os.path.join(directory, ROWS_FILE), "w") as f:
            json.dump(self.rows, f, default=_json_default)
        with open(os.path.join(directory, STATE_FILE), "w") as f:
            json.dump({"starts": self.starts, "fits": self.fits, "best_name": self.best_name,
                       "best_test": self.best_test}, f, default=_json_default)
        if self.best_detector is not None:
            with open(os.path.join(directory, BEST_DETECTOR), "wb") as f:
                f.write(self.best_detector)
        if self.best_scores is not None:
            self.best_scores.to_parquet(os.path.join(directory, BEST_SCORES), index=False)
        if self.best_history is not None:
            with open(os.path.join(directory, BEST_HISTORY), "w") as f:
                json.dump(self.best_history, f, default=_json_default)

    @classmethod
    def load(cls, directory: str) -> "TrialState":
        import pandas as pd

        with open(os.path.join(directory, ROWS_FILE)) as f:
            rows = json.load(f)
        with open(os.path.join(directory, STATE_FILE)) as f:
            st = json.load(f)
        scores_path = os.path.join(directory, BEST_SCORES)
        scores = pd.read_parquet(scores_path) if os.path.exists(scores_path) else None
        history = detector = None
        if os.path.exists(os.path.join(directory, BEST_HISTORY)):
            with open(os.path.join(directory, BEST_HISTORY)) as f:
                history = json.load(f)
        if os.path.exists(os.path.join(directory, BEST_DETECTOR)):
            with open(os.path.join(directory, BEST_DETECTOR), "rb") as f:
                detector = f.read()
        return cls(rows, st["starts"], st["fits"], st.get("best_name"), scores, history, detector, st.get("best_test"))

    @classmethod
    def from_checkpoint(cls, checkpoint) -> "TrialState":
        if checkpoint is None:
            return cls()
        with checkpoint.as_directory() as directory:
            return cls.load(directory)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-serializable: {type(o).__name__}")


__all__ = ["TrialState"]
