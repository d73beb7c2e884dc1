"""A network partition, with real hosts: one network namespace per process.

The scheduler (and the client, in the same namespace), and three workers each
in their own namespace, joined by a bridge in a switch namespace. While a
computation of 0.3 s tasks runs, one worker's link is cut (``link set down``:
packets vanish, no connection is reset, exactly what a partition looks
like). The scheduler must declare that worker lost by its missed heartbeats
(``--heartbeat-timeout 3``) and the computation must complete, correctly, on
the other two.

Needs root and ``ip`` (iproute2; ``.ci/run`` installs it when missing);
otherwise the test is skipped and says why. Everything it creates is torn
down in ``finally``: processes, namespaces, and the route it added.

Recipe: /work/shared/RECIPES.md, "Several hosts on one machine". First of
all, ``unreachable 10.201.0.0/16`` in the root namespace, so that no packet
to the test's addresses can leave the machine by the default route.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from teamster.cluster.local import _read_address

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SUBNET = "10.201.0.0/16"
HEARTBEAT_TIMEOUT = 3.0
#: How often workers send heartbeats (the worker's default).
HEARTBEAT_INTERVAL = 1.0
SRC = Path(__file__).resolve().parents[2] / "src"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _why_not_supported() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs the `ip` command (Debian package iproute2; .ci/run installs it)"
    probe = f"tsprobe{os.getpid()}"
    added = _ip("netns", "add", probe, check=False)
    if added.returncode != 0:
        return f"cannot create network namespaces here: {added.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


class Network:
    """A switch namespace with a bridge, and one namespace per node on it."""

    def __init__(self) -> None:
        tag = str(os.getpid())[-6:]
        self.tag = tag
        self.switch = f"tps{tag}"
        self.namespaces: list[str] = []
        self.route_added = False
        #: node namespace -> its interface name (inside that namespace)
        self.links: dict[str, str] = {}

    def up(self) -> None:
        # Before any address exists: nothing for 10.201/16 may leave the machine.
        added = _ip("route", "add", "unreachable", SUBNET, check=False)
        if added.returncode == 0:
            self.route_added = True
        elif "File exists" not in added.stderr:
            raise RuntimeError(f"ip route add unreachable {SUBNET}: {added.stderr}")
        self._netns(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")

    def _netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self.namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def add_node(self, index: int, address: str) -> str:
        ns = f"tpn{self.tag}-{index}"
        self._netns(ns)
        node_if, switch_if = f"tp{self.tag}n{index}", f"tp{self.tag}s{index}"
        _ip("link", "add", node_if, "type", "veth", "peer", "name", switch_if)
        _ip("link", "set", node_if, "netns", ns)
        _ip("link", "set", switch_if, "netns", self.switch)
        _ip("-n", self.switch, "link", "set", switch_if, "master", "br0")
        _ip("-n", self.switch, "link", "set", switch_if, "up")
        _ip("-n", ns, "addr", "add", f"{address}/24", "dev", node_if)
        _ip("-n", ns, "link", "set", node_if, "up")
        self.links[ns] = node_if
        return ns

    def cut(self, ns: str) -> None:
        """Partition: the node's link goes down; its packets vanish, nothing is reset."""
        _ip("-n", ns, "link", "set", self.links[ns], "down")

    def down(self) -> None:
        for ns in reversed(self.namespaces):
            _ip("netns", "del", ns, check=False)  # (veth pairs go with them)
        if self.route_added:
            _ip("route", "del", "unreachable", SUBNET, check=False)


CLIENT_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from teamster import Client

    def slow_square(x):
        time.sleep(0.3)
        return x * x

    def workers(client):
        return {w["name"]: w for w in client.scheduler_info()["workers"].values()}

    def wait_until(predicate, what, timeout=60):
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                sys.exit(f"timed out waiting for {what}")
            time.sleep(0.05)

    with Client(sys.argv[1], timeout=20) as client:
        wait_until(lambda: len(workers(client)) == 3, "three workers")
        futures = client.map(slow_square, range(60))
        wait_until(lambda: workers(client)["pw0"]["executed"] >= 2, "pw0 at work")
        print("cut-pw0", flush=True)
        assert sys.stdin.readline().strip() == "cut"
        cut_at = time.monotonic()
        wait_until(lambda: "pw0" not in workers(client), "pw0 declared lost")
        print(f"lost-after {time.monotonic() - cut_at:.2f}", flush=True)
        results = client.gather(futures)
        assert results == [x * x for x in range(60)], results
        print(f"ok {sorted(workers(client))}", flush=True)
    """
)


def test_partitioned_worker_is_declared_lost_and_the_work_completes_elsewhere(tmp_path):
    reason = _why_not_supported()
    if reason is not None:
        pytest.skip(reason)
    net = Network()
    procs: list[subprocess.Popen[bytes]] = []
    # Off loopback every process must share a token (teamster refuses to
    # listen unauthenticated there); the environment hands it to all of them.
    env = dict(os.environ, TEAMSTER_TOKEN=secrets.token_urlsafe(32), PYTHONPATH=os.pathsep.join(
        [str(SRC), *([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])]))

    def run_in(ns: str, *argv: str, stdin: int | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, *argv],
                                stdout=subprocess.PIPE, stdin=stdin, env=env)
        procs.append(proc)
        return proc

    try:
        net.up()
        scheduler_ns = net.add_node(0, "10.201.0.1")
        sched = run_in(scheduler_ns, "-m", "teamster.cli", "scheduler", "--host", "10.201.0.1",
                       "--port", "0", "--heartbeat-timeout", str(HEARTBEAT_TIMEOUT))
        address = _read_address(sched, "scheduler", 30)
        worker_ns = []
        for i in range(3):
            ns = net.add_node(i + 1, f"10.201.0.{10 + i}")
            worker_ns.append(ns)
            worker = run_in(ns, "-m", "teamster.cli", "worker", address, "--name", f"pw{i}",
                            "--host", f"10.201.0.{10 + i}")
            _read_address(worker, f"worker pw{i}", 30)
        script = tmp_path / "client.py"
        script.write_text(CLIENT_SCRIPT)
        client = run_in(scheduler_ns, str(script), address, stdin=subprocess.PIPE)
        assert client.stdout is not None and client.stdin is not None
        line = client.stdout.readline().decode().strip()
        assert line == "cut-pw0", f"client said {line!r} (exit code {client.poll()})"
        net.cut(worker_ns[0])
        client.stdin.write(b"cut\n")
        client.stdin.flush()
        lost = client.stdout.readline().decode().strip()
        assert lost.startswith("lost-after "), f"client said {lost!r}"
        lost_after = float(lost.split()[1])
        # The last heartbeat arrived up to one interval (1 s) before the cut;
        # ticks come every timeout/4; the client polls. So: lost between
        # timeout - 1 s and about 1.25 timeouts after the cut (with slack).
        assert HEARTBEAT_TIMEOUT - HEARTBEAT_INTERVAL - 0.5 <= lost_after \
            <= 2 * HEARTBEAT_TIMEOUT, lost
        done = client.stdout.readline().decode().strip()
        assert done == "ok ['pw1', 'pw2']", f"client said {done!r}"
        assert client.wait(30) == 0
        print(f"partitioned worker declared lost {lost_after:.2f}s after the cut "
              f"(heartbeat timeout {HEARTBEAT_TIMEOUT}s); 60 tasks completed on the others")
    finally:
        for proc in reversed(procs):  # workers before their scheduler
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            if proc.stdin is not None:
                proc.stdin.close()
        net.down()
