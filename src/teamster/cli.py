"""`teamster scheduler | worker | demo | simulate`: the command line.

Imports stay inside the subcommands so that `teamster worker` loads only
what a worker needs and registers quickly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any


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


def _scheduler(args: argparse.Namespace) -> None:
    from teamster.runtime.scheduler_server import SchedulerServer

    try:
        server = SchedulerServer(args.host, args.port, heartbeat_timeout=args.heartbeat_timeout,
                                 client_grace=args.client_grace)
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

    memory_limit = 0
    if args.memory_limit not in (None, "0"):
        from teamster.cluster.local import parse_memory_limit

        memory_limit = parse_memory_limit(
            int(args.memory_limit) if args.memory_limit.isdigit() else args.memory_limit, 1)
    server = WorkerServer(
        args.scheduler, nthreads=args.nthreads, name=args.name, host=args.host, port=args.port,
        memory_limit=memory_limit, resources=_parse_resources(args.resources),
        connect_timeout=args.connect_timeout, reconnect_timeout=args.reconnect_timeout,
        heartbeat_interval=args.heartbeat_interval,
    )
    try:
        _serve(server, "Worker")
    except (OSError, RuntimeError) as exc:
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
    p.add_argument("--resources", action="append", default=[], help="NAME=QUANTITY")
    p.add_argument("--connect-timeout", type=float, default=30.0)
    p.add_argument("--reconnect-timeout", type=float, default=60.0,
                   help="seconds to keep trying to reach a lost scheduler before exiting "
                        "(0: exit at once)")
    p.add_argument("--heartbeat-interval", type=float, default=1.0,
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
