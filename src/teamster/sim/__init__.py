"""teamster.sim: a discrete-event simulator around the production cores.

It drives the real ``SchedulerState`` and one real ``WorkerState`` per
simulated worker on a virtual clock, through a latency/bandwidth network
model, so what it measures (makespan / lower bound, bytes moved, scheduler
CPU per task) is the production policy's. ``teamster simulate`` is its CLI.

Modules: ``engine`` (heap and loop), ``network`` (batched streams, links),
``workers`` / ``scheduler`` / ``client`` (the shells around the cores),
``workload`` (the data model and lower bound), ``workloads`` (the library),
``metrics`` (the report), ``run`` (wiring, validation, failure reports),
``cli``.
"""

from __future__ import annotations

from typing import Any

#: Public names and the module each lives in. Imported on first use, so that
#: ``teamster.cli`` can register ``simulate`` (it imports ``teamster.sim.cli``)
#: without loading the simulator into every ``teamster worker``.
_EXPORTS = {
    "Simulation": "run",
    "SimulationError": "run",
    "run_simulation": "run",
    "WorkerSpec": "workload",
    "Workload": "workload",
    "WORKLOADS": "workloads",
    "build_workload": "workloads",
    "cluster": "workloads",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'teamster.sim' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"teamster.sim.{module}"), name)


__all__ = [
    "WORKLOADS",
    "Simulation",
    "SimulationError",
    "WorkerSpec",
    "Workload",
    "build_workload",
    "cluster",
    "run_simulation",
]
