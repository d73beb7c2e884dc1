"""Worker memory end to end: spill to disk, pause and resume, a full disk.

Real scheduler and worker processes, a client in this process. Task
functions are numpy's and the standard library's, so the workers import
them by reference. Nothing sleeps to synchronise: every wait is a condition
polled against a deadline.
"""

from __future__ import annotations

import operator
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from waiting import wait_for

from teamster import Client, LocalCluster
from teamster.cluster.local import _read_address, _terminate

pytestmark = pytest.mark.timeout(180)


def worker_info(client: Client, name: str) -> dict[str, Any]:
    for info in client.scheduler_info()["workers"].values():
        if info["name"] == name:
            return info
    raise AssertionError(f"no worker named {name!r}")


def metric(client: Client, name: str, key: str) -> float:
    return float(worker_info(client, name)["metrics"].get(key, 0.0))


# ---------------------------------------------------------------- processes


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "teamster.cli", "scheduler", "--port", "0"],
                            stdout=subprocess.PIPE)
    try:
        yield _read_address(proc, "scheduler", 30)
    finally:
        _terminate(proc)


@pytest.fixture
def start_worker(scheduler: str) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, *flags: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "teamster.cli", "worker", scheduler, "--name", name, *flags],
            stdout=subprocess.PIPE)
        procs.append(proc)
        _read_address(proc, f"worker {name}", 30)
        return proc

    try:
        yield start
    finally:
        for proc in procs:
            _terminate(proc)
        # The next test shares the scheduler: it must not see these workers.
        with Client(scheduler, timeout=30) as client:
            wait_for(lambda: not client.scheduler_info()["workers"],
                     "the scheduler to drop this test's workers")


# -------------------------------------------------------------------- tests


@pytest.mark.slow
def test_data_three_times_the_memory_limit_completes_by_spilling() -> None:
    n_chunks, chunk = 48, 3_125_000  # 48 int64 chunks of 25 MB: 1.2 GB
    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="200MB") as cluster, \
            Client(cluster, timeout=60) as client:
        starts = [i * chunk for i in range(n_chunks)]
        chunks = client.map(np.arange, starts, [s + chunk for s in starts])
        sums = client.map(np.sum, chunks)
        total = client.submit(sum, sums)
        n = n_chunks * chunk
        assert total.result(timeout=150) == n * (n - 1) // 2
        # Every chunk is still held (its future lives), and each is exact.
        firsts = client.gather(client.map(operator.itemgetter(0), chunks))
        assert firsts == starts
        names = [info["name"] for info in client.scheduler_info()["workers"].values()]
        assert sorted(names) == ["worker-0", "worker-1"]
        spilled = wait_for(
            lambda: sum(metric(client, name, "spilled_total") for name in names),
            "a heartbeat reporting spilled bytes")
        held = sum(metric(client, name, "managed") + metric(client, name, "spilled")
                   for name in names)
        print(f"\n1.2 GB of chunks on 2 workers of 200 MB: {spilled / 1e6:.0f} MB spilled "
              f"in total; {held / 1e6:.0f} MB held now (chunks and fetched replicas)")
        assert spilled >= n_chunks * chunk * 8 - 2 * 200e6
        assert all(proc.poll() is None for proc in cluster._procs.values())


def test_a_worker_over_its_pause_fraction_starts_nothing_until_memory_is_freed(
    scheduler: str, start_worker: Callable[..., subprocess.Popen[bytes]]
) -> None:
    # Spilling off: only pausing can relieve this worker (pause at 400 MB).
    start_worker("pauser", "--memory-limit", "800MB", "--memory-target", "0",
                 "--memory-spill", "0", "--memory-pause", "0.5")
    with Client(scheduler, timeout=30) as client:
        big = client.submit(np.ones, 60_000_000, pure=False)  # 480 MB, every page written
        wait_for(big.done, "the big value")  # (not fetched: it stays on the worker)
        assert big.status == "finished"
        wait_for(lambda: worker_info(client, "pauser")["status"] == "paused", "the pause")
        small = client.submit(operator.add, 1, 2)
        wait_for(lambda: client.scheduler_info()["tasks"].get("queued") == 1,
                 "the new task to wait in the scheduler's queue")
        assert not small.done()
        assert worker_info(client, "pauser")["processing"] == 0
        big.release()
        assert small.result(timeout=30) == 3
        assert worker_info(client, "pauser")["status"] == "running"


def test_peers_fetch_spilled_values_correctly(
    scheduler: str, start_worker: Callable[..., subprocess.Popen[bytes]]
) -> None:
    # The holder keeps at most 120 MB in memory (target 0.6 of 200 MB) and
    # spills only by that rule; the fetcher has no limit.
    start_worker("holder", "--memory-limit", "200MB", "--memory-spill", "0",
                 "--memory-pause", "0")
    start_worker("fetcher")
    n_chunks, chunk = 6, 3_750_000  # 30 MB each: at least two are on disk
    with Client(scheduler, timeout=30) as client:
        starts = [i * chunk for i in range(n_chunks)]
        chunks = client.map(np.arange, starts, [s + chunk for s in starts],
                            workers=["holder"])
        client.gather(client.map(len, chunks, workers=["holder"]))
        wait_for(lambda: metric(client, "holder", "spilled_keys") >= 2,
                 "the holder to report spilled values")
        sums = client.gather(client.map(np.sum, chunks, workers=["fetcher"]))
        assert sums == [(2 * s + chunk - 1) * chunk // 2 for s in starts]
        # The fetched copies are exact, array for array.
        copies = client.gather(client.map(np.copy, chunks, workers=["fetcher"]))
        for s, copy in zip(starts, copies, strict=True):
            np.testing.assert_array_equal(copy, np.arange(s, s + chunk))


def test_a_result_that_fits_neither_memory_nor_disk_errs_and_the_worker_lives_on(
    scheduler: str, start_worker: Callable[..., subprocess.Popen[bytes]], tiny_disk: Path
) -> None:
    # Target 0.6 of 100 MB: an 80 MB result must go to disk, which holds 1 MiB.
    start_worker("full-disk", "--memory-limit", "100MB", "--memory-spill", "0",
                 "--memory-pause", "0", "--local-directory", str(tiny_disk))
    with Client(scheduler, timeout=30) as client:
        big = client.submit(np.ones, 10_000_000, workers=["full-disk"])
        with pytest.raises(OSError) as info:
            big.result(timeout=60)
        text = str(info.value)
        assert "worker full-disk could not store the result of" in text
        assert "No space left on device" in text and str(tiny_disk) in text
        assert "free disk space there or raise memory_limit" in text
        assert client.submit(operator.add, 2, 3, workers=["full-disk"]).result(timeout=30) == 5
