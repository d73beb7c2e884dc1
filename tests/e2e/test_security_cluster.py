"""Security end to end with real processes: tokens, mutual TLS, the CLI, and
where the token lives."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from security_certs import make_ca_and_cert

from teamster import Client, LocalCluster, Security
from teamster.cluster.local import _read_address, _terminate
from teamster.errors import AuthenticationError
from teamster.runtime.comm import HandshakeError

pytestmark = pytest.mark.timeout(120)

TOKEN = "e2e-token-" + "x" * 20


def _start(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen([sys.executable, "-m", "teamster.cli", *args],
                            stdout=subprocess.PIPE, env=env)
    try:
        return proc, _read_address(proc, args[0], 30)
    except BaseException:
        _terminate(proc)
        raise


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1) as c:
        yield c


def test_local_cluster_clients_just_work_and_strangers_are_refused(cluster):
    with Client(cluster, set_as_default=False) as client:
        assert client.submit(sum, [1, 2, 3]).result() == 6
    # Same process, by address: the cluster's token is known here.
    with Client(cluster.scheduler_address, set_as_default=False) as client:
        assert client.submit(abs, -4).result() == 4
    for kwargs, expected in [({"token": "not-the-token"}, "refused this client's token"),
                             ({"security": Security()}, "requires a token")]:
        start = time.monotonic()
        with pytest.raises(AuthenticationError, match=expected) as info:
            Client(cluster.scheduler_address, set_as_default=False, timeout=20, **kwargs)
        assert time.monotonic() - start < 5, "refused at once, not after the timeout"
        assert cluster.scheduler_address in str(info.value)
        assert "TEAMSTER_TOKEN" in str(info.value)
    # The scheduler kept serving everyone else.
    with Client(cluster, set_as_default=False) as client:
        assert client.gather(client.map(lambda x: x + 1, range(50))) == list(range(1, 51))


def test_the_token_is_not_on_any_worker_command_line(cluster):
    token = cluster.security.token
    assert token and len(token) >= 32
    pids = list(cluster.worker_pids().values()) + [cluster._scheduler_proc.pid]
    for pid in pids:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert b"teamster.cli" in argv  # the right process ...
        assert token.encode() not in argv  # ... without the token in its argv
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert f"TEAMSTER_TOKEN={token}".encode() in environ.split(b"\0")


def test_cli_scheduler_and_worker_with_a_token_file(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k != "TEAMSTER_TOKEN"}
    procs = []
    try:
        sched, address = _start("scheduler", "--port", "0", "--token-file", str(token_file),
                                env=env)
        procs.append(sched)
        worker, _ = _start("worker", address, "--token-file", str(token_file), env=env)
        procs.append(worker)
        # A worker without the token is refused and exits with the reason.
        bad = subprocess.run([sys.executable, "-m", "teamster.cli", "worker", address,
                              "--connect-timeout", "20"], capture_output=True, timeout=60,
                             env={**env, "TEAMSTER_TOKEN": "wrong"})
        assert bad.returncode != 0
        assert b"refused this worker's token" in bad.stderr
        with Client(address, token=TOKEN, set_as_default=False) as client:
            assert client.submit(pow, 2, 10).result() == 1024
            assert len(client.scheduler_info()["workers"]) == 1
    finally:
        for proc in reversed(procs):
            _terminate(proc)


def test_cli_refuses_a_public_address_without_a_token():
    env = {k: v for k, v in os.environ.items() if k != "TEAMSTER_TOKEN"}
    out = subprocess.run([sys.executable, "-m", "teamster.cli", "scheduler", "--host",
                          "0.0.0.0", "--port", "0"], capture_output=True, timeout=60, env=env)
    assert out.returncode != 0
    assert b"refusing to listen on 0.0.0.0 without a token" in out.stderr
    assert b"--no-auth" in out.stderr


TLS_CLIENT_SCRIPT = textwrap.dedent(
    """
    import sys
    from teamster import Client, Security

    address, ca, cert, key = sys.argv[1:5]
    security = Security.from_env(tls_ca=ca, tls_cert=cert, tls_key=key)

    def double(x):
        return 2 * x

    with Client(address, security=security, timeout=20) as client:
        workers = sorted(client.scheduler_info()["workers"])
        assert len(workers) == 2 and all(w.startswith("tls://") for w in workers), workers
        # Inputs pinned to each worker, their sum computed on the first one:
        # one input must travel worker to worker over TLS.
        a = client.submit(double, 20, workers=[workers[0]], pure=False)
        b = client.submit(double, 1, workers=[workers[1]], pure=False)
        total = client.submit(lambda x, y: x + y, a, b, workers=[workers[0]], pure=False)
        xs = client.map(double, range(100))
        print(total.result(), sum(client.gather(xs)))
    """
)


def test_mutual_tls_end_to_end_with_real_processes(tmp_path):
    certs = make_ca_and_cert(tmp_path / "certs")
    tls = ["--tls-ca", certs.ca, "--tls-cert", certs.cert, "--tls-key", certs.key]
    env = {**os.environ, "TEAMSTER_TOKEN": TOKEN}
    procs = []
    try:
        sched, address = _start("scheduler", "--port", "0", *tls, env=env)
        procs.append(sched)
        assert address.startswith("tls://")
        for i in range(2):
            worker, worker_address = _start("worker", address, "--name", f"tls-{i}", *tls,
                                            env=env)
            procs.append(worker)
            assert worker_address.startswith("tls://")
        script = tmp_path / "client.py"
        script.write_text(TLS_CLIENT_SCRIPT)
        out = subprocess.run([sys.executable, str(script), address, certs.ca, certs.cert,
                              certs.key], capture_output=True, timeout=90, env=env)
        assert out.returncode == 0, out.stderr.decode()
        assert out.stdout.decode().split() == ["42", str(2 * sum(range(100)))]

        # Without TLS: a clear error, at once, whichever address is tried.
        with pytest.raises(ValueError, match="TLS address, but no TLS certificates"):
            Client(address, token=TOKEN, set_as_default=False)
        start = time.monotonic()
        with pytest.raises(HandshakeError, match="require TLS"):
            Client(address.replace("tls://", "tcp://"), token=TOKEN, set_as_default=False,
                   timeout=20)
        assert time.monotonic() - start < 5
        # A certificate from another CA is refused by the TLS handshake.
        rogue = make_ca_and_cert(tmp_path / "rogue", "rogue")
        with pytest.raises(HandshakeError, match="certificate verify failed"):
            Client(address, security=Security(token=TOKEN, tls_ca=rogue.ca,
                                              tls_cert=rogue.cert, tls_key=rogue.key),
                   set_as_default=False, timeout=20)
    finally:
        for proc in reversed(procs):
            _terminate(proc)


def test_local_cluster_with_tls(tmp_path):
    certs = make_ca_and_cert(tmp_path / "certs")
    security = Security(tls_ca=certs.ca, tls_cert=certs.cert, tls_key=certs.key)
    with LocalCluster(n_workers=1, threads_per_worker=1, security=security) as cluster:
        assert cluster.scheduler_address.startswith("tls://")
        assert cluster.security.token  # a token was added to the given TLS settings
        with Client(cluster, set_as_default=False) as client:
            assert client.submit(divmod, 17, 5).result() == (3, 2)


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_tls_comm_on_both_event_loops(tmp_path, loop_kind):
    """The TLS transport on either loop: a large message both ways; a peer
    with another CA's certificate is refused at the TLS handshake."""
    import asyncio

    from teamster.runtime.comm import connect, listen
    from teamster.runtime.comm.loop import new_event_loop

    certs = make_ca_and_cert(tmp_path / "certs")
    rogue = make_ca_and_cert(tmp_path / "rogue", "rogue")
    security = Security(token=TOKEN, tls_ca=certs.ca, tls_cert=certs.cert, tls_key=certs.key)

    async def echo(comm):
        while True:
            await comm.send(await comm.recv())

    async def main():
        async with await listen("tls://127.0.0.1:0", echo, handshake={"role": "worker"},
                                security=security) as listener:
            comm = await connect(listener.address, handshake={"role": "peer"},
                                 security=security)
            payload = bytes(range(256)) * 20_000  # 5 MB
            await comm.send({"data": payload})
            assert (await comm.recv())["data"] == payload
            await comm.close()
            with pytest.raises(HandshakeError, match="certificate verify failed"):
                await connect(listener.address, handshake={"role": "peer"}, timeout=10,
                              security=Security(token=TOKEN, tls_ca=rogue.ca,
                                                tls_cert=rogue.cert, tls_key=rogue.key))

    loop = new_event_loop() if loop_kind == "uvloop" else asyncio.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(main(), 60))
    finally:
        loop.close()
