"""`teamster scheduler | worker | demo | simulate`: the command line.

Imports stay inside the subcommands so that `teamster worker` loads only
what a worker needs and registers quickly.

Credentials: the token comes from ``--token-file PATH`` or the
``TEAMSTER_TOKEN`` environment variable, never from a flag (``ps`` shows
every process's arguments to every user). A scheduler or worker without a
token refuses to listen on a non-loopback address unless ``--no-auth`` says
that is intended, and warns on loopback (any local user could run code as
this user). See docs/security.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

logger = logging.getLogger("teamster.cli")


def _serve(server: Any, label: str) -> None:
    """Start a server, print its address (parents read it), run until signalled."""
    from teamster.runtime.comm.loop import run

    async def main() -> None:
        await server.start()
        print(f"{label} at {server.address}", flush=True)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        done = getattr(server, "finished", None) or getattr(server, "closed", None)
        waiters = [asyncio.ensure_future(stop.wait())]
        if done is not None:
            waiters.append(asyncio.ensure_future(done.wait()))
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
        await server.close()

    run(main())


def _security(args: argparse.Namespace, what: str) -> Any:
    """The Security from the credential flags; exits with a clear message if unusable."""
    import os

    from teamster.security import TOKEN_ENV_VAR, Security, is_loopback_host, read_token_file

    try:
        if args.token_file is not None:
            token = read_token_file(args.token_file)
            mode = os.stat(args.token_file).st_mode
            if mode & 0o077:
                logger.warning("The token file %s is readable by other users (mode %o); "
                               "chmod 600 it", args.token_file, mode & 0o777)
        else:
            token = os.environ.get(TOKEN_ENV_VAR) or None
        if token is not None and args.no_auth:
            raise ValueError(f"--no-auth was given, but so was a token (--token-file or "
                             f"{TOKEN_ENV_VAR}); drop one of them")
        if args.tls_ca is not None and args.tls_cert is None:
            raise ValueError("--tls-ca needs --tls-cert and --tls-key too: this process "
                             "listens, and a TLS listener needs its own certificate")
        security = Security(token=token, tls_cert=args.tls_cert, tls_key=args.tls_key,
                            tls_ca=args.tls_ca)
    except (ValueError, OSError) as exc:
        raise SystemExit(f"teamster {what}: {exc}") from None
    if token is None and not args.no_auth:
        if not is_loopback_host(args.host):
            raise SystemExit(
                f"teamster {what}: refusing to listen on {args.host} without a token: anyone "
                "who can reach the port could run code as this user. Give a token with "
                f"--token-file PATH or {TOKEN_ENV_VAR} (generate one with: python -c "
                "'import secrets; print(secrets.token_urlsafe(32))'), or pass --no-auth if "
                "the network is trusted")
        logger.warning("No token (--token-file or %s): every local user can connect to this "
                       "%s and run code as this user", TOKEN_ENV_VAR, what)
    return security


def _scheduler(args: argparse.Namespace) -> None:
    from teamster.runtime.scheduler_server import SchedulerServer

    security = _security(args, "scheduler")
    try:
        server = SchedulerServer(args.host, args.port, heartbeat_timeout=args.heartbeat_timeout,
                                 client_grace=args.client_grace, security=security)
    except ValueError as exc:
        raise SystemExit(f"teamster scheduler: {exc}") from None
    _serve(server, "Scheduler")


def _parse_resources(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, qty = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name] = float(qty)
        except ValueError:
            raise SystemExit(
                f"--resources expects NAME=QUANTITY (e.g. GPU=1), got {item!r}") from None
    return out


def _worker(args: argparse.Namespace) -> None:
    from teamster.runtime.worker_server import WorkerServer

    security = _security(args, "worker")
    memory_limit = 0
    if args.memory_limit not in (None, "0"):
        from teamster.cluster.local import parse_memory_limit

        memory_limit = parse_memory_limit(
            int(args.memory_limit) if args.memory_limit.isdigit() else args.memory_limit, 1)
    from teamster.runtime.memory_monitor import parse_fraction

    try:
        fractions = {f"memory_{what}_fraction": parse_fraction(getattr(args, f"memory_{what}"),
                                                              f"--memory-{what}")
                     for what in ("target", "spill", "pause")}
        server = WorkerServer(
            args.scheduler, nthreads=args.nthreads, name=args.name, host=args.host,
            port=args.port, memory_limit=memory_limit, resources=_parse_resources(args.resources),
            connect_timeout=args.connect_timeout, local_directory=args.local_directory,
            reconnect_timeout=args.reconnect_timeout,
            heartbeat_interval=args.heartbeat_interval, security=security,
            **fractions,
        )
    except ValueError as exc:
        raise SystemExit(f"teamster worker: {exc}") from None
    try:
        _serve(server, "Worker")
    except (OSError, RuntimeError, ValueError) as exc:
        raise SystemExit(f"teamster worker: {exc}") from None


def _demo(args: argparse.Namespace) -> None:
    from teamster.demo import main as demo_main

    demo_main(n_workers=args.workers, threads=args.threads, n_tasks=args.tasks, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="teamster", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="WARNING")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("scheduler", help="run a scheduler; prints its address")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8786)
    p.add_argument("--heartbeat-timeout", type=float, default=60.0,
                   help="seconds of silence after which a worker is declared lost")
    _add_security_flags(p)
    p.add_argument("--client-grace", type=float, default=30.0,
                   help="seconds a disconnected client's futures are kept for it to reconnect")
    p.set_defaults(func=_scheduler)

    p = sub.add_parser("worker", help="run a worker connected to SCHEDULER")
    p.add_argument("scheduler", help="the scheduler's address, tcp://host:port")
    p.add_argument("--nthreads", type=int, default=1)
    p.add_argument("--name", default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--memory-limit", default="0", help="bytes, or e.g. 4GiB (0: none)")
    # Fractions of --memory-limit; 0 disables one. docs/design.md, "Memory", says why.
    p.add_argument("--memory-target", default="0.6",
                   help="fraction of --memory-limit held in memory before values spill to "
                        "disk (default %(default)s; 0: never)")
    p.add_argument("--memory-spill", default="0.7",
                   help="process memory (RSS) fraction that makes it spill down to target "
                        "(default %(default)s; 0: never)")
    p.add_argument("--memory-pause", default="0.8",
                   help="process memory fraction above which no new task starts "
                        "(default %(default)s; 0: never)")
    p.add_argument("--local-directory", default=None,
                   help="where spilled values go (default: a temp dir, removed at exit)")
    p.add_argument("--resources", action="append", default=[], help="NAME=QUANTITY")
    p.add_argument("--connect-timeout", type=float, default=30.0)
    _add_security_flags(p)
    p.add_argument("--reconnect-timeout", type=float, default=60.0,
                   help="seconds to keep trying to reach a lost scheduler before exiting "
                        "(0: exit at once)")
    p.add_argument("--heartbeat-interval", type=float, default=0.5,
                   help="seconds between heartbeats to the scheduler")
    p.set_defaults(func=_worker)

    p = sub.add_parser("demo", help="run a real workload on a local cluster and report")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_demo)

    _add_simulate(sub)
    return parser


def _add_security_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("security (see docs/security.md)")
    g.add_argument("--token-file", metavar="PATH", default=None,
                   help="file holding the cluster's shared token (default: the "
                        "TEAMSTER_TOKEN environment variable)")
    g.add_argument("--no-auth", action="store_true",
                   help="run without a token on a non-loopback address (trusted networks only)")
    g.add_argument("--tls-cert", metavar="PEM", default=None,
                   help="this process's TLS certificate; addresses become tls://")
    g.add_argument("--tls-key", metavar="PEM", default=None, help="its private key")
    g.add_argument("--tls-ca", metavar="PEM", default=None,
                   help="CA that signed every cluster certificate: peers must present one "
                        "(mutual TLS)")


def _add_simulate(sub: Any) -> None:
    # The simulator's parser lives with it; importing teamster.sim.cli loads
    # only argparse and json (the simulator itself is imported when run).
    from teamster.sim.cli import add_simulate_parser

    add_simulate_parser(sub)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args.func(args)


if __name__ == "__main__":
    main()
