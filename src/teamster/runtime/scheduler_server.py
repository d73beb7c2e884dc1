"""The scheduler process's shell: connections in, SchedulerState decides.

Every message from a worker or client becomes an event for
``SchedulerState.handle``; every instruction it returns is carried out here,
by sending on the right batched stream. This module makes no scheduling
decision and never unpickles user data (run specs, results and exceptions
pass through as opaque ``Serialized`` blobs).

Failures it detects: a worker connection that closes (process killed) is a
``RemoveWorker`` at once; a worker that goes silent (host down, network
partitioned) is removed by the core when a ``Tick`` finds its last heartbeat
older than ``heartbeat_timeout``. A client whose connection drops keeps its
futures for ``client_grace`` seconds so it can reconnect; a client that says
goodbye (``RemoveClient``) is removed at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from typing import Any

from teamster.core import messages as m
from teamster.core.scheduler import CORE, SchedulerState
from teamster.core.scheduler.events import RetireWorkers, Tick
from teamster.core.scheduler.instructions import (
    CloseWorker,
    RetirementDone,
    SendToClient,
    SendToWorker,
)
from teamster.runtime.comm import BatchedSend, Comm, CommClosedError, listen
from teamster.security import Security

logger = logging.getLogger("teamster.scheduler")

#: Messages each kind of peer may send on its stream; anything else is a
#: protocol violation that closes that peer's connection only.
WORKER_MESSAGES = (m.TaskFinished, m.TasksStarted, m.TaskErred, m.AddKeys, m.MissingData,
                   m.RescheduleTask, m.Heartbeat, m.StealResponse, m.WorkerStatus,
                   m.ReplicasNotAcquired)
CLIENT_MESSAGES = (m.UpdateGraph, m.ReleaseKeys, m.CancelKeys, m.ScatteredData,
                   m.RemoveClient)

#: Seconds a worker may stay silent before it is declared lost. Workers send a
#: heartbeat every half second; a long pause (a big pickle, a swapping host) must
#: not cost a healthy worker its data, and a killed process is noticed at once
#: anyway (its connection closes).
DEFAULT_HEARTBEAT_TIMEOUT = 60.0
#: Seconds a disconnected client's futures are kept for it to reconnect.
DEFAULT_CLIENT_GRACE = 30.0
#: Queries answered only when the core says so (the stream keeps flowing meanwhile).
DEFERRED_QUERIES = ("retire_workers",)
#: Seconds a closing worker's stream may take to flush its Shutdown message.
SHUTDOWN_FLUSH_TIMEOUT = 5.0


def _sender(msg: Any) -> str:
    return str(msg.address if isinstance(msg, (m.Heartbeat, m.WorkerStatus)) else msg.worker)


def validation_from_env() -> bool:
    return os.environ.get("TEAMSTER_VALIDATE", "") not in ("", "0", "false", "False")


class SchedulerServer:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        validate: bool | None = None,
        heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT,
        tick_interval: float = 1.0,
        security: Security | None = None,
        client_grace: float = DEFAULT_CLIENT_GRACE,
    ) -> None:
        if heartbeat_timeout <= 0 or tick_interval <= 0 or client_grace < 0:
            raise ValueError(
                f"heartbeat_timeout and tick_interval must be positive and client_grace not "
                f"negative, got {heartbeat_timeout}, {tick_interval} and {client_grace}")
        #: Token and certificates every connection must pass (none: open to all).
        self.security = security or Security()
        self.listen_address = f"{self.security.scheme}://{host}:{port}"
        self.state = SchedulerState(
            validate=validation_from_env() if validate is None else validate,
            heartbeat_timeout=heartbeat_timeout,
        )
        # Ticks at least 4 times per timeout, so a silent worker is found
        # within about 1.25 timeouts.
        self.tick_interval = min(tick_interval, heartbeat_timeout / 4)
        self.client_grace = client_grace
        #: Disconnected clients -> the timer that removes them unless they reconnect.
        self._client_removals: dict[str, asyncio.TimerHandle] = {}
        self.address = ""
        self.id = f"scheduler-{os.getpid()}"
        self._workers: dict[str, tuple[Comm, BatchedSend]] = {}
        self._clients: dict[str, tuple[Comm, BatchedSend]] = {}
        self._listener: Any = None
        self._ticker: asyncio.Task[None] | None = None
        self._stim = 0
        #: Retirement requests the core has not settled yet, by request id.
        self._retirements: dict[str, asyncio.Future[RetirementDone]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self.closed = asyncio.Event()
        self.started_at = time.time()

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> SchedulerServer:
        self._listener = await listen(
            self.listen_address, self._on_connection, handshake={"role": "scheduler"},
            security=self.security,
        )
        self.address = self._listener.address
        self._ticker = asyncio.create_task(self._tick_forever())
        # (Which core runs decides the CPU per task: see buildsys/teamster_build.py.)
        logger.info("Scheduler at %s (scheduler core: %s)", self.address, CORE)
        return self

    async def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        if self._ticker is not None:
            self._ticker.cancel()
        for timer in self._client_removals.values():
            timer.cancel()
        self._client_removals.clear()
        for fut in self._retirements.values():
            if not fut.done():
                fut.set_exception(RuntimeError("the scheduler closed before retirement finished"))
        # Workers and clients are told, so workers exit cleanly and clients
        # fail what waits at once, instead of both reporting a lost scheduler
        # and trying to reconnect; the flushes are bounded and concurrent.
        streams = [*self._workers.values(), *self._clients.values()]
        self._workers = {}
        stimulus_id = self._stimulus("scheduler-close")
        await asyncio.gather(*(self._close_stream(comm, bsend, "the scheduler closed",
                                                  stimulus_id)
                               for comm, bsend in streams))
        # (The listener aborts every connection it serves.)
        if self._listener is not None:
            await self._listener.close()
        for task in list(self._background):
            task.cancel()

    async def __aenter__(self) -> SchedulerServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _stimulus(self, what: str) -> str:
        self._stim += 1
        return f"{what}-{self._stim}"

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            try:
                self.handle(Tick(time.time(), self._stimulus("tick")))
            except Exception:
                # Logged loudly but survived: a ticker that died silently would
                # stop the detection of silent workers for good.
                logger.exception("Handling a Tick failed")

    # ---------------------------------------------------------- state machine

    def handle(self, event: Any) -> None:
        for instr in self.state.handle(event):
            if isinstance(instr, SendToWorker):
                stream = self._workers.get(instr.worker)
                if stream is not None:
                    stream[1].send(instr.msg)
            elif isinstance(instr, SendToClient):
                stream = self._clients.get(instr.client)
                if stream is not None:
                    stream[1].send(instr.msg)
            elif isinstance(instr, CloseWorker):
                stream = self._workers.pop(instr.worker, None)
                if stream is not None:
                    log = logger.info if instr.reason == "retired" else logger.warning
                    log("Closing worker %s: %s", instr.worker, instr.reason)
                    if instr.reason == "missed heartbeats":
                        # Written off, not dismissed: if it is alive after
                        # all (a long pause, a healed partition) it starts
                        # over and registers again (worker_server.py).
                        comm, bsend = stream
                        bsend.abort()
                        comm.abort()
                    else:
                        self._spawn(self._close_stream(*stream, instr.reason,
                                                              instr.stimulus_id))
            elif isinstance(instr, RetirementDone):
                fut = self._retirements.pop(instr.request_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(instr)
            else:  # pragma: no cover - the core's instruction set is closed
                raise TypeError(f"unknown instruction {instr!r}")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _close_stream(self, comm: Comm, bsend: BatchedSend, reason: str,
                            stimulus_id: str) -> None:
        """Tell a worker or client the scheduler is done with it (``Shutdown``),
        flush, then close its stream."""
        bsend.send(m.Shutdown(reason, stimulus_id))
        try:
            await asyncio.wait_for(bsend.close(), SHUTDOWN_FLUSH_TIMEOUT)
        except (TimeoutError, OSError, CommClosedError):
            pass
        finally:
            bsend.abort()
            comm.abort()

    # ------------------------------------------------------------ connections

    async def _on_connection(self, comm: Comm) -> None:
        role = comm.handshake.get("role")
        if role == "worker":
            await self._serve_worker(comm)
        elif role == "client":
            await self._serve_client(comm)
        else:
            await self._serve_queries(comm)

    async def _serve_worker(self, comm: Comm) -> None:
        first = await comm.recv()
        if not isinstance(first, m.RegisterWorker):
            logger.warning("Worker at %s did not register first; closing", comm.peer_address)
            return
        address = first.address
        bsend = BatchedSend(interval=0.002)
        bsend.start(comm)
        old = self._workers.get(address)
        if old is not None:
            # The same worker again (it reconnected before we saw its old
            # connection fail): the old stream must not linger half-open.
            old[1].abort()
            old[0].abort()
        self._workers[address] = (comm, bsend)
        reg = dataclasses.replace(first, now=time.time(),
                                  stimulus_id=self._stimulus("register-worker"))
        self.handle(reg)
        if self._workers.get(address, (None,))[0] is not comm:
            return  # refused (duplicate name)
        bsend.send(m.Reply(0, True, {"scheduler": self.address, "id": self.id,
                                     "worker_slot": self.state.worker_slots.slot_of(address)}))
        reason = "connection closed"
        try:
            while True:
                batch = await comm.recv()
                for msg in batch if isinstance(batch, (list, tuple)) else (batch,):
                    if not isinstance(msg, WORKER_MESSAGES) or _sender(msg) != address:
                        raise CommClosedError(f"unexpected message from worker: {msg!r:.200}")
                    if isinstance(msg, m.Heartbeat):
                        msg = dataclasses.replace(msg, now=time.time())
                    self.handle(msg)
        except CommClosedError as exc:
            reason = str(exc) or reason
        finally:
            if self._workers.get(address, (None,))[0] is comm:
                del self._workers[address]
                bsend.abort()
                self.handle(m.RemoveWorker(address, reason, time.time(),
                                           self._stimulus("remove-worker")))
                logger.info("Worker %s left: %s", address, reason)

    async def _serve_client(self, comm: Comm) -> None:
        client_id = str(comm.handshake.get("client_id") or self._stimulus("client"))
        bsend = BatchedSend(interval=0.002)
        bsend.start(comm)
        timer = self._client_removals.pop(client_id, None)
        if timer is not None:
            timer.cancel()  # back within the grace period: it keeps its futures
        old = self._clients.get(client_id)
        if old is not None:
            old[1].abort()
            old[0].abort()
        self._clients[client_id] = (comm, bsend)
        # (For a client the core still knows, this re-reports its finished keys.)
        self.handle(m.RegisterClient(client_id, time.time(), self._stimulus("client")))
        said_goodbye = False
        try:
            while True:
                batch = await comm.recv()
                for msg in batch if isinstance(batch, (list, tuple)) else (batch,):
                    if isinstance(msg, m.Request) and msg.op in DEFERRED_QUERIES:
                        self._spawn(self._answer_later(msg, bsend))
                    elif isinstance(msg, m.Request):
                        bsend.send(self._answer(msg))
                    elif isinstance(msg, CLIENT_MESSAGES):
                        if isinstance(msg, m.UpdateGraph):
                            # The scheduler's clock: the balance report's start.
                            msg = dataclasses.replace(msg, client=client_id, now=time.time())
                        elif msg.client != client_id:
                            msg = dataclasses.replace(msg, client=client_id)
                        if isinstance(msg, m.RemoveClient):
                            said_goodbye = True
                            msg = dataclasses.replace(msg, now=time.time())
                        self.handle(msg)
                    else:
                        raise CommClosedError(f"unexpected message from client: {msg!r:.200}")
        except CommClosedError:
            pass
        finally:
            if self._clients.get(client_id, (None,))[0] is comm:
                del self._clients[client_id]
                bsend.abort()
                if not said_goodbye and not self.closed.is_set():
                    logger.info("Client %s disconnected; keeping its futures for %ss",
                                client_id, self.client_grace)
                    loop = asyncio.get_running_loop()
                    self._client_removals[client_id] = loop.call_later(
                        self.client_grace, self._remove_client, client_id)

    def _remove_client(self, client_id: str) -> None:
        """The grace period ran out and the client did not come back: release its futures."""
        self._client_removals.pop(client_id, None)
        if client_id in self._clients:
            return
        logger.info("Client %s did not reconnect within %ss; releasing its futures",
                    client_id, self.client_grace)
        self.handle(m.RemoveClient(client_id, time.time(), self._stimulus("remove-client")))

    async def _serve_queries(self, comm: Comm) -> None:
        """One-off connections (CLI tools, health checks): request, reply, repeat."""
        try:
            while True:
                msg = await comm.recv()
                if not isinstance(msg, m.Request):
                    raise CommClosedError("expected a Request")
                if msg.op in DEFERRED_QUERIES:
                    await comm.send(await self._answer_deferred(msg))
                else:
                    await comm.send(self._answer(msg))
        except CommClosedError:
            pass

    # ---------------------------------------------------------------- queries

    def _answer(self, req: m.Request) -> m.Reply:
        try:
            result = self._query(req.op, dict(req.args or {}))
            return m.Reply(req.request_id, True, result)
        except Exception as exc:  # a bad query must not take the scheduler down
            logger.info("Query %s failed: %s", req.op, exc)
            return m.Reply(req.request_id, False, f"{type(exc).__name__}: {exc}")

    async def _answer_later(self, req: m.Request, bsend: BatchedSend) -> None:
        bsend.send(await self._answer_deferred(req))

    async def _answer_deferred(self, req: m.Request) -> m.Reply:
        try:
            result = await self._retire_workers(dict(req.args or {}))
            return m.Reply(req.request_id, True, result)
        except Exception as exc:
            logger.info("Query %s failed: %s", req.op, exc)
            return m.Reply(req.request_id, False, f"{type(exc).__name__}: {exc}")

    async def _retire_workers(self, args: dict[str, Any]) -> dict[str, Any]:
        """{"retired": {address: info}, "refused": {worker: reason}} once settled."""
        workers = args.get("workers")
        if isinstance(workers, str):
            workers = [workers]
        if not isinstance(workers, (list, tuple)) or not workers:
            raise ValueError(f"retire_workers needs workers=[addresses or names], got "
                             f"{workers!r}")
        request_id = self._stimulus("retire")
        fut: asyncio.Future[RetirementDone] = asyncio.get_running_loop().create_future()
        self._retirements[request_id] = fut
        self.handle(RetireWorkers(tuple(str(w) for w in workers), bool(args.get("close", True)),
                                  request_id, time.time(), request_id))
        done = await fut
        return {"retired": dict(done.retired), "refused": dict(done.refused)}

    def _query(self, op: str, args: dict[str, Any]) -> Any:
        state = self.state
        if op == "scheduler_info":
            return {
                "type": "Scheduler",
                "id": self.id,
                "address": self.address,
                "started": self.started_at,
                "workers": state.worker_info(),
                "tasks": state.counts(),
            }
        if op == "who_has":
            keys = args.get("keys")
            tasks = state.tasks
            selected = tasks.values() if keys is None else (tasks[k] for k in keys if k in tasks)
            return {ts.key: [w.address for w in ts.who_has] for ts in selected}
        if op == "balance_report":
            return state.report.as_dict(state)
        if op == "story":
            return [tuple(e) for e in state.story(*args["keys"])]
        if op == "unknown_keys":
            # A reconnecting client asks which of its keys the scheduler forgot.
            return [k for k in args["keys"] if k not in state.tasks]
        raise ValueError(f"unknown query {op!r}")
