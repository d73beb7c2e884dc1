"""Where a run's makespan went: the share of the cluster's threads busy over time.

A ratio above 1 says time was lost, not when. The timeline splits the run
into equal bins and gives, for each, busy thread-seconds over available
thread-seconds (workers count from when they join until they leave), so a
dip shows *when* threads sat idle: at the start (ready work ramping up), in
the middle (the queue ran dry waiting on long tasks) or at the tail (only
chains are left).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable

#: Bins in a run's timeline.
TIMELINE_BINS = 40
_BARS = " ▁▂▃▄▅▆▇█"


def spread(acc: list[float], start: float, end: float, width: float, weight: float = 1.0) -> None:
    """Add ``weight`` x the overlap of [start, end) with each bin of ``acc``."""
    n = len(acc)
    top = n * width
    start, end = max(0.0, start), min(end, top)
    if end <= start:
        return
    b0 = min(n - 1, int(start / width))
    b1 = min(n - 1, int(end / width))
    if b0 == b1:
        acc[b0] += (end - start) * weight
        return
    acc[b0] += ((b0 + 1) * width - start) * weight
    for b in range(b0 + 1, b1):
        acc[b] += width * weight
    acc[b1] += (end - b1 * width) * weight


class BusyTimeline:
    """Execution intervals as two flat arrays (16 bytes per execution)."""

    __slots__ = ("starts", "ends")

    def __init__(self) -> None:
        self.starts = array("d")
        self.ends = array("d")

    def add(self, start: float, end: float) -> None:
        self.starts.append(start)
        self.ends.append(end)

    def utilisation(self, capacity: Iterable[tuple[float, float, int]], end: float,
                    bins: int = TIMELINE_BINS) -> list[float]:
        """Busy share of the available threads in each of ``bins`` bins of [0, end].

        ``capacity``: (join, leave, threads) per worker; leave may be inf.
        """
        if end <= 0:
            return []
        width = end / bins
        busy = [0.0] * bins
        for s, e in zip(self.starts, self.ends, strict=True):
            spread(busy, s, e, width)
        avail = [0.0] * bins
        for join, leave, threads in capacity:
            spread(avail, join, leave, width, threads)
        return [min(1.0, b / a) if a > 0 else 0.0 for b, a in zip(busy, avail, strict=True)]


def sparkline(values: list[float]) -> str:
    """One character per bin, from blank (idle) to a full block (all busy)."""
    top = len(_BARS) - 1
    return "".join(_BARS[round(v * top)] for v in values)
