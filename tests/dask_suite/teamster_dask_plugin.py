"""pytest plugin: run dask's own shipped test modules on a live teamster cluster.

Loaded with ``-p teamster_dask_plugin`` (``tests/dask_suite`` on ``sys.path``;
``run.py`` next to this file and ``make test`` do that)::

    python tests/dask_suite/run.py              # the curated modules, on teamster
    python tests/dask_suite/run.py --baseline   # the same modules on dask's schedulers

For the whole session one ``LocalCluster`` (worker *processes*, as a real
deployment has) and one ``Client`` serve every test. The client is dask's
configured scheduler (``set_as_default``), and the named schedulers
("sync", "threads", "processes", ...) are replaced by ``client.get``:
dask's ``assert_eq`` computes with ``scheduler="sync"``, so without that
most assertions would never reach the cluster. Before every test both are
put back, in case a test changed the global config and did not restore it.

Tests that cannot pass on any multi-process cluster (they compare object
identity across the process boundary, expect a warning raised inside a task
to reach the test process, count calls of a function monkeypatched in the
test process, or exercise the disk shuffle's local files) are listed with
their reason in ``deselected.txt``; nothing else is skipped.

To check that a deselected test fails on dask.distributed for the same
reason, run the same plugin there (teamster never imports distributed; this
test plugin does, only when asked)::

    TEAMSTER_DASK_SUITE_API=distributed /work/dask-venv/bin/python \
        tests/dask_suite/run.py --module dask.tests.test_delayed -- --teamster-deselect=/dev/null
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
DESELECT_FILE = HERE / "deselected.txt"

#: dask's named schedulers that the plugin routes to the cluster.
NAMED = ("sync", "synchronous", "single-threaded", "threads", "threading",
         "processes", "multiprocessing")


class _Session:
    cluster: Any = None
    client: Any = None
    saved_named: dict[str, Any] = {}
    deselected: list[tuple[str, str]] = []
    unmatched: list[str] = []
    reinstalled = 0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("teamster", "dask's tests on a teamster cluster")
    group.addoption("--teamster-workers", type=int, default=2,
                    help="worker processes of the session's LocalCluster (default 2)")
    group.addoption("--teamster-threads", type=int, default=2,
                    help="threads per worker (default 2)")
    group.addoption("--teamster-deselect", default=str(DESELECT_FILE),
                    help="file of test ids to deselect, each with its reason")


def read_deselect_file(path: Path) -> list[tuple[str, str]]:
    """``[(test id, reason)]`` from lines ``dask/tests/test_x.py::test_y  # reason``.

    A reason is required: a deselection nobody can explain is a bug hidden.
    """
    entries: list[tuple[str, str]] = []
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        test_id, sep, reason = line.partition(" # ")
        if not sep or not reason.strip():
            raise pytest.UsageError(f"{path}:{n}: every deselected test needs a reason "
                                    f"('<test id>  # <reason>'): {raw!r}")
        entries.append((test_id.strip(), reason.strip()))
    return entries


def _install(client: Any) -> None:
    import dask
    import dask.base

    for name in NAMED:
        dask.base.named_schedulers[name] = client.get
    dask.config.set({"scheduler": client})


def pytest_configure(config: pytest.Config) -> None:
    # Every test of this project runs with invariants checked (tests/conftest.py);
    # the worker and scheduler processes inherit this.
    os.environ["TEAMSTER_VALIDATE"] = "1"
    if hasattr(config, "workerinput"):  # pragma: no cover - xdist workers are not supported
        raise pytest.UsageError("teamster_dask_plugin does not support pytest-xdist")
    config.addinivalue_line("markers", "slow: dask's marker for long tests")
    config.addinivalue_line("markers", "network: dask's marker for tests using the network")
    import dask.base

    extra: dict[str, Any] = {}
    if os.environ.get("TEAMSTER_DASK_SUITE_API", "teamster") == "distributed":
        from distributed import Client, LocalCluster  # type: ignore[import-not-found]

        extra = {"dashboard_address": None}
    else:
        from teamster import Client, LocalCluster

    _Session.saved_named = {n: dask.base.named_schedulers.get(n) for n in NAMED}
    _Session.cluster = LocalCluster(n_workers=config.getoption("--teamster-workers"),
                                    threads_per_worker=config.getoption("--teamster-threads"),
                                    processes=True, **extra)
    _Session.client = Client(_Session.cluster, set_as_default=True, timeout=60)
    _install(_Session.client)


def pytest_unconfigure(config: pytest.Config) -> None:
    import dask.base

    for name, get in _Session.saved_named.items():
        if get is None:
            dask.base.named_schedulers.pop(name, None)
        else:
            dask.base.named_schedulers[name] = get
    if _Session.client is not None:
        _Session.client.close()
    if _Session.cluster is not None:
        _Session.cluster.close()


def pytest_report_header(config: pytest.Config) -> str:
    c = _Session.cluster
    api = os.environ.get("TEAMSTER_DASK_SUITE_API", "teamster")
    return (f"dask collections run on {api}: {config.getoption('--teamster-workers')} worker "
            f"processes x {config.getoption('--teamster-threads')} threads at "
            f"{getattr(c, 'scheduler_address', '?')}")


def _test_id(item: pytest.Item) -> str:
    """``dask/array/tests/test_reductions.py::test_x[param]``, wherever dask is installed."""
    import dask

    root = Path(dask.__file__).resolve().parent.parent
    try:
        path = Path(str(item.path)).resolve().relative_to(root).as_posix()
    except ValueError:
        path = item.nodeid.split("::", 1)[0]
    return f"{path}::{item.name}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    entries = read_deselect_file(Path(config.getoption("--teamster-deselect")))
    reasons = dict(entries)
    used: set[str] = set()
    kept, dropped = [], []
    for item in items:
        tid = _test_id(item)
        base = tid.split("[", 1)[0]
        match = tid if tid in reasons else base if base in reasons else None
        if match is None:
            kept.append(item)
        else:
            used.add(match)
            dropped.append(item)
            _Session.deselected.append((tid, reasons[match]))
    # Entries for modules that were not collected in this run are not stale.
    collected_files = {_test_id(i).split("::", 1)[0] for i in items}
    _Session.unmatched = [t for t, _ in entries
                          if t not in used and t.split("::", 1)[0] in collected_files]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_runtest_setup(item: pytest.Item) -> None:
    import dask
    import dask.base

    client = _Session.client
    if dask.config.get("scheduler", None) is not client or any(
            dask.base.named_schedulers.get(n) != client.get for n in NAMED):
        _Session.reinstalled += 1
        _install(client)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    tr = terminalreporter
    tr.section("teamster")
    tr.write_line(f"{len(_Session.deselected)} tests deselected by "
                  f"{config.getoption('--teamster-deselect')} (reasons there)")
    if _Session.reinstalled:
        tr.write_line(f"{_Session.reinstalled} tests left dask's scheduler config changed; "
                      "it was reinstalled before the next test")
    for tid in _Session.unmatched:
        tr.write_line(f"stale deselect entry (no such test collected): {tid}")
