"""The placement policy seam: which worker runs a ready task, and how deep a
worker's queue may be.

The scheduler calls only ``choose_worker``, ``is_saturated`` and
``estimate_duration``; a better policy replaces this module's ``Placement``
without touching the state machine. Every call costs O(k + restrictions),
never a scan of all workers or tasks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from teamster.core.messages import REPORT_AT_ONCE_BYTES
from teamster.core.scheduler.entities import TaskState, WorkerInfo

if TYPE_CHECKING:
    from teamster.core.scheduler.state import SchedulerState

#: Duration assumed for a prefix nobody has measured yet. Deliberately long:
#: an unknown prefix gets one task per thread (spread out) until the first
#: measurement arrives, instead of piling its tasks onto whoever asks first.
UNKNOWN_DURATION: Final = 0.5
#: Transfer bandwidth assumed until measured, bytes/s (a modest LAN; the
#: first transfers of 1 MB or more replace it with measurements).
DEFAULT_BANDWIDTH: Final = 100e6
#: Transfers smaller than this teach nothing about bandwidth (latency dominates)
#: and are not tracked as fetches under way. Workers report transfers this
#: large as they land (the rest with their next TaskFinished): one constant.
LARGE_TRANSFER: Final = REPORT_AT_ONCE_BYTES
#: Weight of a new bandwidth measurement in the moving averages.
BANDWIDTH_WEIGHT: Final = 0.25
#: One-way scheduler<->worker latency assumed, seconds (messages are batched
#: every few ms).
DEFAULT_LATENCY: Final = 0.005
#: How many holders of large inputs and how many idle workers to score.
DEPENDENCY_CANDIDATES: Final = 4
IDLE_CANDIDATES: Final = 2
#: Holders of one input looked at when gathering candidates (bounded: an
#: input may be replicated on every worker), and how many of them may be
#: candidates.
HOLDER_SCAN: Final = 16
BUSY_HOLDERS: Final = 2
#: Holders of one input named in a ComputeTask (the worker fetches from them).
HOLDERS_SENT: Final = 8
#: Inputs smaller than this never draw a task to their busy holder: moving
#: them costs about one latency.
SMALL_INPUT: Final = 100_000


class Placement:
    def __init__(self, state: SchedulerState) -> None:
        self.state = state
        #: Seconds of queued (not yet running) work per thread that keep a worker
        #: busy across one scheduler round trip; deeper queues only add imbalance.
        self.backlog_target = 0.01
        #: Tasks longer than this many backlog targets get no prefetch at all:
        #: the round trip they would hide is under 10% of their runtime, while
        #: a task queued behind a long one waits for it as others start
        #: lower-priority work elsewhere (in a DAG, the inputs of the next
        #: wave arrive late and the cluster runs dry).
        self.prefetch_horizon = 10
        #: The same for workers running readers of large inputs: a queued
        #: reader fetches its input while the running task runs, which hides
        #: far more than a round trip.
        self.reader_prefetch_horizon = 20
        #: Hard cap on tasks queued per thread, so memory stays bounded for tiny tasks.
        self.max_per_thread = 500
        self.latency = DEFAULT_LATENCY
        #: The worker the scheduler is refilling (it just gained room): always
        #: a candidate while it is idle.
        self.filling: WorkerInfo | None = None
        #: Measured bandwidth over all transfers, and per (source, destination).
        self.bandwidth = DEFAULT_BANDWIDTH
        self.pair_bandwidth: dict[tuple[str, str], float] = {}
        self.n_bandwidth_samples = 0

    def learn_transfer(self, source: str, destination: WorkerInfo, nbytes: int,
                       seconds: float) -> None:
        """A worker reported a transfer: refine the bandwidth estimates.

        Kept per (source, destination) pair for reports, and per destination
        for placement: a task's inputs may come from any of several holders,
        and one attribute read per input keeps scoring cheap.
        """
        if nbytes < LARGE_TRANSFER or seconds <= 0:
            return
        bw = nbytes / seconds
        w = BANDWIDTH_WEIGHT
        if self.n_bandwidth_samples == 0:
            self.bandwidth = bw
        else:
            self.bandwidth += w * (bw - self.bandwidth)
        self.n_bandwidth_samples += 1
        pair = (source, destination.address)
        old = self.pair_bandwidth.get(pair)
        self.pair_bandwidth[pair] = bw if old is None else old + w * (bw - old)
        old_in = destination.bandwidth
        destination.bandwidth = bw if not old_in else old_in + w * (bw - old_in)

    def estimate_duration(self, ts: TaskState) -> float:
        avg = ts.prefix.duration_average
        return UNKNOWN_DURATION if avg is None else avg

    def is_saturated(self, ws: WorkerInfo) -> bool:
        """Enough work to stay busy until the scheduler's next assignment lands.

        One task per thread runs; beyond that only queued work counts. The demo
        workload (10 ms tasks) lost a fifth of its time to round trips when the
        running tasks' estimates counted towards the backlog.
        """
        if ws.status != "running":
            return True  # paused: it starts nothing, so it must be given nothing
        n = ws.n_processing + ws.n_incoming
        threads = ws.nthreads
        if n < threads:
            return False
        if n >= threads * self.max_per_thread:
            return True
        average = ws.occupancy / n
        horizon = self.reader_prefetch_horizon if ws.n_large_readers else self.prefetch_horizon
        if average > horizon * self.backlog_target:
            return True  # long (or not yet measured) tasks: one per thread
        return average * (n - threads) >= threads * self.backlog_target

    def valid_workers(self, ts: TaskState) -> Iterable[WorkerInfo] | None:
        """Workers satisfying hard restrictions, or None if the task has none."""
        if not ts.restricted:
            return None
        state = self.state
        if ts.worker_restrictions and not ts.allow_other_workers:
            pool: Iterable[WorkerInfo] = [
                ws
                for name in sorted(ts.worker_restrictions)
                if (ws := state.workers.get(name) or state.workers_by_name.get(name)) is not None
            ]
        else:
            pool = state.workers.values()
        # A paused worker takes no restricted task either; the task waits in
        # no-worker until one of its workers resumes.
        pool = [ws for ws in pool if ws.status == "running"]
        if ts.resource_restrictions:
            need = ts.resource_restrictions
            pool = [
                ws for ws in pool if all(ws.resources.get(r, 0) >= q for r, q in need.items())
            ]
        return pool

    def may_run(self, ts: TaskState, ws: WorkerInfo) -> bool:
        """Whether ``ws`` satisfies ``ts``'s hard restrictions."""
        if ts.worker_restrictions and not ts.allow_other_workers and (
            ws.address not in ts.worker_restrictions and ws.name not in ts.worker_restrictions
        ):
            return False
        need = ts.resource_restrictions
        return not need or all(ws.resources.get(r, 0) >= q for r, q in need.items())

    def transfer_time(self, ts: TaskState, ws: WorkerInfo) -> float:
        """Seconds to bring ``ts``'s missing inputs to ``ws``, as placement weighs them.

        - An input already being fetched by k other workers from h holders
          is slowed by their sharing the holders' links (1 + k/h): without
          this, every idle worker would pull one large input from its single
          holder at once, and all of them would wait k times longer.
        - A new replica that pays for itself costs nothing here: while fewer
          workers fetch a large input than hold it, and the work still
          waiting on it, spread over its holders, exceeds twice a transfer, a
          copy to an idle worker shortens everything that reads it, not just
          this task. Holders then double with each round of transfers (a
          broadcast tree) instead of growing by one.
        """
        seconds = 0.0
        bw = ws.bandwidth or self.bandwidth
        duration = -1.0
        for dts in ts.dependencies:
            nbytes = dts.nbytes
            if nbytes <= 0:
                continue
            if dts.has_holder(ws):
                continue
            one = nbytes / bw
            if nbytes < LARGE_TRANSFER:
                seconds += one
                continue
            fetching = dts.fetching
            n_fetching = 0
            if fetching:
                if ws in fetching:
                    continue  # already on its way there
                n_fetching = len(fetching)
            n_holders = dts.n_holders() or 1
            if n_fetching >= n_holders:
                if ts.prefix.duration_average is None:
                    # Every holder's link is taken and the task's duration is
                    # a guess: a crowded copy is not worth starting on a guess.
                    return math.inf
            else:
                waiters = dts.n_waiters
                if waiters > 1:
                    if duration < 0:
                        duration = self.estimate_duration(ts)
                    if waiters * duration > 2 * one * (n_holders + n_fetching):
                        continue
            seconds += one * (1.0 + n_fetching / n_holders)
        return seconds

    def holders_to_fetch_from(self, dts: TaskState) -> tuple[str, ...]:
        """The holders of ``dts`` a worker is told to fetch it from.

        At most ``HOLDERS_SENT`` from the front of ``who_has``, whose first
        entry then moves to the back: O(k), and successive tasks reading a
        replicated input fetch it from different replicas instead of all
        from the first holder. Sending every holder cost O(workers) per
        ComputeTask (teamster.sim, large-inputs at 1,000 workers).
        """
        holder = dts.holder
        if holder is not None:  # (the usual one or two holders)
            holder2 = dts.holder2
            if holder2 is None:
                return (holder.address,)
            dts.holder, dts.holder2 = holder2, holder  # (the first goes last: see below)
            return (holder.address, holder2.address)
        more = dts.more_holders
        if more is None:
            return ()
        chosen: list[WorkerInfo] = []
        for ws in more:
            chosen.append(ws)
            if len(chosen) == HOLDERS_SENT:
                break
        # The worker fetches from the first holder named that it is not
        # already fetching from: name a different one first each time, or
        # every copy is pulled from the same holder while the others idle.
        first = chosen[0]
        del more[first]
        more[first] = None
        return tuple([ws.address for ws in chosen])

    def score(self, ts: TaskState, ws: WorkerInfo) -> float:
        """Estimated time until ``ts`` could finish on ``ws``."""
        return ws.occupancy / ws.nthreads + self.transfer_time(ts, ws)

    def choose_worker(self, ts: TaskState) -> WorkerInfo | None:
        """The best worker for a ready task, or None to keep it queued.

        Unrestricted tasks only go to unsaturated ("idle") workers: the rest
        wait in the scheduler's queue (late binding).
        """
        state = self.state
        # (Most tasks have no restrictions: skip the call for them.)
        valid = (None if ts.worker_restrictions is None and ts.resource_restrictions is None
                 else self.valid_workers(ts))
        candidates: list[WorkerInfo]
        if valid is not None:
            candidates = list(valid)
            if ts.worker_restrictions and ts.allow_other_workers:
                preferred = [ws for ws in candidates if ws.address in ts.worker_restrictions
                             or ws.name in ts.worker_restrictions]
                candidates = preferred or candidates
            if not candidates:
                return None
            return min(candidates, key=lambda ws: self.score(ts, ws))
        if not state.idle.n:
            return None
        if ts.worker_restrictions:
            # A loose restriction (allow_other_workers): the named workers win
            # while they have room; otherwise the task goes anywhere.
            named = [state.workers.get(n) or state.workers_by_name.get(n)
                     for n in sorted(ts.worker_restrictions)]
            preferred = [ws for ws in named if ws is not None and ws.is_idle]
            if preferred:
                return min(preferred, key=lambda ws: self.score(ts, ws))
        deps = ts.dependencies
        cand: dict[WorkerInfo, None] = {}
        if deps:
            # Holders of the largest inputs: running by the data may beat
            # moving it (the score decides). Bounded: an input may be
            # replicated on thousands of workers.
            top = (deps if len(deps) <= DEPENDENCY_CANDIDATES else
                   sorted(deps, key=_larger_first)[:DEPENDENCY_CANDIDATES])
            measured = ts.prefix.duration_average is not None
            # (Counted loops, not islice: in compiled code an islice is a
            # Python object, ~600 instructions per task.)
            for dts in top:
                if measured and dts.nbytes >= SMALL_INPUT:
                    # Busy or not: the first few (who_has rotates as
                    # ComputeTasks name its holders, so others come next).
                    # (The usual one or two holders read directly, here
                    # and below: iterating ``who_has`` would build a tuple
                    # and a generic iterator per input.)
                    holder = dts.holder
                    if holder is not None:
                        cand[holder] = None  # (BUSY_HOLDERS >= 2: both)
                        holder2 = dts.holder2
                        if holder2 is not None:
                            cand[holder2] = None
                        continue
                    more = dts.more_holders
                    if more is None:
                        continue
                    taken = 0
                    for ws in more:
                        cand[ws] = None
                        taken += 1
                        if taken == BUSY_HOLDERS:
                            break
                else:
                    # A small input is not worth waiting for, nor a large one
                    # while the task's duration is a guess (late binding
                    # explores): its holders count only while idle.
                    holder = dts.holder
                    if holder is not None:
                        if holder.is_idle:
                            cand[holder] = None
                        holder2 = dts.holder2
                        if holder2 is not None and holder2.is_idle:
                            cand[holder2] = None
                        continue
                    more = dts.more_holders
                    if more is None:
                        continue
                    found = 0
                    scanned = 0
                    for ws in more:
                        if ws.is_idle:
                            cand[ws] = None
                            found += 1
                            if found == BUSY_HOLDERS:
                                break
                        scanned += 1
                        if scanned == HOLDER_SCAN:
                            break
        for ws in state.idle.rotate(IDLE_CANDIDATES):
            cand[ws] = None
        filling = self.filling
        if filling is not None and filling.is_idle:
            cand[filling] = None
        if len(cand) == 1 and not deps:
            return next(iter(cand))
        # (A busy holder wins only while its queue is shorter than moving the
        # input: the score bounds how deep it gets.)
        best_score = math.inf
        best = None
        moves_data = False
        for dts in deps:
            if dts.nbytes > 0:
                moves_data = True
                break
        for ws in cand:
            score = ws.occupancy / ws.nthreads
            if moves_data and score < best_score:
                score += self.transfer_time(ts, ws)
            if score < best_score:
                best, best_score = ws, score
        # None: every candidate needs a crowded copy of an input on a guess;
        # the task waits in the queue for a holder or a measurement.
        return best


def start_fetching_inputs(ts: TaskState, ws: WorkerInfo) -> bool:
    """``ws`` will fetch ``ts``'s missing large inputs: their holders' links get busier.

    Returns whether ``ts`` reads a large input at all (held by ``ws`` or not).
    """
    reads_large = False
    for dts in ts.dependencies:
        if dts.nbytes >= LARGE_TRANSFER:
            reads_large = True
            if not dts.has_holder(ws):
                if dts.fetching is None:
                    dts.fetching = {}
                dts.fetching[ws] = None
    return reads_large


def stop_fetching_inputs(ts: TaskState, ws: WorkerInfo) -> None:
    """``ws`` no longer runs ``ts`` (stolen away, steal refused): undo the above."""
    for dts in ts.dependencies:
        if dts.fetching and not dts.has_holder(ws):
            dts.fetching.pop(ws, None)


def _larger_first(dts: TaskState) -> int:
    return -dts.nbytes
