"""The worker process's shell: executes, transfers and stores; WorkerState decides.

Events come from the scheduler's stream (ComputeTask, FreeKeys), from the
thread pool (a task finished), from transfers (a peer answered) and from the
memory monitor (pause, resume). Every instruction of ``WorkerState.handle``
is carried out here. The values themselves live in ``self.data``, a
``SpillStore`` that moves them to disk beyond the memory target; the state
machine only knows their sizes.

Losing the scheduler connection: the scheduler has (or soon will have)
removed this worker, rescheduled its tasks and written off its data. So the
worker starts over: a fresh ``WorkerState``, an empty store, and a new
*session* number; executions and transfers still running from the old
session are discarded when they end. It reconnects with backoff for up to
``reconnect_timeout`` seconds, then exits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from teamster.core import messages as m
from teamster.core.worker import WorkerState
from teamster.core.worker import events as ev
from teamster.core.worker.instructions import DeleteData, Execute, GatherDep, SendToScheduler
from teamster.runtime.comm import (
    BatchedSend,
    Comm,
    CommClosedError,
    connect,
    deserialize,
    listen,
    serialize,
)
from teamster.runtime.connection_pool import ConnectionPool
from teamster.runtime.errors_payload import dumps_exception
from teamster.runtime.executor import BatchingExecutor, Done
from teamster.runtime.memory_monitor import (
    DEFAULT_PAUSE,
    DEFAULT_SPILL,
    DEFAULT_TARGET,
    MemoryManager,
    MemoryThresholds,
)
from teamster.runtime.scheduler_server import validation_from_env
from teamster.runtime.spill import DiskEntry, SpillStore, sizeof
from teamster.runtime.task_payload import run_task
from teamster.security import Security

logger = logging.getLogger("teamster.worker")

__all__ = ["WorkerServer", "sizeof"]


class WorkerServer:
    def __init__(
        self,
        scheduler_address: str,
        *,
        nthreads: int = 1,
        name: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        memory_limit: int = 0,
        memory_target_fraction: float | None = DEFAULT_TARGET,
        memory_spill_fraction: float | None = DEFAULT_SPILL,
        memory_pause_fraction: float | None = DEFAULT_PAUSE,
        local_directory: str | None = None,
        memory_monitor_interval: float = 0.1,
        resources: dict[str, float] | None = None,
        validate: bool | None = None,
        heartbeat_interval: float = 0.5,
        connect_timeout: float = 30.0,
        security: Security | None = None,
        reconnect_timeout: float = 60.0,
    ) -> None:
        #: Token and certificates for every connection, in and out.
        self.security = security or Security()
        self.scheduler_address = scheduler_address
        self.nthreads = nthreads
        self.name = name
        self.listen_address = f"{self.security.scheme}://{host}:{port}"
        self.memory_limit = memory_limit
        self.resources = dict(resources or {})
        self.validate = validation_from_env() if validate is None else validate
        self.heartbeat_interval = heartbeat_interval
        self.connect_timeout = connect_timeout
        #: Seconds to keep trying to reach the scheduler after losing it (0: exit at once).
        self.reconnect_timeout = reconnect_timeout
        #: Incremented whenever the state starts over; work of older sessions is dropped.
        self.session = 0
        #: How many times the scheduler connection was re-established.
        self.reconnections = 0
        self.address = ""
        self.memory_thresholds = MemoryThresholds(
            memory_limit, memory_target_fraction, memory_spill_fraction, memory_pause_fraction)
        self.memory_monitor_interval = memory_monitor_interval
        #: Task values by key, in memory or spilled to ``local_directory``;
        #: WorkerState tracks which keys these are.
        self.data = SpillStore(local_directory, owner="this worker")
        self.memory: MemoryManager | None = None
        self.state: WorkerState | None = None
        self.finished = asyncio.Event()
        self._bsend = BatchedSend(interval=0.002)
        self._pool = ConnectionPool({"role": "peer"}, security=self.security)
        self._background: set[asyncio.Task[Any]] = set()
        self._stim = 0
        self._listener: Any = None
        self._scheduler_comm: Comm | None = None
        self._executor: BatchingExecutor | None = None
        #: Why the scheduler told this worker to go (Shutdown), once it did.
        self.shutdown_reason: str | None = None
        self._closing: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> WorkerServer:
        self._listener = await listen(self.listen_address, self._on_connection,
                                      handshake={"role": "worker"}, security=self.security)
        self.address = self._listener.address
        self.name = self.name or self.address
        self.state = WorkerState(self.address, self.nthreads, resources=self.resources,
                                 validate=self.validate)
        owner = f"worker {self.name}"
        self.data.owner = owner
        self.memory = MemoryManager(self.data, self.memory_thresholds,
                                    on_pause_changed=self._on_pause_changed,
                                    interval=self.memory_monitor_interval, owner=owner)
        loop = asyncio.get_running_loop()
        self._executor = BatchingExecutor(self.nthreads, loop, self._on_executed)
        try:
            await self._connect_scheduler(self.connect_timeout)
        except BaseException:
            await self.close()
            raise
        self._spawn(self._heartbeat_forever())
        if self.memory_thresholds.limit:
            self._spawn(self.memory.run())
        logger.info("Worker %s (%d threads) registered with %s", self.address, self.nthreads,
                    self.scheduler_address)
        return self

    async def close(self) -> None:
        if self.finished.is_set():
            return
        self.finished.set()
        current = asyncio.current_task()
        for task in list(self._background):
            # (Not the task running this: cancelling it skipped the rest of
            # the close, leaving the spill directory and listener behind.)
            if task is not current:
                task.cancel()
        if self._executor is not None:
            self._executor.shutdown()
        await self._bsend.close()
        if self._scheduler_comm is not None:
            self._scheduler_comm.abort()
        if self._listener is not None:
            await self._listener.close()
        self._pool.close()
        if self.memory is not None:
            self.memory.close()  # waits for a spill in progress, then removes the files
        else:
            self.data.close()

    async def __aenter__(self) -> WorkerServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _stimulus(self, what: str) -> str:
        self._stim += 1
        return f"{what}-{self._stim}"

    # ---------------------------------------------------------- state machine

    def handle(self, event: Any) -> None:
        assert self.state is not None
        announced: list[Execute] = []
        for instr in self.state.handle(event):
            kind = type(instr)
            if kind is SendToScheduler:
                self._bsend.send(instr.msg)  # type: ignore[union-attr]
            elif kind is Execute:
                if instr.announce:  # type: ignore[union-attr]
                    announced.append(instr)  # type: ignore[arg-type]
                else:
                    self._execute(instr)  # type: ignore[arg-type]
            elif kind is GatherDep:
                self._spawn(self._gather(instr))  # type: ignore[arg-type]
            elif kind is DeleteData:
                for key in instr.keys:  # type: ignore[union-attr]
                    self.data.discard(key)
            else:  # pragma: no cover - the core's instruction set is closed
                raise TypeError(f"unknown instruction {instr!r}")
        if announced:
            self._spawn(self._execute_once_announced(announced))

    async def _execute_once_announced(self, instrs: list[Execute]) -> None:
        """Run tasks that were on a worker that died once their start notices
        (sent by the event that started them) are written: should one kill
        this process at once too, the scheduler still learns it was running."""
        session = self.session
        await self._bsend.written()
        if session == self.session:
            for instr in instrs:
                self._execute(instr)

    def _execute(self, instr: Execute) -> None:
        assert self._executor is not None and self.memory is not None
        spec = instr.run_spec
        data = self.data if instr.dependencies else {}
        key = instr.key
        store_large = self.memory.store_large_result

        def job() -> _Result:
            # On the task's thread: reading spilled inputs, measuring the
            # result and writing a result too large for memory happen here,
            # never on the event loop.
            if spec is None:  # an alias: the value of its single dependency
                value = data[instr.dependencies[0]]
            else:
                value = run_task(spec, data)
            nbytes = sizeof(value)
            return _Result(store_large(key, value, nbytes), nbytes, type(value).__name__)

        self._executor.submit((self.session, key), job)

    def _on_executed(self, batch: list[Done]) -> None:
        for (session, key), ok, result, start, stop in batch:
            if session != self.session:
                continue  # started before the scheduler connection was lost
            stim = self._stimulus("execute")
            if ok:
                if type(result.value) is DiskEntry:
                    self.data.adopt(key, result.value, result.nbytes)
                else:
                    self.data.put(key, result.value, result.nbytes)
                self.handle(ev.ExecuteSuccess(key, result.nbytes, result.type_name,
                                              stop - start, stop, stim))
            else:
                exc_s, tb_s, text = dumps_exception(result)
                self.handle(ev.ExecuteFailure(key, exc_s, tb_s, text, stop - start, stim))
        assert self.memory is not None
        self.memory.evict_soon()

    def _on_pause_changed(self, paused: bool) -> None:
        self.handle(ev.PauseChanged(paused, self._stimulus("pause" if paused else "resume")))

    async def _gather(self, instr: GatherDep) -> None:
        started = time.perf_counter()
        session = self.session
        try:
            reply = await self._pool.request(instr.worker, m.GetData(instr.keys, instr.stimulus_id))
            if not isinstance(reply, m.DataReply):
                raise CommClosedError(f"unexpected reply to GetData: {reply!r:.200}")
            if session != self.session:
                return  # asked for by a state since discarded
            received = []
            for key, blob in reply.data:
                self.data.put(key, deserialize(blob), blob.nbytes)
                received.append((key, blob.nbytes))
            assert self.memory is not None
            self.memory.evict_soon()
        except (OSError, CommClosedError) as exc:
            logger.info("Fetching %d keys from %s failed: %s", len(instr.keys), instr.worker, exc)
            if session != self.session:
                return
            self.handle(ev.GatherDepFailure(instr.worker, instr.keys, str(exc),
                                            self._stimulus("gather-failed")))
            return
        self.handle(ev.GatherDepSuccess(instr.worker, tuple(received), tuple(reply.missing),
                                        time.perf_counter() - started, self._stimulus("gather")))

    # ------------------------------------------------------------ connections

    async def _connect_scheduler(self, timeout: float) -> None:
        """Connect, register, and start reading the scheduler's stream."""
        comm = await connect(self.scheduler_address, timeout=timeout,
                             handshake={"role": "worker", "address": self.address},
                             security=self.security)
        try:
            await comm.send(m.RegisterWorker(
                self.address, self.name or self.address, self.nthreads, self.memory_limit,
                tuple(sorted(self.resources.items())), 0.0, f"register-{self.address}"))
            first = await asyncio.wait_for(comm.recv(), timeout)
            ack = _acknowledgement(first)
            if ack is None:
                why = _shutdown_reason(first)
                raise RuntimeError(f"The scheduler at {self.scheduler_address} refused this "
                                   "worker" + (f": {why}" if why else ""))
        except BaseException:
            comm.abort()
            raise
        self._scheduler_comm = comm
        self._bsend = BatchedSend(interval=0.002)
        self._bsend.start(comm)
        self.handle(ev.Registered(_worker_slot(ack), self._stimulus("registered")))
        # Work may already ride in the batch that carried the acknowledgement.
        self._handle_scheduler_batch(first)
        self._spawn(self._read_scheduler(comm))

    async def _read_scheduler(self, comm: Comm) -> None:
        try:
            while True:
                self._handle_scheduler_batch(await comm.recv())
        except CommClosedError as exc:
            reason = str(exc)
        if self.finished.is_set() or self.shutdown_reason is not None:
            self._close_soon()  # told to go (Shutdown), or closing anyway
            return
        if self.reconnect_timeout <= 0:
            logger.warning("Lost the scheduler at %s (%s); shutting down",
                           self.scheduler_address, reason)
            self._close_soon()
            return
        logger.warning("Lost the scheduler at %s (%s); reconnecting for up to %ss",
                       self.scheduler_address, reason, self.reconnect_timeout)
        self._bsend.abort()
        self._start_over()
        self._spawn(self._reconnect())

    def _start_over(self) -> None:
        """Forget everything: the scheduler wrote this worker's tasks and data off."""
        self.session += 1
        self.data.clear()
        self.state = WorkerState(self.address, self.nthreads, resources=self.resources,
                                 validate=self.validate)

    async def _reconnect(self) -> None:
        deadline = time.monotonic() + self.reconnect_timeout
        delay = 0.05
        while not self.finished.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                await self._connect_scheduler(min(self.connect_timeout, max(remaining, 0.1)))
            except (TimeoutError, OSError, CommClosedError, RuntimeError) as exc:
                logger.info("Reconnecting to %s failed: %s", self.scheduler_address, exc)
                await asyncio.sleep(min(delay, max(deadline - time.monotonic(), 0)))
                delay = min(delay * 2, 2.0)
                continue
            self.reconnections += 1
            logger.warning("Reconnected to the scheduler at %s", self.scheduler_address)
            return
        if not self.finished.is_set():
            logger.warning("Could not reach the scheduler at %s for %ss; shutting down",
                           self.scheduler_address, self.reconnect_timeout)
            self._close_soon()

    def _close_soon(self) -> None:
        # Not in _background: close() cancels those, and must not cancel itself.
        if self._closing is None:
            self._closing = asyncio.ensure_future(self.close())

    def _handle_scheduler_batch(self, batch: Any) -> None:
        for msg in batch if isinstance(batch, (list, tuple)) else (batch,):
            if isinstance(msg, (m.ComputeTask, m.FreeKeys, m.StealRequest, m.AcquireReplicas)):
                self.handle(msg)
            elif isinstance(msg, m.Shutdown):
                if self.shutdown_reason is None:
                    self.shutdown_reason = msg.reason
                    logger.info("The scheduler closed this worker (%s); shutting down",
                                msg.reason)
                    self._close_soon()

    async def _heartbeat_forever(self) -> None:
        import psutil

        proc = psutil.Process()
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            assert self.state is not None
            if self._bsend.closed():
                continue  # reconnecting; the new registration says we are alive
            assert self.memory is not None
            metrics = (
                ("cpu", proc.cpu_percent()),
                ("memory", float(proc.memory_info().rss)),
                ("executing", float(len(self.state.executing))),
                ("in_memory", float(len(self.data))),
                ("paused", float(self.state.paused)),
                *self.memory.metrics(),
            )
            now = time.time()
            session = self.session
            executing = tuple((key, now - start) for (run, key), start in
                              dict(self._executor.running if self._executor else {}).items()
                              if run == session)
            self._bsend.send(m.Heartbeat(self.address, 0.0, metrics, executing,
                                         self._stimulus("heartbeat")))

    async def _on_connection(self, comm: Comm) -> None:
        """Peers fetching inputs, and clients gathering, scattering or running code."""
        try:
            while True:
                msg = await comm.recv()
                if isinstance(msg, m.GetData):
                    await comm.send(await self._get_data(msg))
                elif isinstance(msg, m.PutData):
                    self._put_data(msg)
                    await comm.send(m.Reply(0, True, None))
                elif isinstance(msg, m.Request) and msg.op == "run":
                    await comm.send(await self._run(msg))
                else:
                    raise CommClosedError(f"unexpected message on the worker port: {msg!r:.200}")
        except CommClosedError:
            pass

    async def _get_data(self, msg: m.GetData) -> m.DataReply:
        """Values for a peer or client. Spilled ones are sent as their files'
        bytes, read on a thread (one hop for all of them), never unpickled."""
        store = self.data
        spilled = [key for key in msg.keys if store.is_spilled(key)]
        from_disk: dict[m.Key, m.Serialized | None] = {}
        if spilled:
            from_disk = await asyncio.to_thread(
                lambda: {key: store.read_serialized(key) for key in spilled})
        data, missing = [], []
        for key in msg.keys:
            blob = from_disk.get(key)
            if blob is None:
                try:
                    # In memory (or unspilled by a task since we looked).
                    blob = serialize(store[key])
                except KeyError:
                    missing.append(key)
                    continue
            data.append((key, blob))
        return m.DataReply(tuple(data), tuple(missing), msg.stimulus_id)

    def _put_data(self, msg: m.PutData) -> None:
        sizes = []
        for key, blob in msg.data:
            sizes.append((key, self.data.put(key, deserialize(blob))))
        self.handle(ev.DataPut(tuple(sizes), self._stimulus("put-data")))
        assert self.memory is not None
        self.memory.evict_soon()

    async def _run(self, req: m.Request) -> m.Reply:
        """client.run: call a function in this worker's process (in a thread)."""
        try:
            func, args, kwargs = deserialize(req.args["function"])  # type: ignore[misc]
            if asyncio.iscoroutinefunction(func):
                result = await func(*args, **kwargs)
            else:
                result = await asyncio.to_thread(func, *args, **kwargs)
            return m.Reply(req.request_id, True, serialize(result))
        except Exception as exc:
            return m.Reply(req.request_id, False, serialize(exc))


class _Result:
    """A task's value (or the file it was written to) and its measured size."""

    __slots__ = ("value", "nbytes", "type_name")

    def __init__(self, value: Any, nbytes: int, type_name: str) -> None:
        self.value = value
        self.nbytes = nbytes
        self.type_name = type_name


def _shutdown_reason(reply: Any) -> str:
    msgs = reply if isinstance(reply, (list, tuple)) else (reply,)
    return next((x.reason for x in msgs if isinstance(x, m.Shutdown)), "")


def _acknowledgement(reply: Any) -> m.Reply | None:
    """The scheduler's acceptance of this worker's registration, if ``reply`` has it."""
    msgs = reply if isinstance(reply, (list, tuple)) else (reply,)
    return next((x for x in msgs if isinstance(x, m.Reply) and x.ok), None)


def _worker_slot(ack: m.Reply) -> int:
    """The number the scheduler gave this worker (-1 from one that gives none)."""
    slot = ack.result.get("worker_slot", -1) if isinstance(ack.result, dict) else -1
    return slot if isinstance(slot, int) else -1

