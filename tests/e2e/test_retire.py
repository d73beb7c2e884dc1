"""Graceful retirement end to end: real scheduler and worker processes.

Each task counts its executions in its own file (file_counters.py), so a
result recomputed after its worker left shows up as a count of 2. Nothing
sleeps to synchronise: waits are conditions polled against deadlines.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from file_counters import count_calls
from waiting import wait_for

from teamster import Client, LocalCluster, wait

pytestmark = pytest.mark.timeout(120)

HERE = Path(__file__).resolve().parent
N = 50


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalCluster]:
    # The workers import count_calls by reference from this folder.
    current = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE)] + ([current] if current else [])))
    with LocalCluster(n_workers=3, threads_per_worker=1, memory_limit=None) as c:
        yield c


def compute_spread(client: Client, tmp_path: Path) -> list[Any]:
    """N counted results, spread over the workers (each worker holds some)."""
    futures = [client.submit(count_calls, str(tmp_path / f"count-{i}"), i, pure=False)
               for i in range(N)]
    wait(futures)
    holders = {w for ws in client.who_has(futures).values() for w in ws}
    assert len(holders) == 3, f"results on {len(holders)} workers only; the test needs 3"
    return futures


def executions(tmp_path: Path) -> list[int]:
    return [int((tmp_path / f"count-{i}").read_text()) for i in range(N)]


def test_retiring_a_worker_keeps_every_result_without_recomputing(
        cluster: LocalCluster, tmp_path: Path) -> None:
    procs = dict(cluster._procs)
    with Client(cluster, timeout=30) as client:
        futures = compute_spread(client, tmp_path)
        info = client.scheduler_info()["workers"]
        by_name = {w["name"]: a for a, w in info.items()}
        # The worker holding the most results leaves.
        counts = {a: 0 for a in info}
        for holders in client.who_has(futures).values():
            for a in holders:
                counts[a] += 1
        address = max(counts, key=lambda a: counts[a])
        name = next(n for n, a in by_name.items() if a == address)

        retired = client.retire_workers([name])

        assert list(retired) == [address]
        assert retired[address]["name"] == name
        assert retired[address]["keys_moved"] >= counts[address] > 0
        assert procs[name].wait(10) == 0
        assert address not in client.scheduler_info()["workers"]
        assert client.gather(futures) == list(range(N))
        assert all(address not in holders for holders in client.who_has(futures).values())
        assert executions(tmp_path) == [1] * N
        # The two that stay still compute.
        assert client.submit(count_calls, str(tmp_path / "after"), 7).result() == 7


def test_retire_refusals_are_clear_errors(cluster: LocalCluster, tmp_path: Path) -> None:
    with Client(cluster, timeout=30) as client:
        with pytest.raises(RuntimeError, match="no worker 'nobody' is connected"):
            client.retire_workers(["nobody"])
        with pytest.raises(ValueError, match="needs workers="):
            client.retire_workers()
        futures = compute_spread(client, tmp_path)
        with pytest.raises(RuntimeError, match="cannot retire the last worker holding data"):
            client.retire_workers(cluster.workers)
        # Refused workers are back in service; data is intact.
        assert client.gather(futures) == list(range(N))
        assert executions(tmp_path) == [1] * N


def test_scale_down_retires_workers_and_keeps_all_data(
        cluster: LocalCluster, tmp_path: Path) -> None:
    procs = dict(cluster._procs)
    with Client(cluster, timeout=30) as client:
        futures = compute_spread(client, tmp_path)
        cluster.scale(1)
        assert cluster.workers == ["worker-0"]
        assert [procs[n].wait(10) for n in ("worker-1", "worker-2")] == [0, 0]
        wait_for(lambda: len(client.scheduler_info()["workers"]) == 1, "one worker left")
        assert client.gather(futures) == list(range(N))
        assert executions(tmp_path) == [1] * N


def test_closing_client_and_cluster_is_clean(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    current = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE)] + ([current] if current else [])))
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, memory_limit=None)
    procs: list[subprocess.Popen[bytes]] = [*cluster._procs.values()]
    assert cluster._scheduler_proc is not None
    procs.append(cluster._scheduler_proc)
    client = Client(cluster, timeout=30)
    futures = [client.submit(count_calls, str(tmp_path / f"count-{i}"), i, pure=False)
               for i in range(N)]
    assert client.gather(futures) == list(range(N))
    # The cluster closes while the client still holds every result: nothing
    # may be recomputed on the workers still up as the others stop.
    cluster.close()
    client.close()
    assert [p.poll() for p in procs] == [0] * len(procs)
    assert executions(tmp_path) == [1] * N
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert "Lost the scheduler" not in err


def test_scale_down_of_an_in_process_cluster_retires_too(tmp_path: Path) -> None:
    with LocalCluster(n_workers=3, threads_per_worker=1, processes=False,
                      memory_limit=None) as cluster, Client(cluster, timeout=30) as client:
        futures = compute_spread(client, tmp_path)
        cluster.scale(1)
        assert cluster.workers == ["worker-0"]
        assert len(client.scheduler_info()["workers"]) == 1
        assert client.gather(futures) == list(range(N))
        assert executions(tmp_path) == [1] * N


def test_a_worker_told_to_close_closes_completely() -> None:
    """The close a worker starts itself (Shutdown, lost scheduler) runs to its
    end: it used to cancel itself half-way, leaving its listener (and spill
    directory) behind in a process that kept serving."""
    import asyncio

    from teamster.runtime.comm import connect
    from teamster.runtime.scheduler_server import SchedulerServer
    from teamster.runtime.worker_server import WorkerServer

    async def main() -> tuple[str | None, bool]:
        scheduler = await SchedulerServer().start()
        worker = await WorkerServer(scheduler.address).start()
        await scheduler.close()
        await asyncio.wait_for(worker.finished.wait(), 10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                comm = await connect(worker.address, handshake={"role": "peer"}, timeout=1)
            except (OSError, Exception):
                return worker.shutdown_reason, True  # nothing listens any more
            comm.abort()
            await asyncio.sleep(0.05)
        return worker.shutdown_reason, False

    reason, listener_closed = asyncio.run(main())
    assert reason == "the scheduler closed"
    assert listener_closed
