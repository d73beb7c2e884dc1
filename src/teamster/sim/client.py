"""The simulated client: submits the workload, waits for it, releases it.

At t=0 it registers, scatters the workload's data (each value is put into
its holders' stores, then one ``ScatteredData`` tells the scheduler, as
``Client.scatter`` does), and sends the whole graph as one ``UpdateGraph``
wanting the workload's wanted keys, with the workload's list order as the
priority (what dask.order gives a real client). When every wanted key has
been reported in memory, it releases everything it holds (``ReleaseKeys``),
so the end of a run also checks that the cluster forgets it all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from teamster.core import messages as m
from teamster.sim.network import Stream

if TYPE_CHECKING:
    from teamster.sim.run import Simulation

CLIENT_ID = "sim-client"
#: The run_spec every simulated task carries: the worker shell looks up the
#: task's duration and output size by key, so no callable is needed.
RUN_SPEC = m.Serialized(b"sim")

_WANTED, _DONE = 1, 2


class SimClient:
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        net = sim.network
        self.to_scheduler: Stream = net.stream("client", "scheduler", sim.scheduler.receive)
        self.from_scheduler: Stream = net.stream("scheduler", "client", self.receive)
        n = len(sim.workload.keys)
        #: Per key index: 0 not wanted by the graph, 1 wanted, 2 reported in memory.
        self._wanted = bytearray(n)
        for i in sim.workload.wanted:
            self._wanted[i] = _WANTED
        self.n_wanted = len(sim.workload.wanted)
        self.n_done = 0
        self.erred: dict[m.Key, str] = {}
        self.cancelled: list[m.Key] = []
        #: Virtual time the last wanted key was reported to the client.
        self.done_at: float | None = None
        self.released = False

    def is_wanted(self, key: m.Key) -> bool:
        i = self.sim.workload.index.get(key)
        return i is not None and self._wanted[i] != 0

    # ---------------------------------------------------------------- submit

    def submit(self, _: Any = None) -> None:
        sim = self.sim
        w = sim.workload
        now = sim.engine.now
        send = self.to_scheduler.send
        send(m.RegisterClient(CLIENT_ID, now, "client-register"))
        if w.scattered:
            who_has = []
            for i, holders in sorted(w.scattered.items()):
                addresses = []
                for h in holders:
                    ws = sim.workers[f"sim://{w.workers[h].name}"]
                    ws.put_scattered(w.keys[i], w.nbytes[i])
                    addresses.append(ws.address)
                who_has.append((w.keys[i], tuple(addresses), w.nbytes[i]))
            send(m.ScatteredData(CLIENT_ID, tuple(who_has), "client-scatter"))
        keys = w.keys
        deps = w.deps
        scattered = w.scattered
        specs = tuple(
            m.TaskSpec(keys[i], RUN_SPEC, tuple([keys[j] for j in deps[i]]), (0, i))
            for i in range(len(keys)) if i not in scattered
        )
        wanted = tuple(keys[i] for i in w.wanted)
        send(m.UpdateGraph(CLIENT_ID, specs, wanted, now, "client-update-graph"))

    # --------------------------------------------------------------- receive

    def receive(self, msg: Any) -> None:
        sim = self.sim
        sim.engine.trace("client", type(msg).__name__, msg.key)
        kind = type(msg)
        i = sim.workload.index.get(msg.key)
        if i is None or self._wanted[i] == 0:
            return  # e.g. a scattered key, wanted by the scatter itself
        if kind is m.KeyInMemory:
            if self._wanted[i] == _WANTED:
                self._wanted[i] = _DONE
                self.n_done += 1
        elif kind is m.KeyErred:
            self.erred[msg.key] = msg.exception_text
        elif kind is m.KeyCancelled:
            self.cancelled.append(msg.key)
        if self.done_at is None and self.n_done + len(self.erred) >= self.n_wanted:
            self.finish()

    def finish(self) -> None:
        """Everything wanted arrived: drop all futures, as a client leaving would."""
        sim = self.sim
        self.done_at = sim.engine.now
        w = sim.workload
        keys = tuple(w.keys[i] for i in w.wanted) + tuple(w.keys[i] for i in sorted(w.scattered))
        self.to_scheduler.send(m.ReleaseKeys(CLIENT_ID, keys, "client-release"))
        self.released = True
