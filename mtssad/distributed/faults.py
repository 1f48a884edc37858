"""Fault injection for fault-tolerance drills: kill a Ray Train worker process by its PID.

    train_detector_ddp(X, cfg, num_workers=2, ..., callbacks=[KillWorkerAfterEpoch(0, marker)])

Runs in the Train controller (a Ray `UserCallback`): after the workers have reported
epoch `epoch`, it SIGKILLs worker `rank` (its PID comes from the metrics every worker
reports), once; the marker file records that it fired. The worker group is then
restarted from the last checkpoint (FailureConfig(max_failures)). Use it to check a
cluster's storage and failure settings before a long sweep, not in production runs.
"""

from __future__ import annotations

import os
import signal

from ray.train import UserCallback


class KillWorkerAfterEpoch(UserCallback):
    def __init__(self, epoch: int, marker_path, rank: int = -1):
        self.epoch, self.marker_path, self.rank = int(epoch), str(marker_path), int(rank)

    def after_report(self, run_context, metrics, checkpoint):
        if os.path.exists(self.marker_path) or not metrics or metrics[0].get("epoch") != self.epoch:
            return
        pid = int(metrics[self.rank]["pid"])
        with open(self.marker_path, "w") as f:
            f.write(str(pid))
        os.kill(pid, signal.SIGKILL)
