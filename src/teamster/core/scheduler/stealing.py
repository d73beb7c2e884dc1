"""Work stealing: queued tasks move from backlogged workers to hungry ones.

Late binding keeps most ready tasks in the scheduler's queue, so stealing is
for what has already been handed out: tasks queued behind a task that runs
far longer than estimated, tasks piled by their large inputs onto the few
workers holding them, restricted tasks, and everything at the tail of a
computation or when workers join.

Rules:
- A worker that runs dry (fewer tasks than threads, nothing queued for it in
  the scheduler) steals at once; ``Tick`` runs a bounded pass for the rest.
- Victims come from ``SchedulerState.victims``: workers with queued tasks,
  ordered by backlog (see load_index.py). At most ``MAX_VICTIMS`` victims
  and ``SCAN`` tasks per victim are looked at per call.
- A task moves only if it would start sooner on the thief, counting the
  time to move its inputs there and the steal's round trips.
- A steal is a transaction with the victim: ``StealRequest`` asks it to give
  the task up; it refuses one it has started. Until ``StealResponse`` the
  task stays the victim's and the thief holds a reservation (its duration
  counts in the thief's occupancy, so two steals do not overfill it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, NamedTuple

from teamster.core.messages import StealRequest, StealResponse
from teamster.core.scheduler.entities import TaskState, WorkerInfo
from teamster.core.scheduler.instructions import SendToWorker
from teamster.core.scheduler.placement import start_fetching_inputs, stop_fetching_inputs

if TYPE_CHECKING:
    from teamster.core.scheduler.state import SchedulerState

#: Victims looked at per balancing call, most backlogged first.
MAX_VICTIMS: Final = 4
#: Tasks of one victim looked at per call, most recently assigned first (the
#: worker runs in priority order, so those are the least likely started).
SCAN: Final = 16
#: Hungry workers a periodic pass balances for.
PERIODIC_THIEVES: Final = 8


class Steal(NamedTuple):
    steal_id: int
    victim: WorkerInfo
    #: None: taken back into the scheduler, to be placed like any ready task.
    thief: WorkerInfo | None
    #: The duration reserved on the thief.
    duration: float


class Stealing:
    def __init__(self, state: SchedulerState) -> None:
        self.state = state
        #: Tasks with a StealRequest out -> the steal.
        self.pending: dict[TaskState, Steal] = {}
        #: Tasks a victim refused to give up because they started (or
        #: finished): not asked again while they stay where they are. (A task
        #: refused while its inputs were in flight may be asked again.)
        self.refused: dict[TaskState, None] = {}
        self._next_id = 0
        self.n_requested = 0
        self.n_moved = 0
        self.n_refused = 0

    # ---------------------------------------------------------- deciding

    def balance(self, thief: WorkerInfo, stimulus_id: str) -> int:
        """Ask backlogged workers for tasks the hungry ``thief`` would start sooner.

        Returns the number of requests sent.
        """
        s = self.state
        s.settle_victims()
        if not s.victims or s.placement.is_saturated(thief):
            return 0
        placement = s.placement
        pending = self.pending
        refused = self.refused
        overhead = 3 * placement.latency  # request, response, then the new assignment
        sent = 0
        for victim in s.victims.highest(MAX_VICTIMS):
            if victim is thief:
                continue
            spare = victim.spare_tasks()
            if spare <= 0:
                continue
            # When a task queued last on the victim would start there.
            wait = victim.occupancy / victim.nthreads
            for ts in victim.newest_assigned(SCAN):
                if ts in pending or ts in refused:
                    continue
                duration = ts.estimate
                start_there = wait - duration
                if ts.restricted and not placement.may_run(ts, thief):
                    continue
                start_here = thief.occupancy / thief.nthreads + overhead
                if start_here >= start_there:
                    break  # tasks assigned earlier start sooner there: none will pay
                if start_here + placement.transfer_time(ts, thief) >= start_there:
                    continue
                self._request(ts, victim, thief, duration, stimulus_id)
                sent += 1
                spare -= 1
                wait -= duration / victim.nthreads
                if placement.is_saturated(thief):
                    return sent
                if spare <= 0:
                    break
        return sent

    def take_back(self, victim: WorkerInfo, stimulus_id: str) -> None:
        """Every thread of ``victim`` runs a task far past its estimate: its
        queued tasks would wait for who knows how long. Ask for them back and
        place them again (on whichever worker frees up first)."""
        spare = victim.spare_tasks()
        pending = self.pending
        for ts in victim.newest_assigned(SCAN):
            if spare <= 0:
                return
            if ts in pending or ts in self.refused:
                continue
            self._request(ts, victim, None, ts.estimate, stimulus_id)
            spare -= 1

    def periodic(self, stimulus_id: str) -> None:
        """A bounded pass for hungry workers the event-driven trigger missed."""
        s = self.state
        s.settle_victims()
        if not s.victims or not s.idle.n or s.n_queued:
            return
        for thief in s.idle.rotate(PERIODIC_THIEVES):
            self.balance(thief, stimulus_id)

    def _request(self, ts: TaskState, victim: WorkerInfo, thief: WorkerInfo | None,
                 duration: float, stimulus_id: str) -> None:
        self._next_id += 1
        self.pending[ts] = Steal(self._next_id, victim, thief, duration)
        victim.n_outgoing += 1
        self.n_requested += 1
        s = self.state
        if thief is not None:
            thief.n_incoming += 1
            thief.occupancy += duration
            # The thief's copies of the inputs count as under way from now on,
            # or the next thief would see the holders' links free and pile on.
            start_fetching_inputs(ts, thief)
            s.update_idle(thief)
        s.update_idle(victim)
        s.out.append(SendToWorker(victim.address,
                                  StealRequest(ts.key, self._next_id, stimulus_id)))

    # ---------------------------------------------------------- settling

    def _settle(self, steal: Steal, ts: TaskState) -> None:
        thief = steal.thief
        steal.victim.n_outgoing -= 1
        if thief is not None:
            stop_fetching_inputs(ts, thief)
            thief.n_incoming -= 1
            thief.occupancy -= steal.duration
            if not thief.n_incoming and not thief.n_processing:
                thief.occupancy = 0.0  # no float drift survives an empty worker
            self.state.update_idle(thief)
        self.state.update_idle(steal.victim)

    def cancel(self, ts: TaskState) -> None:
        """``ts`` left its worker (finished, failed, released): drop its steal."""
        steal = self.pending.pop(ts, None)
        if steal is not None:
            self._settle(steal, ts)
            if steal.thief is not None:
                self.state.freed(steal.thief)
        self.refused.pop(ts, None)

    def response(self, ev: StealResponse) -> None:
        s = self.state
        ts = s.tasks.get(ev.key)
        steal = self.pending.get(ts) if ts is not None else None
        if ts is None or steal is None or steal.steal_id != ev.steal_id:
            return  # settled already: the task finished or left meanwhile
        del self.pending[ts]
        self._settle(steal, ts)
        victim, thief = steal.victim, steal.thief
        if not ev.stolen:
            self.n_refused += 1
            if ev.state != "waiting":
                self.refused[ts] = None
            if thief is not None:
                s.freed(thief)
            return
        self.n_moved += 1
        s.unassign(ts, victim)
        stop_fetching_inputs(ts, victim)
        if (thief is not None and s.workers.get(thief.address) is thief
                and s.placement.may_run(ts, thief)):
            s.log.append(ts.key, "processing", f"stolen:{victim.address}->{thief.address}",
                        ev.stimulus_id)
            s.assign(ts, thief, ev.stimulus_id)
        else:
            # Taken back, or the thief left meanwhile: place it like any ready task.
            ts.state = "waiting"
            s.log.append(ts.key, "processing", "waiting", ev.stimulus_id)
            s.recommend(ts, "processing")

    def validate(self) -> None:
        s = self.state
        for ts, steal in self.pending.items():
            assert ts.processing_on is steal.victim, f"steal of {ts.key!r} off its victim"
            assert s.tasks.get(ts.key) is ts, f"steal of forgotten {ts.key!r}"

