"""Where a command's time goes before its first training step: the driver's phase marks and
the workers' times, in seconds from the process's start (imports included)."""

from __future__ import annotations

import itertools
import os
import time


def process_start_time() -> float:
    """This process's start as a wall-clock time (imports included), from /proc; where there
    is no /proc, now."""
    try:
        with open("/proc/self/stat") as f:
            started_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: start time since boot
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - (uptime - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time()


class StartupClock:
    def __init__(self):
        self.marks = [("started", process_start_time())]

    def mark(self, phase: str) -> None:
        """The end of `phase`, now."""
        self.marks.append((phase, time.time()))

    def report(self, worker: dict | None = None) -> dict:
        """Seconds per phase in order (`phases_s`), plus `first_step_s` from the process start when the
        workers said when their first batch went in (`worker`: rank 0's times)."""
        marks = list(self.marks)
        worker = worker if worker and "first_batch" in worker else None  # a resumed run with no epoch left
        if worker:
            marks += [("Train workers started", worker["entered"]), ("worker set-up", worker["ready"]),
                      ("first batch", worker["first_batch"])]
        # [name, seconds] pairs: JSON files keep them in the order they happened
        out = {"phases_s": [[name, round(t - previous, 2)] for (_, previous), (name, t) in itertools.pairwise(marks)]}
        if worker:
            out["first_step_s"] = round(worker["first_batch"] - self.marks[0][1], 2)
        return out

    @staticmethod
    def line(report: dict) -> str:
        shown = ", ".join(f"{name} {s:.1f} s" for name, s in report["phases_s"])
        first = f" → first step {report['first_step_s']:.1f} s after the command started" \
            if "first_step_s" in report else ""
        return f"start-up: {shown}{first}"


def first_batch_times(batches, times: dict):
    """`batches` (a callable of epoch and skip) that writes the wall time of its first batch
    into `times["first_batch"]`."""

    def call(epoch: int = 0, skip: int = 0):
        for batch in batches(epoch, skip):
            times.setdefault("first_batch", time.time())
            yield batch

    return call
