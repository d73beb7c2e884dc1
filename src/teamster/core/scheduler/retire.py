"""Graceful retirement: a worker leaves without losing or recomputing anything.

A client asks (``RetireWorkers``); for each worker named:

1. Its status becomes ``"closing_gracefully"``: placement counts it as
   saturated, so it gets no new task, steals nothing and receives no copies.
2. Every task assigned to it is asked back (a ``StealRequest`` without a
   thief, see stealing.py); it refuses the ones it has started, which finish
   there. Tasks given back are placed like any ready task.
3. Each key whose only holder it is (a *unique* key) is copied to a running
   worker with ``AcquireReplicas``; the recipient fetches it with its usual
   transfer machinery and reports ``AddKeys``. A recipient that could not
   fetch a key answers ``ReplicasNotAcquired`` and another is asked, up to
   ``MAX_ATTEMPTS`` recipients per key.
4. When it holds no unique key and runs nothing, the request learns it is
   retired (``RetirementDone`` once every worker of the request is settled)
   and, with ``close``, the worker is told to go (``CloseWorker``) and removed:
   every key it held has another holder, so nothing is released.

Refused (the worker returns to its previous status, and the reason goes back
in ``RetirementDone``): an unknown worker; unique data or tasks and no other
running worker to take them; a key no recipient could fetch; the worker
leaving on its own before it was drained.

Cost: one *scan* of a retiring worker is O(its keys + its tasks). Scans run
when the worker is asked to retire, on events from it or from a worker it is
sending copies to, and on ``Tick`` (which catches the rest, e.g. a client
releasing the last unique key). Recipients come from a bounded candidate set
(idle workers first), balanced by bytes held.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from teamster.core import messages as m
from teamster.core.scheduler.entities import TaskState, WorkerInfo, holding_order
from teamster.core.scheduler.events import RetireWorkers, Tick
from teamster.core.scheduler.instructions import CloseWorker, RetirementDone, SendToWorker

if TYPE_CHECKING:
    from teamster.core.scheduler.state import SchedulerState

#: The status of a worker being retired (and of one drained with close=False).
CLOSING: Final = "closing_gracefully"
#: Recipients that may fail to fetch one key before its worker's retirement
#: is refused (a retiring worker its peers cannot reach would wait forever).
MAX_ATTEMPTS: Final = 3
#: Workers considered as recipients per scan.
CANDIDATES: Final = 8
#: Events from a worker receiving copies that may change what it holds.
_RECIPIENT_EVENTS: Final = (m.AddKeys, m.MissingData, m.ReplicasNotAcquired, m.RemoveWorker,
                     m.RegisterWorker, m.WorkerStatus)


class RetiringWorker:
    __slots__ = ("ws", "close", "now", "requests", "moves", "recipients", "tried",
                 "reported_status", "n_asked", "bytes_asked")

    def __init__(self, ws: WorkerInfo, close: bool, now: float) -> None:
        self.ws = ws
        self.close = close
        #: When retirement started (the balance report's capacity drops then).
        self.now = now
        #: Ids of the requests waiting for it.
        self.requests: dict[str, None] = {}
        #: Unique keys -> the worker asked for a copy.
        self.moves: dict[TaskState, WorkerInfo] = {}
        #: Addresses of the ``moves`` recipients (events from them trigger a scan).
        self.recipients: frozenset[str] = frozenset()
        #: Unique keys -> recipients that failed to fetch them.
        self.tried: dict[TaskState, dict[WorkerInfo, None]] = {}
        #: The status the worker last reported ("running", "paused"): restored
        #: if retirement is refused.
        self.reported_status = ws.status if ws.status != CLOSING else "running"
        #: Copies asked for (a key asked twice counts twice), for the reply.
        self.n_asked = 0
        self.bytes_asked = 0


class RetireRequest:
    __slots__ = ("request_id", "pending", "retired", "refused")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        #: Addresses of its workers still retiring.
        self.pending: dict[str, None] = {}
        self.retired: dict[str, dict[str, Any]] = {}
        self.refused: dict[str, str] = {}


class Retirement:
    def __init__(self, state: SchedulerState) -> None:
        self.state = state
        #: Workers being retired, by address.
        self.retiring: dict[str, RetiringWorker] = {}
        #: Requests not yet answered, by id.
        self.requests: dict[str, RetireRequest] = {}

    # ------------------------------------------------------------ events

    def retire(self, ev: RetireWorkers) -> None:
        s = self.state
        req = self.requests[ev.request_id] = RetireRequest(ev.request_id)
        for name in dict.fromkeys(ev.workers):
            ws = s.workers.get(name) or s.workers_by_name.get(name)
            if ws is None:
                req.refused[name] = (f"no worker {name!r} is connected (workers: "
                                     f"{sorted(s.workers)[:10]})")
                continue
            r = self.retiring.get(ws.address)
            if r is None:
                r = self.retiring[ws.address] = RetiringWorker(ws, ev.close, ev.now)
                ws.status = CLOSING
                s.update_idle(ws)
            r.close = r.close or ev.close
            r.requests[req.request_id] = None
            req.pending[ws.address] = None
        # Every worker named is closing before any is scanned, so none is
        # chosen to receive another's data.
        for address in list(req.pending):
            r2 = self.retiring.get(address)
            if r2 is not None:
                self._scan(r2, ev.stimulus_id)
        self._answer_settled(ev.stimulus_id)

    def not_acquired(self, ev: m.ReplicasNotAcquired) -> None:
        """A recipient could not fetch these keys: the next scan asks someone else."""
        s = self.state
        for r in self.retiring.values():
            for key in ev.keys:
                ts = s.tasks.get(key)
                recipient = r.moves.get(ts) if ts is not None else None
                if ts is not None and recipient is not None and recipient.address == ev.worker:
                    del r.moves[ts]
                    r.tried.setdefault(ts, {})[recipient] = None

    def status_reported(self, ws: WorkerInfo, status: str) -> bool:
        """``ws`` reported pausing or resuming: True if retirement keeps its status."""
        if ws.status != CLOSING:
            return False
        r = self.retiring.get(ws.address)
        if r is not None:
            r.reported_status = status
        return True

    def after_event(self, event: Any) -> None:
        """Scan the retiring workers this event may have brought closer to done."""
        if type(event) is RetireWorkers:
            return  # scanned by retire() itself
        stimulus_id = event.stimulus_id
        if type(event) is Tick:
            todo = list(self.retiring.values())
        else:
            addresses = {getattr(event, "worker", None), getattr(event, "address", None),
                         getattr(event, "errant_worker", None)}
            if type(event) is m.StealResponse:
                # A steal may have landed a task on a retiring worker (it was
                # the thief before it started retiring): take it back.
                ts = self.state.tasks.get(event.key)
                if ts is not None and ts.processing_on is not None:
                    addresses.add(ts.processing_on.address)
            recipient_event = type(event) in _RECIPIENT_EVENTS
            todo = [r for address, r in self.retiring.items()
                    if address in addresses
                    or recipient_event and not addresses.isdisjoint(r.recipients)]
        for r in todo:
            if self.retiring.get(r.ws.address) is r:
                self._scan(r, stimulus_id)
        self._answer_settled(stimulus_id)

    # ------------------------------------------------------------ progress

    def _scan(self, r: RetiringWorker, stimulus_id: str) -> None:
        s = self.state
        ws = r.ws
        if s.workers.get(ws.address) is not ws:
            self._refuse(r, f"{ws.address} left before its retirement finished "
                            "(its unique data, if any, is recomputed)", stimulus_id)
            return
        unique = sorted([ts for ts in ws.has_what if ts.n_holders() == 1], key=holding_order)
        if not unique and not ws.n_processing:
            self._complete(r, stimulus_id)
            return
        # Reuse recipients that are still up to it; choose for the rest.
        moves: dict[TaskState, WorkerInfo] = {}
        to_choose: list[TaskState] = []
        for ts in unique:
            recipient = r.moves.get(ts)
            if recipient is not None and s.workers.get(recipient.address) is recipient \
                    and recipient.status == "running":
                moves[ts] = recipient
            else:
                to_choose.append(ts)
        r.tried = {ts: tried for ts, tried in r.tried.items() if ts in ws.has_what}
        candidates = self._candidates() if to_choose or ws.n_processing else []
        if not candidates and (to_choose or ws.n_processing):
            if unique:
                keys = [ts.key for ts in unique[:3]]
                reason = (f"cannot retire the last worker holding data: {ws.address} holds "
                          f"{len(unique)} keys no other worker has (e.g. {keys}) and no "
                          "other running worker could take them; start another worker first")
            else:
                reason = (f"cannot retire {ws.address}: it has {ws.n_processing} tasks to "
                          "run and no other running worker could take them over; start "
                          "another worker first")
            self._refuse(r, reason, stimulus_id)
            return
        planned = {c: c.nbytes for c in candidates}
        batches: dict[WorkerInfo, list[TaskState]] = {}
        for ts in to_choose:
            tried = r.tried.get(ts, {})
            if len(tried) >= MAX_ATTEMPTS:
                self._refuse(r, f"could not copy {ts.key!r} off {ws.address}: {len(tried)} "
                                f"workers failed to fetch it ({[w.address for w in tried]}); "
                                "can its peers reach it?", stimulus_id)
                return
            pool = [c for c in candidates if c not in tried]
            if not pool:
                pool = self._candidates(exclude=tried)
                if not pool:
                    self._refuse(r, f"could not copy {ts.key!r} off {ws.address}: every "
                                    "running worker failed to fetch it", stimulus_id)
                    return
                for c in pool:
                    planned.setdefault(c, c.nbytes)
            recipient = min(pool, key=lambda c: planned[c])
            planned[recipient] += max(ts.nbytes, 0)
            moves[ts] = recipient
            batches.setdefault(recipient, []).append(ts)
        r.moves = moves
        r.recipients = frozenset(w.address for w in moves.values())
        self._take_back(r, stimulus_id)
        for recipient, tasks in batches.items():
            who_has = tuple((ts.key, (ws.address,), ts.nbytes) for ts in tasks)
            r.n_asked += len(tasks)
            r.bytes_asked += sum(max(ts.nbytes, 0) for ts in tasks)
            s.out.append(SendToWorker(recipient.address,
                                      m.AcquireReplicas(who_has, stimulus_id)))

    def _take_back(self, r: RetiringWorker, stimulus_id: str) -> None:
        """Ask for every task assigned to ``r``: it gives back those not started."""
        stealing = self.state.stealing
        ws = r.ws
        for ts in ws.processing_tasks():
            if ts not in stealing.pending and ts not in stealing.refused:
                # (stealing's own transaction: a thief of None means "place it
                # again", exactly what take_back does for stuck workers.)
                stealing._request(ts, ws, None, ts.estimate, stimulus_id)

    def _candidates(self, exclude: dict[WorkerInfo, None] | None = None) -> list[WorkerInfo]:
        """Up to CANDIDATES running workers to receive copies, idle ones first."""
        s = self.state
        out: dict[WorkerInfo, None] = {}
        if not exclude:
            for ws in s.idle.rotate(CANDIDATES):
                out[ws] = None
        if len(out) < CANDIDATES:
            for ws in s.workers.values():
                if ws.status == "running" and ws not in out and not (exclude and ws in exclude):
                    out[ws] = None
                    if len(out) >= CANDIDATES:
                        break
        return list(out)

    def _complete(self, r: RetiringWorker, stimulus_id: str) -> None:
        s = self.state
        ws = r.ws
        del self.retiring[ws.address]
        info = {
            "type": "Worker",
            "id": ws.name,
            "name": ws.name,
            "nthreads": ws.nthreads,
            "memory_limit": ws.memory_limit,
            "resources": dict(ws.resources),
            "executed": ws.executed,
            "keys_moved": r.n_asked,
            "bytes_moved": r.bytes_asked,
            "closed": r.close,
        }
        if r.close:
            # Messages this event had for it are moot (e.g. freeing a result
            # it just reported): it exits holding nothing anyone needs.
            s.out[:] = [i for i in s.out
                        if not (type(i) is SendToWorker and i.worker == ws.address)]
            s.out.append(CloseWorker(ws.address, "retired", stimulus_id))
            # Every key it holds has another holder: removing it releases nothing.
            s._drop_worker(ws, "retired", stimulus_id)
            s.report.capacity_changed(r.now, s.total_threads)
        for request_id in r.requests:
            req = self.requests[request_id]
            del req.pending[ws.address]
            req.retired[ws.address] = info

    def _refuse(self, r: RetiringWorker, reason: str, stimulus_id: str) -> None:
        s = self.state
        ws = r.ws
        del self.retiring[ws.address]
        if s.workers.get(ws.address) is ws:
            ws.status = r.reported_status
            s.update_idle(ws)
            if ws.status == "running":
                s.resumed(ws)
        for request_id in r.requests:
            req = self.requests[request_id]
            del req.pending[ws.address]
            req.refused[ws.address] = reason

    def _answer_settled(self, stimulus_id: str) -> None:
        for request_id in [i for i, req in self.requests.items() if not req.pending]:
            req = self.requests.pop(request_id)
            self.state.out.append(RetirementDone(
                request_id, tuple(req.retired.items()), tuple(req.refused.items()), stimulus_id))

    # ------------------------------------------------------------ validation

    def validate(self) -> None:
        s = self.state
        for address, r in self.retiring.items():
            assert s.workers.get(address) is r.ws, f"retiring {address} is not registered"
            assert r.ws.status == CLOSING, f"retiring {address} has status {r.ws.status!r}"
            assert r.ws not in s.idle, f"retiring {address} is idle"
            for request_id in r.requests:
                assert address in self.requests[request_id].pending, \
                    f"request {request_id} forgot {address}"
        for request_id, req in self.requests.items():
            assert req.pending, f"request {request_id} settled but not answered"
            for address in req.pending:
                assert request_id in self.retiring[address].requests
