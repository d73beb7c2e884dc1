"""A cluster started from the command line, used by a client in another process,
and a scheduler port that meets garbage."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest

from teamster.cluster.local import _read_address, _terminate

pytestmark = pytest.mark.timeout(120)


def _start(*args: str) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen([sys.executable, "-m", "teamster.cli", *args], stdout=subprocess.PIPE)
    return proc, _read_address(proc, " ".join(args[:1]), 30)


@pytest.fixture
def cli_cluster():
    procs = []
    try:
        sched, address = _start("scheduler", "--port", "0")
        procs.append(sched)
        for i in range(3):
            worker, _ = _start("worker", address, "--nthreads", "2", "--name", f"cli-{i}")
            procs.append(worker)
        yield address
    finally:
        for proc in reversed(procs):
            _terminate(proc)


CLIENT_SCRIPT = textwrap.dedent(
    """
    import sys
    from teamster import Client

    def inc(x):
        return x + 1

    def add(a, b):
        return a + b

    with Client(sys.argv[1], timeout=10) as client:
        info = client.scheduler_info()["workers"]
        xs = client.map(inc, range(300))
        pairs = [client.submit(add, xs[i], xs[i + 1]) for i in range(0, 300, 2)]
        total = client.submit(sum, pairs)
        print(len(info), sorted(w["nthreads"] for w in info.values()), total.result())
    """
)


def test_cli_scheduler_three_workers_and_a_client_in_another_process(cli_cluster, tmp_path):
    script = tmp_path / "client.py"
    script.write_text(CLIENT_SCRIPT)
    out = subprocess.run([sys.executable, str(script), cli_cluster], capture_output=True,
                         timeout=60, env=dict(os.environ))
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().split() == ["3", "[2,", "2,", "2]", str(sum(range(1, 301)))]


def _host_port(address: str) -> tuple[str, int]:
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    return host, int(port)


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\xff" * 64,  # absurd frame count and lengths
        (1).to_bytes(8, "little") + (5).to_bytes(8, "little") + b"\xc1\xc1\xc1\xc1\xc1",
        os.urandom(4096),
    ],
    ids=["http", "huge-lengths", "bad-msgpack", "random"],
)
def test_garbage_on_the_scheduler_port_closes_only_that_connection(cli_cluster, garbage):
    from teamster import Client

    with Client(cli_cluster, timeout=10) as client:
        before = client.submit(sum, [1, 2, 3], pure=False)
        with socket.create_connection(_host_port(cli_cluster), timeout=10) as sock:
            sock.sendall(garbage)
            sock.settimeout(10)
            # The scheduler sends its handshake, then closes on our garbage.
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        assert before.result(timeout=30) == 6
        after = client.map(lambda x: x * 2, range(100))
        assert client.gather(after) == [x * 2 for x in range(100)]
