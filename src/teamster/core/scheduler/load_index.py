"""Workers ordered by load, kept up to date in constant time per change.

Stealing wants the most backlogged workers first. A heap or sorted list would cost O(log W) per change and
changes happen twice per task (assign, finish). Instead workers sit in
buckets by the power of two of their load (seconds of expected work per
thread): moving between buckets is O(1), and the order between buckets is
exact while the order inside one is within a factor of two, which is as
precise as the duration estimates behind the loads.
"""

from __future__ import annotations

from itertools import islice

from teamster.core.scheduler.entities import WorkerInfo

#: Loads below this many seconds per thread share the lowest bucket.
RESOLUTION = 0.001
#: Bucket b >= 1 holds loads in [RESOLUTION * 2**(b-1), RESOLUTION * 2**b);
#: the top bucket takes everything above (about 12 days at this resolution).
N_BUCKETS = 40


class LoadIndex:
    __slots__ = ("buckets", "where")

    def __init__(self) -> None:
        self.buckets: list[dict[WorkerInfo, None]] = [{} for _ in range(N_BUCKETS)]
        #: Worker -> (its bucket, the bucket's load range [lo, hi)).
        self.where: dict[WorkerInfo, tuple[int, float, float]] = {}

    def __len__(self) -> int:
        return len(self.where)

    def __contains__(self, ws: WorkerInfo) -> bool:
        return ws in self.where

    def set(self, ws: WorkerInfo, load: float) -> None:
        # Called twice per task: the common case (same bucket) is one dict
        # lookup and two comparisons.
        where = self.where
        old = where.get(ws)
        if old is not None and old[1] <= load < old[2]:
            return
        if load < RESOLUTION:
            b, lo, hi = 0, float("-inf"), RESOLUTION
        else:
            b = int(load / RESOLUTION).bit_length()
            if b >= N_BUCKETS:
                b = N_BUCKETS - 1
                lo, hi = RESOLUTION * 2 ** (b - 1), float("inf")
            else:
                lo, hi = RESOLUTION * 2 ** (b - 1), RESOLUTION * 2**b
        if old is not None:
            del self.buckets[old[0]][ws]
        self.buckets[b][ws] = None
        where[ws] = (b, lo, hi)

    def discard(self, ws: WorkerInfo) -> None:
        old = self.where.pop(ws, None)
        if old is not None:
            del self.buckets[old[0]][ws]

    def highest(self, k: int) -> list[WorkerInfo]:
        """Up to k workers, from the most loaded bucket down.

        A list, not a view: the caller changes loads (and so buckets) while
        it goes through them. O(buckets + k), whatever the number of workers.
        """
        out: list[WorkerInfo] = []
        if not self.where:
            return out
        for bucket in reversed(self.buckets):
            if bucket:
                out.extend(islice(bucket, k - len(out)))
                if len(out) >= k:
                    break
        return out

    def validate(self) -> None:
        n = 0
        for b, bucket in enumerate(self.buckets):
            for ws in bucket:
                assert self.where[ws][0] == b, f"{ws} filed in bucket {b}"
                n += 1
        assert n == len(self.where), "load index count mismatch"
