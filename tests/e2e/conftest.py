"""Fixtures for ``tests/e2e/test_client_api.py``: one API, one cluster, a client per test.

The same test file runs against teamster (the default) and against
dask.distributed, to prove that the tests encode distributed's real behaviour::

    # teamster (from the repo root, teamster's venv)
    .venv/bin/python -m pytest tests/e2e/test_client_api.py

    # dask.distributed, in its own venv (pip install pytest pytest-timeout there);
    # --confcutdir keeps the top-level tests/conftest.py (teamster's) out of it
    TEAMSTER_API_UNDER_TEST=distributed /work/dask-venv/bin/python -m pytest \\
        tests/e2e/test_client_api.py --confcutdir=tests/e2e -p no:cacheprovider

Under teamster, the whole module is skipped with a clear reason while
``import teamster`` fails (the package is not written yet); once it imports,
every test runs. ``teamster`` never imports ``distributed``: the distributed
side is only imported here, and only when asked for.

The fixtures have API-specific names (``api``, ``api_cluster``, ``api_client``)
so they never shadow fixtures of the top-level ``tests/conftest.py`` for other
end-to-end test files in this folder.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
SRC = REPO_ROOT / "src"

#: Test files in this folder that these fixtures serve (and that get skipped
#: as a whole when the API under test cannot be imported).
SERVED_FILES = {"test_client_api.py"}

API_ENV_VAR = "TEAMSTER_API_UNDER_TEST"
API_NAME = os.environ.get(API_ENV_VAR, "teamster").strip().lower() or "teamster"


def _who_has_via_client(
    client: Any, futures: list[Any] | None = None
) -> dict[Any, set[str]] | None:
    """``{key: {worker_address, ...}}`` of data held in cluster memory, or None if unobservable.

    dask.distributed exposes this as ``Client.who_has``; for teamster it is
    used when the client has the same method, otherwise the tests that need it
    skip (holding-data checks are implementation-specific).
    """
    who_has = getattr(client, "who_has", None)
    if who_has is None:
        return None
    raw = who_has(futures) if futures is not None else who_has()
    return {k: set(v) for k, v in dict(raw).items()}


def _load_distributed() -> SimpleNamespace:
    import distributed  # only ever imported when TEAMSTER_API_UNDER_TEST=distributed

    return SimpleNamespace(
        name="distributed",
        module=distributed,
        Client=distributed.Client,
        LocalCluster=distributed.LocalCluster,
        wait=distributed.wait,
        as_completed=distributed.as_completed,
        Future=distributed.Future,
        # No dashboard (needs bokeh, and a fixed port) and quiet logs: a task that
        # raises on purpose would otherwise print a traceback per test.
        cluster_kwargs={"dashboard_address": None, "silence_logs": logging.CRITICAL},
        who_has=_who_has_via_client,
    )


def _load_teamster() -> tuple[SimpleNamespace | None, str | None]:
    """(api, None) when teamster imports, else (None, reason to skip)."""
    try:
        teamster = importlib.import_module("teamster")
    except ImportError:
        # Not installed into the venv: try the source tree.
        if str(SRC) not in sys.path and SRC.is_dir():
            sys.path.insert(0, str(SRC))
        sys.modules.pop("teamster", None)
        try:
            teamster = importlib.import_module("teamster")
        except ImportError as exc:
            return None, f"teamster is not importable yet ({exc!r}); client API tests skipped"
        except Exception as exc:  # noqa: BLE001 - a broken package fails the tests
            return SimpleNamespace(name="teamster", problems=[f"import teamster: {exc!r}"]), None
    except Exception as exc:  # noqa: BLE001 - a broken package fails the tests
        return SimpleNamespace(name="teamster", problems=[f"import teamster: {exc!r}"]), None
    if getattr(teamster, "__file__", None) is None:
        # src/teamster/ without an __init__.py imports as a namespace package:
        # the package itself is not written yet.
        return None, "teamster has no __init__.py yet (namespace package); client API tests skipped"
    # The package exists. Its public names are loaded lazily; a name whose
    # teamster module is not written yet (ModuleNotFoundError for a teamster.*
    # module) still means "not there yet": skip. Any other failure is a bug and
    # fails every test through the ``api`` fixture.
    names = ("Client", "LocalCluster", "wait", "as_completed", "Future")
    ns = SimpleNamespace(
        name="teamster", module=teamster, cluster_kwargs={}, who_has=_who_has_via_client
    )
    problems: list[str] = []
    for n in names:
        try:
            setattr(ns, n, getattr(teamster, n))
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] == "teamster":
                return None, (f"teamster.{n} is not written yet ({exc}); client API tests skipped")
            problems.append(f"teamster.{n}: {exc!r}")
        except Exception as exc:  # noqa: BLE001 - reported by the api fixture
            problems.append(f"teamster.{n}: {exc!r}")
    ns.problems = problems
    return ns, None


def _load_api() -> tuple[SimpleNamespace | None, str | None]:
    if API_NAME == "distributed":
        try:
            return _load_distributed(), None
        except ImportError as exc:
            return None, (
                f"{API_ENV_VAR}=distributed but distributed is not importable ({exc!r}); "
                "run under the dask venv's python"
            )
    if API_NAME == "teamster":
        return _load_teamster()
    raise pytest.UsageError(f"{API_ENV_VAR} must be 'teamster' or 'distributed', not {API_NAME!r}")


#: The API under test: Client, LocalCluster, wait, as_completed, Future, plus
#: cluster_kwargs (extra LocalCluster arguments) and who_has(client, futures=None).
#: None when it cannot be imported; SKIP_REASON then says why.
api, SKIP_REASON = _load_api()


def _served(item: pytest.Item) -> bool:
    path = Path(str(getattr(item, "path", getattr(item, "fspath", ""))))
    return path.parent == HERE and path.name in SERVED_FILES


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SKIP_REASON is None:
        return
    marker = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if _served(item):
            item.add_marker(marker)


def pytest_report_header(config: pytest.Config) -> str:
    return f"client API under test: {API_NAME}" + (
        f" (skipped: {SKIP_REASON})" if SKIP_REASON else ""
    )


@pytest.fixture(name="api", scope="session")
def _api_fixture() -> SimpleNamespace:
    if api is None:
        pytest.skip(SKIP_REASON or "API under test is not importable")
    problems = getattr(api, "problems", None)
    if problems:
        pytest.fail("teamster's client API does not load: " + "; ".join(problems))
    return api


@pytest.fixture(scope="module")
def api_cluster(api: SimpleNamespace) -> Any:
    """LocalCluster(n_workers=2, threads_per_worker=2, processes=True), shared by the module.

    Worker processes must import the test module to unpickle the task
    functions defined there (they are pickled by reference), so its folder,
    the repo root and src/ are put on the workers' PYTHONPATH.
    """
    extra = [str(HERE), str(REPO_ROOT), str(SRC)]
    current = os.environ.get("PYTHONPATH", "")
    pythonpath = os.pathsep.join(extra + ([current] if current else []))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", pythonpath)
        cluster = api.LocalCluster(
            n_workers=2, threads_per_worker=2, processes=True, **api.cluster_kwargs
        )
        try:
            yield cluster
        finally:
            with contextlib.suppress(Exception):
                cluster.close()


@pytest.fixture
def api_client(api: SimpleNamespace, api_cluster: Any) -> Any:
    """A fresh Client on the shared cluster; closed (releasing its futures) after the test."""
    client = api.Client(api_cluster, timeout=60)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def api_gate(tmp_path: Path) -> Any:
    """A file path that gated tasks wait for; always opened at teardown.

    Worker threads are never interrupted (not even by cancel), so a gated task
    holds its thread until the gate opens: teardown opens it so the next test
    gets all four threads back.
    """
    path = tmp_path / "gate"
    try:
        yield path
    finally:
        path.touch()
