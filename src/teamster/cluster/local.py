"""LocalCluster: a scheduler and workers on this machine.

With ``processes=True`` (the default) the scheduler and every worker are
separate processes started through the CLI, exactly as on a real cluster,
so the GIL of one never stalls another. With ``processes=False`` they share
one background event loop in this process (handy in tests and notebooks).

Every cluster has a token (a fresh random one unless ``security`` brings
its own): workers get it in their environment (``TEAMSTER_TOKEN``; never on
the command line, where ``ps`` shows it to every user), and
``Client(cluster)`` or ``Client(cluster.scheduler_address)`` in this process
pick it up without being told.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from teamster.runtime.comm.loop import new_event_loop
from teamster.security import (
    TOKEN_ENV_VAR,
    Security,
    forget_local_cluster,
    remember_local_cluster,
)

logger = logging.getLogger("teamster.cluster")

#: Seconds a process may take to print its address before we give up on it.
START_TIMEOUT = 30.0
#: Seconds scaling down may spend retiring workers (moving their unique data
#: off) before the remaining ones are stopped anyway.
RETIRE_TIMEOUT = 60.0
#: Seconds a told-to-exit process may take before it is terminated.
EXIT_TIMEOUT = 10.0


def parse_memory_limit(limit: int | float | str | None, n_workers: int) -> int:
    """Bytes per worker: an int, "300MB", "4GiB", a fraction of RAM, or "auto"."""
    if limit is None or limit == 0:
        return 0
    if isinstance(limit, str):
        if limit == "auto":
            import psutil

            return int(psutil.virtual_memory().total // max(n_workers, 1))
        from dask.utils import parse_bytes

        try:
            return int(parse_bytes(limit))
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"memory_limit={limit!r} is not a size; use bytes or a string like "
                "'300MB' or '4GiB'"
            ) from exc
    if isinstance(limit, float) and 0 < limit <= 1:
        import psutil

        return int(psutil.virtual_memory().total * limit)
    if limit < 0:
        raise ValueError(f"memory_limit must not be negative, got {limit!r}")
    return int(limit)


def _read_address(proc: subprocess.Popen[bytes], what: str, timeout: float) -> str:
    """The "... at tcp://host:port" line a teamster process prints when ready."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            proc.kill()
            raise TimeoutError(f"{what} did not start within {timeout}s")
        ready, _, _ = select.select([proc.stdout], [], [], min(remaining, 0.5))
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"{what} exited with code {proc.wait()} before it was ready")
            buf += chunk
    line = buf.split(b"\n", 1)[0].decode()
    return line.rsplit(" ", 1)[-1].strip()


class _LoopThread:
    """An event loop running in a daemon thread (for processes=False)."""

    def __init__(self) -> None:
        self.loop = new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="teamster-cluster",
                                       daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class LocalCluster:
    def __init__(
        self,
        n_workers: int | None = None,
        threads_per_worker: int | None = None,
        processes: bool = True,
        memory_limit: int | float | str | None = "auto",
        host: str = "127.0.0.1",
        scheduler_port: int = 0,
        resources: dict[str, float] | None = None,
        heartbeat_timeout: float = 60.0,
        security: Security | None = None,
    ) -> None:
        ncpu = os.cpu_count() or 1
        if n_workers is None:
            n_workers = ncpu if threads_per_worker in (None, 1) else max(1, ncpu // threads_per_worker)
        if threads_per_worker is None:
            threads_per_worker = max(1, ncpu // max(n_workers, 1))
        if n_workers < 0 or threads_per_worker < 1:
            raise ValueError(
                f"need n_workers >= 0 and threads_per_worker >= 1, got {n_workers} and "
                f"{threads_per_worker}"
            )
        self.threads_per_worker = threads_per_worker
        self.processes = processes
        self.memory_limit = parse_memory_limit(memory_limit, max(n_workers, 1))
        self.host = host
        self.resources = dict(resources or {})
        self.heartbeat_timeout = heartbeat_timeout
        security = security or Security()
        if security.token is None:
            security = security.with_token(secrets.token_urlsafe(32))
        #: The cluster's credentials; ``Client(cluster)`` uses them.
        self.security = security
        self.status = "starting"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._servers: dict[str, Any] = {}
        self._counter = 0
        self._loop: _LoopThread | None = None
        self._scheduler_proc: subprocess.Popen[bytes] | None = None
        self._scheduler: Any = None
        try:
            self.scheduler_address = self._start_scheduler(scheduler_port)
            remember_local_cluster(self.scheduler_address, self.security)
            self.scale(n_workers)
        except BaseException:
            self.close()
            raise
        self.status = "running"

    # ------------------------------------------------------------------ scheduler

    def _start_scheduler(self, port: int) -> str:
        if self.processes:
            cmd = [sys.executable, "-m", "teamster.cli", "scheduler", "--host", self.host,
                   "--port", str(port), "--heartbeat-timeout", str(self.heartbeat_timeout),
                   *self.security.tls_args()]
            self._scheduler_proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                                    env=self._child_env())
            return _read_address(self._scheduler_proc, "The scheduler", START_TIMEOUT)
        from teamster.runtime.scheduler_server import SchedulerServer

        self._loop = _LoopThread()
        server = SchedulerServer(self.host, port, heartbeat_timeout=self.heartbeat_timeout,
                                 security=self.security)
        self._scheduler = self._loop.run(server.start(), START_TIMEOUT)
        return str(self._scheduler.address)

    # -------------------------------------------------------------------- workers

    @property
    def workers(self) -> list[str]:
        """Names of the workers this cluster started and still runs."""
        return list(self._procs if self.processes else self._servers)

    def _next_name(self) -> str:
        self._counter += 1
        return f"worker-{self._counter - 1}"

    def scale(self, n: int) -> None:
        """Start or stop workers until ``n`` run (the newest stop first).

        Workers are stopped by retiring them: their results move to the
        workers that stay, so no future is lost or recomputed. A worker that
        cannot be retired (the last one holding data, when scaling to 0) is
        stopped anyway, with a warning.
        """
        if n < 0:
            raise ValueError(f"scale(n) needs n >= 0, got {n}")
        current = self.workers
        if n < len(current):
            self._retire(current[n:])
            return
        names = [self._next_name() for _ in range(n - len(current))]
        if self.processes:
            # Start all, then wait for all: startups overlap.
            procs = {name: self._spawn_worker(name) for name in names}
            for name, proc in procs.items():
                _read_address(proc, f"Worker {name}", START_TIMEOUT)
                self._procs[name] = proc
        else:
            for name in names:
                self._servers[name] = self._start_thread_worker(name)

    def _retire(self, names: list[str]) -> None:
        """Retire these workers through the scheduler, then make sure they are gone."""
        try:
            answer = self._ask_scheduler("retire_workers", {"workers": names, "close": True},
                                         RETIRE_TIMEOUT)
            refused = dict(answer["refused"])
        except Exception as exc:  # unreachable scheduler, timeout: stop them regardless
            refused = {name: f"{type(exc).__name__}: {exc}" for name in names}
        for name, why in refused.items():
            logger.warning("Could not retire %s (%s); stopping it anyway: results only it "
                           "held are lost", name, why)
        for name in names:
            if self.processes:
                proc = self._procs.pop(name)
                try:
                    proc.wait(EXIT_TIMEOUT if name not in refused else 0)
                except subprocess.TimeoutExpired:
                    pass
                _terminate(proc)
            else:
                server = self._servers.pop(name)
                assert self._loop is not None
                self._loop.run(server.close(), EXIT_TIMEOUT)

    def _ask_scheduler(self, op: str, args: dict[str, Any], timeout: float) -> Any:
        """One request/reply on a short-lived connection; the result, or RuntimeError."""
        from teamster.core import messages as m
        from teamster.runtime.comm import connect

        async def ask() -> Any:
            comm = await connect(self.scheduler_address, handshake={"role": "cluster"},
                                 timeout=START_TIMEOUT, security=self.security)
            try:
                await comm.send(m.Request(1, op, args, f"cluster-{op}"))
                return await asyncio.wait_for(comm.recv(), timeout)
            finally:
                comm.abort()

        if self._loop is not None:
            reply = self._loop.run(ask())
        else:
            # A fresh loop on a helper thread: works even when the caller's
            # thread already runs one (a notebook).
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                reply = pool.submit(asyncio.run, ask()).result()
        if not isinstance(reply, m.Reply) or not reply.ok:
            raise RuntimeError(f"the scheduler could not answer {op!r}: {reply!r:.300}")
        return reply.result

    def _spawn_worker(self, name: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "teamster.cli", "worker", self.scheduler_address,
               "--nthreads", str(self.threads_per_worker), "--name", name,
               "--host", self.host, "--memory-limit", str(self.memory_limit),
               *self.security.tls_args()]
        for res, qty in self.resources.items():
            cmd += ["--resources", f"{res}={qty}"]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, env=self._child_env())

    def _child_env(self) -> dict[str, str]:
        """This process's environment plus the token: the environment of a
        process is readable only by its user (and root), unlike its argv."""
        assert self.security.token is not None
        return {**os.environ, TOKEN_ENV_VAR: self.security.token}

    def _start_thread_worker(self, name: str) -> Any:
        from teamster.runtime.worker_server import WorkerServer

        assert self._loop is not None
        server = WorkerServer(self.scheduler_address, nthreads=self.threads_per_worker,
                              name=name, host=self.host, memory_limit=self.memory_limit,
                              resources=self.resources, security=self.security)
        return self._loop.run(server.start(), START_TIMEOUT)

    def _stop_worker(self, name: str) -> None:
        if self.processes:
            proc = self._procs.pop(name)
            _terminate(proc)
        else:
            server = self._servers.pop(name)
            assert self._loop is not None
            self._loop.run(server.close(), 10)

    def worker_pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self._procs.items()}

    def kill_worker(self, name: str) -> None:
        """SIGKILL one worker process (no goodbye, as when a host dies); for failure tests.

        It leaves ``workers``; ``scale(n)`` starts replacements with fresh names.
        """
        if not self.processes:
            raise ValueError("kill_worker needs processes=True (thread workers cannot be "
                             "killed); create the LocalCluster with processes=True")
        proc = self._procs.pop(name, None)
        if proc is None:
            raise ValueError(f"no worker named {name!r}; running: {sorted(self._procs)}")
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        if self.status == "closed":
            return
        self.status = "closed"
        if getattr(self, "scheduler_address", None):
            forget_local_cluster(self.scheduler_address)
        # The scheduler goes first and tells every worker to exit: stopping
        # workers first made the scheduler recompute each one's results on
        # the others (for a client still connected) while they were stopped.
        if self._scheduler_proc is not None:
            _terminate(self._scheduler_proc)
        if self._loop is not None and self._scheduler is not None:
            try:
                self._loop.run(self._scheduler.close(), 10)
            except Exception:
                pass
        deadline = time.monotonic() + EXIT_TIMEOUT
        for name in list(self._procs if self.processes else self._servers):
            try:
                if self.processes:
                    proc = self._procs.pop(name)
                    try:
                        proc.wait(max(deadline - time.monotonic(), 0.0))
                    except subprocess.TimeoutExpired:
                        pass
                    _terminate(proc)
                else:
                    self._stop_worker(name)
            except Exception:  # closing must finish even if one worker is wedged
                pass
        if self._loop is not None:
            self._loop.stop()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "status", "closed") != "closed":
            try:
                self.close()
            except Exception:
                pass

    def __repr__(self) -> str:
        return (f"LocalCluster({self.scheduler_address!r}, workers={len(self.workers)}, "
                f"threads_per_worker={self.threads_per_worker})")


def _terminate(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
