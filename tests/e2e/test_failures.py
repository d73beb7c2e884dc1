"""Failures end to end: real processes, real TCP, a worker killed or frozen,
a client's connection dropped.

What must hold (ARCHITECTURE.md, "Failures"): a lost worker's running and
queued tasks are rescheduled and its unique results recomputed from lineage;
lost scattered data fails its futures with a message that says so; a task
that keeps killing workers is erred as suspicious; a frozen worker is found by
its missed heartbeats; a client survives a dropped connection, and a client
that stays away longer than the grace period has its futures released.

Every wait is on a condition with a deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from teamster import Client, LocalCluster
from teamster.cluster.local import _read_address, _terminate
from teamster.errors import CancelledError, ClosedClientError, FutureLostError, KilledWorker

pytestmark = pytest.mark.timeout(180)

HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------- task functions
# (pickled by reference: the workers import this module; see the fixture below)


def inc(x):
    return x + 1


def count_calls(counter_path, x):
    path = Path(counter_path)
    calls = int(path.read_text()) if path.exists() else 0
    path.write_text(str(calls + 1))
    return x


def wait_for_file(path, x, deadline_s=120.0):
    end = time.monotonic() + deadline_s
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise TimeoutError(f"gate {path} never opened")
        time.sleep(0.005)
    return x


def kill_own_process():
    os.kill(os.getpid(), signal.SIGKILL)


def pause(x, seconds):
    time.sleep(seconds)
    return x


# ---------------------------------------------------------------------- helpers


def wait_until(predicate, timeout=60.0, what="condition"):
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.02)


def addresses_by_name(client):
    return {w["name"]: addr for addr, w in client.scheduler_info()["workers"].items()}


@pytest.fixture(autouse=True)
def importable_tasks(monkeypatch):
    """Worker processes unpickle this module's functions by reference."""
    current = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE)] + ([current] if current
                                                                      else [])))


# ------------------------------------------------------------------- lost workers


def test_killed_worker_tasks_are_rescheduled_and_unique_results_recomputed(tmp_path):
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, \
            Client(cluster, timeout=30) as client:
        names = addresses_by_name(client)
        doomed = names["worker-0"]
        counter = tmp_path / "x-runs"
        x = client.submit(count_calls, str(counter), 41, workers=[doomed],
                          allow_other_workers=True, key="x")
        assert x.result(timeout=30) == 41
        assert client.who_has([x]) == {"x": [doomed]}
        # Tasks running and queued on the doomed worker.
        gate = tmp_path / "gate"
        blocked = client.map(wait_for_file, [str(gate)] * 4, range(4), workers=[doomed],
                             allow_other_workers=True, pure=False)
        wait_until(lambda: client.scheduler_info()["workers"][doomed]["processing"] > 0,
                   what="a gated task assigned to worker-0")
        cluster.kill_worker("worker-0")
        cluster.scale(2)  # a replacement joins
        gate.touch()
        # x lived only on the dead worker: computed again from its lineage.
        y = client.submit(inc, x)
        assert y.result(timeout=60) == 42
        assert x.result(timeout=60) == 41
        assert client.gather(blocked) == [0, 1, 2, 3]
        assert counter.read_text() == "2"
        assert doomed not in client.scheduler_info()["workers"]


def test_lost_scattered_data_fails_its_futures_with_a_clear_message(tmp_path):
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, \
            Client(cluster, timeout=30) as client:
        doomed = addresses_by_name(client)["worker-0"]
        [data] = client.scatter([10], workers=[doomed])
        assert client.submit(inc, data).result(timeout=30) == 11
        cluster.kill_worker("worker-0")
        with pytest.raises(FutureLostError, match="scattered, not computed"):
            data.result(timeout=60)
        # A dependent submitted afterwards fails with the same diagnosis.
        with pytest.raises(FutureLostError, match="scatter it again"):
            client.submit(inc, data, key="after-loss").result(timeout=60)
        # The cluster is fine otherwise.
        assert client.submit(inc, 1).result(timeout=30) == 2


def test_task_that_kills_three_workers_is_erred_as_suspicious():
    # It kills its process the moment it starts. Its first start notice rides
    # a batch and may die with the process (then that death is not held
    # against it); every later run is announced before it starts, so it is
    # failed after three or four deaths, never retried for ever.
    with LocalCluster(n_workers=5, threads_per_worker=1) as cluster, \
            Client(cluster, timeout=30) as client:
        killer = client.submit(kill_own_process, pure=False)
        with pytest.raises(KilledWorker, match=r"running on 3 workers that died") as info:
            killer.result(timeout=120)
        assert "may be what kills them" in str(info.value)
        assert len(client.scheduler_info()["workers"]) in (1, 2)
        assert client.submit(inc, 1).result(timeout=30) == 2


def test_frozen_worker_is_declared_lost_by_missed_heartbeats_and_rejoins_when_thawed():
    with LocalCluster(n_workers=2, threads_per_worker=1, heartbeat_timeout=2) as cluster, \
            Client(cluster, timeout=30) as client:
        frozen = addresses_by_name(client)["worker-0"]
        pid = cluster.worker_pids()["worker-0"]
        futures = client.map(pause, range(40), [0.05] * 40)
        wait_until(lambda: client.scheduler_info()["workers"][frozen]["executed"] > 0,
                   what="worker-0 running tasks")
        os.kill(pid, signal.SIGSTOP)  # alive, connected, silent
        try:
            start = time.monotonic()
            wait_until(lambda: frozen not in client.scheduler_info()["workers"], timeout=30,
                       what="the frozen worker declared lost")
            declared_after = time.monotonic() - start
            assert client.gather(futures) == list(range(40))
        finally:
            os.kill(pid, signal.SIGCONT)
        # Thawed, it finds its connection closed, starts over and registers again.
        wait_until(lambda: frozen in client.scheduler_info()["workers"], timeout=30,
                   what="the thawed worker re-registered")
        assert client.submit(inc, 5, workers=[frozen]).result(timeout=30) == 6
        print(f"frozen worker declared lost {declared_after:.1f}s after SIGSTOP "
              "(heartbeat timeout 2s)")


# ------------------------------------------------------------------------ clients


def test_client_reconnects_after_its_connection_drops(tmp_path):
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, \
            Client(cluster, timeout=30) as client:
        done = client.submit(inc, 1)
        assert done.result(timeout=30) == 2
        gate = tmp_path / "gate"
        running = client.submit(wait_for_file, str(gate), 5)
        wait_until(lambda: client.scheduler_info()["tasks"].get("processing"),
                   what="the gated task running")
        client._loop.call_soon(client._comm.abort)  # the connection drops
        during = client.submit(inc, 10)  # queued while reconnecting
        gate.touch()  # running's result is reported while the client may be away
        assert running.result(timeout=30) == 5
        assert during.result(timeout=30) == 11
        assert done.result(timeout=30) == 2
        assert client.reconnections == 1
        # The scheduler kept the client (no grace period expired): its keys remain.
        assert client.who_has([done]) != {}


@pytest.fixture
def cli_cluster():
    """Scheduler with a 1 s client grace period, two workers; all processes."""
    procs = []

    def start(*args):
        proc = subprocess.Popen([sys.executable, "-m", "teamster.cli", *args],
                                stdout=subprocess.PIPE)
        procs.append(proc)
        return _read_address(proc, args[0], 30)

    try:
        address = start("scheduler", "--port", "0", "--client-grace", "1")
        for i in range(2):
            start("worker", address, "--name", f"w{i}")
        yield address
    finally:
        for proc in reversed(procs):
            _terminate(proc)


def test_submission_lost_with_the_connection_is_sent_again():
    with LocalCluster(n_workers=1, threads_per_worker=1) as cluster, \
            Client(cluster, timeout=30) as client:
        # Aborting right after the submit drops it from the send buffer.
        def submit_and_drop():
            future = client.submit(inc, 41, key="resent")
            client._loop.drain_now()
            client._comm.abort()
            return future

        future = client._loop.run(_call(submit_and_drop))
        assert future.result(timeout=30) == 42
        assert client.reconnections == 1


async def _call(fn):
    return fn()


def test_client_away_longer_than_the_grace_period_loses_its_futures_clearly(cli_cluster):
    with Client(cli_cluster, timeout=2) as observer, \
            Client(cli_cluster, timeout=2, set_as_default=False) as client:
        kept = client.submit(inc, 1)
        assert kept.result(timeout=30) == 2
        # Keep the client away: it can only reach a closed port meanwhile.
        client.scheduler_address = "tcp://127.0.0.1:9"
        client._loop.call_soon(client._comm.abort)
        # After the grace period the scheduler released the client's futures.
        wait_until(lambda: not observer.scheduler_info()["tasks"], timeout=30,
                   what="the disconnected client's keys released")
        client.scheduler_address = cli_cluster
        with pytest.raises(FutureLostError, match="no longer knows"):
            kept.result(timeout=30)
        wait_until(lambda: client.reconnections == 1, what="the client reconnected")
        # Work submitted afresh runs.
        assert client.submit(inc, 2).result(timeout=30) == 3


def test_disconnected_client_process_has_its_futures_released_after_the_grace_period(
        cli_cluster, tmp_path):
    script = (
        "import sys, time\n"
        "from teamster import Client\n"
        "c = Client(sys.argv[1], timeout=10)\n"
        "fs = c.map(str, range(50))\n"
        "c.gather(fs)\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    with Client(cli_cluster, timeout=10) as observer:
        proc = subprocess.Popen([sys.executable, "-c", script, cli_cluster],
                                stdout=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == b"ready"
            assert observer.scheduler_info()["tasks"].get("memory") == 50
            proc.kill()
            wait_until(lambda: not observer.scheduler_info()["tasks"], timeout=30,
                       what="the killed client's 50 keys released")
        finally:
            proc.kill()
            proc.wait()


def test_client_and_worker_give_up_once_the_scheduler_stays_gone():
    sched = subprocess.Popen([sys.executable, "-m", "teamster.cli", "scheduler", "--port", "0"],
                             stdout=subprocess.PIPE)
    worker = None
    try:
        address = _read_address(sched, "scheduler", 30)
        worker = subprocess.Popen([sys.executable, "-m", "teamster.cli", "worker", address,
                                   "--reconnect-timeout", "1"], stdout=subprocess.PIPE)
        _read_address(worker, "worker", 30)
        with Client(address, timeout=2, reconnect_timeout=1) as client:
            running = client.submit(pause, 1, 60)
            wait_until(lambda: client.scheduler_info()["tasks"].get("processing"),
                       what="the task running")
            sched.kill()
            with pytest.raises(CancelledError, match="scheduler-connection-lost"):
                running.result(timeout=30)
            assert client.status == "closing"
        assert worker.wait(timeout=30) == 0  # it tried for 1 s, then exited
    finally:
        for proc in (worker, sched):
            if proc is not None:
                _terminate(proc)


def test_after_a_scheduler_restart_pending_work_is_resubmitted_and_finished_work_fails_clearly(
        tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def start_scheduler():
        proc = subprocess.Popen([sys.executable, "-m", "teamster.cli", "scheduler",
                                 "--port", str(port)], stdout=subprocess.PIPE)
        return proc, _read_address(proc, "scheduler", 30)

    sched, address = start_scheduler()
    procs = [sched]
    try:
        worker = subprocess.Popen([sys.executable, "-m", "teamster.cli", "worker", address,
                                   "--name", "survivor"], stdout=subprocess.PIPE)
        procs.append(worker)
        _read_address(worker, "worker", 30)
        with Client(address, timeout=5, reconnect_timeout=60) as client:
            finished = client.submit(inc, 1)
            assert finished.result(timeout=30) == 2
            gate = tmp_path / "gate"
            pending = client.submit(wait_for_file, str(gate), 7)
            wait_until(lambda: client.scheduler_info()["tasks"].get("processing"),
                       what="the gated task running")
            sched.kill()
            sched.wait()
            sched, _ = start_scheduler()  # a new scheduler, same address, knows nothing
            procs.append(sched)
            gate.touch()
            # The client sent the pending graph again; the worker re-registered.
            assert pending.result(timeout=60) == 7
            with pytest.raises(FutureLostError, match="no longer knows"):
                finished.result(timeout=30)
            assert [w["name"] for w in client.scheduler_info()["workers"].values()] == \
                ["survivor"]
    finally:
        for proc in reversed(procs):
            _terminate(proc)


def test_a_failing_tick_does_not_stop_the_scheduler_ticking():
    """The ticker drives failure detection; one bad Tick must not end it silently."""
    import asyncio

    from teamster.core.scheduler.events import Tick
    from teamster.runtime.scheduler_server import SchedulerServer

    ticks = []

    class FirstTickFails:
        """The server's state behind a wrapper whose first Tick raises. (Not a
        patch of ``handle`` on the state itself: the compiled core's classes
        take no instance attributes, so that ran only against the sources.)"""

        def __init__(self, state):
            self._state = state

        def __getattr__(self, name):
            return getattr(self._state, name)

        def handle(self, event):
            if isinstance(event, Tick):
                ticks.append(event)
                if len(ticks) == 1:
                    raise RuntimeError("a broken tick")
            return self._state.handle(event)

    async def main():
        server = SchedulerServer(heartbeat_timeout=0.2, validate=True)
        server.state = FirstTickFails(server.state)
        async with server:
            end = time.monotonic() + 10  # (ticks come every 0.05 s)
            while len(ticks) < 3 and time.monotonic() < end:
                await asyncio.sleep(0.01)
        return len(ticks)

    assert asyncio.run(main()) >= 3


def test_a_read_only_request_is_asked_again_after_the_connection_drops():
    with LocalCluster(n_workers=1, threads_per_worker=1) as cluster, \
            Client(cluster, timeout=30) as client:
        x = client.submit(inc, 1, key="x")
        assert x.result(timeout=30) == 2

        async def ask_then_drop(op, args):
            asked = asyncio.ensure_future(client._request(op, args))
            await asyncio.sleep(0)  # (a yield, not a wait: the request is now sent)
            client._comm.abort()  # its reply will never come on this connection
            return await asked

        # Read-only: asked again once reconnected, and answered.
        info = client._loop.run(ask_then_drop("scheduler_info", {}))
        assert len(info["workers"]) == 1
        assert client.reconnections == 1
        who_has = client._loop.run(ask_then_drop("who_has", {"keys": ["x"]}))
        assert list(who_has) == ["x"] and who_has["x"]
        assert client.reconnections == 2
        # Not read-only (it may have taken effect): the caller hears of the drop.
        with pytest.raises(ClosedClientError, match="lost the scheduler connection"):
            client._loop.run(ask_then_drop("retire_workers",
                                           {"workers": ["nobody"], "close": False}))
        assert client.scheduler_info()["workers"]


def test_closing_the_scheduler_fails_a_clients_futures_at_once(tmp_path, caplog):
    # Nothing to reconnect to: no 30 s of reconnection attempts and no
    # warning, but an immediate, explicit failure of what waits.
    cluster = LocalCluster(n_workers=1, threads_per_worker=1)
    try:
        client = Client(cluster, timeout=30, reconnect_timeout=300)
        running = client.submit(wait_for_file, str(tmp_path / "never"), 1)
        wait_until(lambda: client.scheduler_info()["tasks"].get("processing"),
                   what="the task running")
    finally:
        with caplog.at_level("INFO", "teamster"):
            cluster.close()
    with pytest.raises(CancelledError, match="scheduler-closed"):
        running.result(timeout=60)  # (reconnecting would have taken 300 s)
    with pytest.raises(ClosedClientError, match="closing"):
        client.submit(inc, 1)
    assert client.reconnections == 0
    assert "lost its scheduler" not in caplog.text
    client.close()
