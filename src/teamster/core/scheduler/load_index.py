"""Workers ordered by load, kept up to date in constant time per change.

Stealing wants the most backlogged workers first. A heap or sorted list would cost O(log W) per change and
changes happen twice per task (assign, finish). Instead workers sit in
buckets by the power of two of their load (seconds of expected work per
thread): moving between buckets is O(1), and the order between buckets is
exact while the order inside one is within a factor of two, which is as
precise as the duration estimates behind the loads.

A worker moves up as soon as its load leaves its bucket, but down only when
``highest`` comes to it. A worker's load goes up when it is assigned a task
and down when the task finishes, so an eager index moved most workers out of
their bucket and back again for every task (0.59 moves per task on
``million`` at 1,000 workers): each a deletion from and an insertion into a
dict of up to every worker, cold at that size. Stealing, the only reader,
runs when workers are idle and no task is queued; until then a worker moves
only when its load passes the highest bucket it has reached.
"""

from __future__ import annotations

from typing import Final

from teamster.core.scheduler.entities import WorkerInfo

#: Loads below this many seconds per thread share the lowest bucket.
RESOLUTION: Final = 0.001
#: Bucket b >= 1 holds loads in [RESOLUTION * 2**(b-1), RESOLUTION * 2**b);
#: the top bucket takes everything above (about 12 days at this resolution).
N_BUCKETS: Final = 40
#: Each bucket's load range [LOWER[b], UPPER[b]). Shared by all workers, so
#: checking whether a worker stays in its bucket reads nothing cold: a range
#: kept per worker was a tuple and two floats to allocate on each move and
#: to read on each check, at 1,000 workers cache misses twice per task.
LOWER: Final[tuple[float, ...]] = (float("-inf"),) + tuple(
    RESOLUTION * 2 ** (b - 1) for b in range(1, N_BUCKETS))
UPPER: Final[tuple[float, ...]] = tuple(RESOLUTION * 2**b for b in range(N_BUCKETS - 1)) + (
    float("inf"),)
#: ``WorkerInfo.load_bucket`` of a worker not in the index.
NOT_INDEXED: Final = -1


def bucket_of(load: float) -> int:
    if load < RESOLUTION:
        return 0
    return min(int(load / RESOLUTION).bit_length(), N_BUCKETS - 1)


class LoadIndex:
    """Each worker's place is kept on it (``WorkerInfo.load_bucket``): one
    index per scheduler, and no lookup to find a worker's bucket."""

    __slots__ = ("buckets", "n", "removed")

    def __init__(self) -> None:
        self.buckets: list[dict[WorkerInfo, None]] = [{} for _ in range(N_BUCKETS)]
        self.n = 0
        #: Entries deleted from each bucket since it was last rebuilt (``_take_out``).
        self.removed = [0] * N_BUCKETS

    def __len__(self) -> int:
        return self.n

    def __contains__(self, ws: WorkerInfo) -> bool:
        return ws.load_bucket != NOT_INDEXED

    def set(self, ws: WorkerInfo, load: float) -> None:
        # Called twice per task: the common case (no move up) is one comparison.
        ws.filed_load = load
        old = ws.load_bucket
        if old != NOT_INDEXED:
            if load < UPPER[old]:
                return  # (down, if at all, when ``highest`` comes to it)
            self._take_out(old, ws)
        else:
            self.n += 1
        b = bucket_of(load)
        self.buckets[b][ws] = None
        ws.load_bucket = b

    def discard(self, ws: WorkerInfo) -> None:
        old = ws.load_bucket
        if old != NOT_INDEXED:
            self._take_out(old, ws)
            ws.load_bucket = NOT_INDEXED
            self.n -= 1

    def _take_out(self, b: int, ws: WorkerInfo) -> None:
        """Delete ``ws`` from bucket ``b``.

        A dict keeps a hole where an entry was deleted until it next grows,
        and iterating it steps over every hole before the first entry:
        ``highest`` stepped over about 200 per call at 1,000 workers (3,150
        instructions a call, a sixth of an average task's, by callgrind).
        Rebuilt, in the same order, once it has lost more than twice the
        entries it holds plus 16, a bucket's holes cost O(1) amortised per
        deletion.
        """
        bucket = self.buckets[b]
        del bucket[ws]
        removed = self.removed[b] + 1
        if removed > 2 * len(bucket) + 16:
            self.buckets[b] = {w: None for w in bucket}
            removed = 0
        self.removed[b] = removed

    def highest(self, k: int) -> list[WorkerInfo]:
        """Up to k workers, from the most loaded bucket down.

        A list, not a view: the caller changes loads (and so buckets) while
        it goes through them.
        """
        out: list[WorkerInfo] = []
        if not self.n:
            return out
        for b in range(N_BUCKETS - 1, -1, -1):
            bucket = self.buckets[b]
            if not bucket:
                continue
            # Those whose load fell below this bucket go down, to their own
            # buckets: below this one, so still to come. Only those met
            # before the k-th are looked at, so a call costs O(buckets + k)
            # plus the moves down, each paid for by an earlier move up.
            lower = LOWER[b]
            fallen: list[WorkerInfo] = []
            for ws in bucket:
                if ws.filed_load < lower:
                    fallen.append(ws)
                else:
                    out.append(ws)
                    if len(out) >= k:
                        break
            for ws in fallen:
                self._take_out(b, ws)
                down = bucket_of(ws.filed_load)
                self.buckets[down][ws] = None
                ws.load_bucket = down
            if len(out) >= k:
                break
        return out

    def validate(self) -> None:
        n = 0
        for b, bucket in enumerate(self.buckets):
            for ws in bucket:
                assert ws.load_bucket == b, f"{ws} filed in bucket {b}"
                assert ws.filed_load < UPPER[b], f"{ws} filed below its load in bucket {b}"
                n += 1
        assert n == self.n, "load index count mismatch"
