"""dask collections (delayed, array, bag, dataframe) on a teamster cluster, end to end.

The client is dask's scheduler while it is open, so plain ``x.compute()``
runs on the cluster; expected values come from dask's own synchronous
scheduler (``scheduler="sync"``, which this module does not reroute) or numpy
and pandas. One shared cluster of two worker processes x two threads; a
fresh client per test. Task functions live at module level so workers import
them by reference (the module's folder is on the workers' PYTHONPATH).
"""

from __future__ import annotations

import operator
import os
import subprocess
import sys
import time
from pathlib import Path

import dask
import dask.array as da
import dask.bag as db
import numpy as np
import pandas as pd
import pytest
from dask import delayed
from dask.utils_test import GetFunctionTestMixin, inc
from file_counters import count_calls, fail_first_n

from teamster import Client, Future, LocalCluster, wait
from teamster.client.client import default_client
from teamster.cluster.local import _read_address, _terminate
from teamster.core import messages as m

pytestmark = pytest.mark.timeout(180)

HERE = Path(__file__).resolve().parent
dd = pytest.importorskip("dask.dataframe")


# ---------------------------------------------------------------------------
# Task functions (run on the workers)


class CollectionError(Exception):
    """Raised inside tasks: the client must re-raise this very type."""


def raise_collection_error(x):
    raise CollectionError(f"bad {x!r}")


def getpid_task(_=None):
    return os.getpid()






def add_block(block, scalar):
    return block + scalar


def first_block_marker(block, path):
    """Record when the first block ran (the graph is running), once."""
    if block.size and not os.path.exists(path):
        Path(path).write_text(repr(time.time()))
    return block


# ---------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def cluster():
    current = os.environ.get("PYTHONPATH", "")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join([str(HERE)] + ([current] if current else [])))
        with LocalCluster(n_workers=2, threads_per_worker=2) as c:
            yield c


@pytest.fixture
def client(cluster):
    with Client(cluster, timeout=60) as c:
        yield c


def _get(dsk, keys, **kwargs):
    return default_client().get(dsk, keys, **kwargs)


class TestGetFunction(GetFunctionTestMixin):
    """dask's own checks of the ``get`` contract, against ``Client.get``."""

    get = staticmethod(_get)

    @pytest.fixture(autouse=True)
    def _client(self, client):
        yield client


# ---------------------------------------------------------------------------
# Client.get beyond the mixin


def test_get_tuple_keys_nesting_and_unknown_keywords(client):
    dsk = {("x", 0): 1, ("x", 1): (inc, ("x", 0)), "y": (operator.add, ("x", 0), ("x", 1))}
    assert client.get(dsk, [("x", 1), ["y"]], not_a_teamster_option=True) == (2, (3,))
    assert client.get(dsk, ("x", 1)) == 2


def test_get_graph_over_futures_in_cluster_memory(client):
    f = client.submit(inc, 10)
    # A future as a value (an alias), inside a task, and a key only the cluster holds.
    dsk = {"a": f, "b": (inc, f), "c": (operator.add, "a", "b")}
    assert client.get(dsk, ["a", "b", "c"]) == (11, 12, 23)
    assert client.get({}, f.key) == 11
    with pytest.raises(KeyError):
        client.get({"a": 1}, ["a", "not-held-anywhere"])


def test_graph_is_submitted_as_one_message(client, monkeypatch):
    posted = []
    original = client._loop.post
    monkeypatch.setattr(client._loop, "post", lambda msg: (posted.append(msg), original(msg)))
    x = da.ones((40, 40), chunks=4)  # 100 chunks
    assert (x + x.T).sum().compute() == 3200
    graphs = [msg for msg in posted if isinstance(msg, m.UpdateGraph)]
    assert len(graphs) == 1 and len(graphs[0].tasks) > 100


# ---------------------------------------------------------------------------
# dask's default scheduler


def test_client_is_dask_default_and_restores_previous_on_close(cluster):
    assert dask.config.get("scheduler", None) is None
    with Client(cluster) as first:
        assert dask.config.get("scheduler") is first
        assert dask.config.get("dataframe.shuffle.method") == "tasks"
        # Tasks run in worker processes, not here.
        assert delayed(getpid_task)().compute() in first.run(os.getpid).values()
        with Client(cluster) as second:
            assert dask.config.get("scheduler") is second
        assert dask.config.get("scheduler") is first
        with Client(cluster, set_as_default=False):
            assert dask.config.get("scheduler") is first
    assert dask.config.get("scheduler", None) is None
    assert dask.config.get("dataframe.shuffle.method", None) is None


def test_shuffle_method_chosen_by_the_user_is_kept(cluster):
    with dask.config.set({"dataframe.shuffle.method": "disk"}):
        with Client(cluster):
            assert dask.config.get("dataframe.shuffle.method") == "disk"
        assert dask.config.get("dataframe.shuffle.method") == "disk"


# ---------------------------------------------------------------------------
# delayed, array, bag


def test_delayed_compute_and_dask_compute(client):
    a = delayed(inc)(1)
    b = delayed(operator.add)(a, 10)
    assert b.compute() == 12
    assert dask.compute(a, b, {"k": [a]}, 5) == (2, 12, {"k": [2]}, 5)


def test_array_results_equal_numpy(client):
    rng = np.random.default_rng(0)
    x = rng.random((60, 50))
    d = da.from_array(x, chunks=(7, 11))
    np.testing.assert_allclose((d + d.T[:50, :60].T).sum(axis=0).compute(),
                               (x + x.T[:50, :60].T).sum(axis=0))
    np.testing.assert_allclose(d.dot(d.T).mean().compute(), x.dot(x.T).mean())
    np.testing.assert_allclose(d.cumsum(axis=1).compute(), x.cumsum(axis=1))
    np.testing.assert_allclose(d.rechunk((20, 25)).std().compute(), x.std())


def test_bag_results_equal_python(client):
    b = db.from_sequence(range(100), npartitions=7)
    assert b.map(inc).filter(lambda v: v % 3 == 0).sum().compute() == sum(
        v + 1 for v in range(100) if (v + 1) % 3 == 0)
    groups = dict(b.groupby(lambda v: v % 4).compute())  # the tasks shuffle
    assert {k: sorted(v) for k, v in groups.items()} == {
        k: [v for v in range(100) if v % 4 == k] for k in range(4)}
    assert dict(b.foldby(lambda v: v % 2, operator.add).compute()) == {0: 2450, 1: 2500}


def test_errors_in_collections_reraise_with_their_type(client):
    with pytest.raises(CollectionError, match="bad 1"):
        delayed(raise_collection_error)(1).compute()
    x = da.ones(10, chunks=5).map_blocks(raise_collection_error, dtype=float)
    with pytest.raises(CollectionError):
        x.sum().compute()
    with pytest.raises(CollectionError):
        db.from_sequence([1, 2], npartitions=2).map(raise_collection_error).compute()


# ---------------------------------------------------------------------------
# dataframe: every result equals dask's synchronous one


@pytest.fixture
def parquet_dir(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "table"
    path.mkdir()
    for i in range(4):
        n = 250
        pd.DataFrame({
            "k": rng.integers(0, 20, n),
            "v": rng.random(n),
            "w": rng.integers(-5, 5, n),
        }).to_parquet(path / f"part.{i}.parquet")
    return str(path)


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_index().sort_values(list(df.columns), kind="stable")


def test_dataframe_read_parquet_groupby_merge_set_index_equal_sync(client, parquet_dir):
    ddf = dd.read_parquet(parquet_dir)
    pd.testing.assert_frame_equal(_sorted(ddf.compute()), _sorted(ddf.compute(scheduler="sync")))

    agg = ddf.groupby("k").agg({"v": ["sum", "mean"], "w": "max"})
    pd.testing.assert_frame_equal(agg.compute().sort_index(),
                                  agg.compute(scheduler="sync").sort_index())

    other = dd.from_pandas(pd.DataFrame({"k": range(20), "name": [f"n{i}" for i in range(20)]}),
                           npartitions=3)
    joined = ddf.merge(other, on="k", how="inner")
    mine, sync = joined.compute(), joined.compute(scheduler="sync")
    pd.testing.assert_frame_equal(
        mine.sort_values(["k", "v", "w"]).reset_index(drop=True),
        sync.sort_values(["k", "v", "w"]).reset_index(drop=True))

    indexed = ddf.set_index("w")
    mine, sync = indexed.compute(), indexed.compute(scheduler="sync")
    assert indexed.known_divisions
    pd.testing.assert_frame_equal(_sorted(mine), _sorted(sync))
    assert mine.index.is_monotonic_increasing


def test_dataframe_errors_reraise_with_their_type(client):
    ddf = dd.from_pandas(pd.DataFrame({"a": range(10)}), npartitions=2)
    with pytest.raises(CollectionError):
        ddf.map_partitions(raise_collection_error, meta=ddf._meta).compute()


# ---------------------------------------------------------------------------
# compute, persist, futures as arguments


def test_client_compute_returns_futures(client):
    x = da.arange(100, chunks=10).sum()
    d = delayed(inc)(1)
    fx, one, fd = client.compute([x, 1, d])
    assert isinstance(fx, Future) and isinstance(fd, Future) and one == 1
    assert (fx.result(), fd.result()) == (4950, 2)
    assert client.compute(x, sync=True) == 4950
    assert client.gather(client.compute([x, x])) == [4950, 4950]
    assert client.gather(client.compute([[d, d]])) == [[2, 2]]


def test_persist_keeps_results_in_cluster_memory(client, tmp_path):
    counter = str(tmp_path / "calls")
    d = delayed(count_calls)(counter, 5)
    p = client.persist(d)
    assert all(isinstance(v, Future) for v in dict(p.__dask_graph__()).values())
    assert p.compute() == 5 and (p + 1).compute() == 6
    x = da.arange(30, chunks=10) * 2
    (px,) = dask.persist(x)
    py = x.persist()
    assert (px + py).sum().compute() == 2 * 2 * sum(range(30))
    assert Path(counter).read_text() == "1"  # persisted: computed once


def test_dask_persist_of_dataframe_and_bag(client):
    ddf = dd.from_pandas(pd.DataFrame({"a": range(20), "b": range(20)}), npartitions=4)
    b = db.from_sequence(range(10), npartitions=3)
    pddf, pb = dask.persist(ddf + 1, b.map(inc))
    pd.testing.assert_frame_equal(pddf.compute(), (ddf + 1).compute(scheduler="sync"))
    assert pb.sum().compute() == 55


def test_futures_as_arguments_to_delayed_map_blocks_from_delayed(client):
    f = client.submit(inc, 1)  # 2
    assert delayed(operator.mul)(f, 10).compute() == 20
    x = da.ones(10, chunks=5)
    assert x.map_blocks(add_block, f, dtype=float).sum().compute() == 30
    arr = client.submit(np.arange, 6)
    assert da.from_delayed(arr, shape=(6,), dtype=int).sum().compute() == 15
    parts = [client.submit(pd.DataFrame, {"a": [i, i + 1]}) for i in range(3)]
    ddf = dd.from_delayed(parts, meta=pd.DataFrame({"a": pd.Series([], dtype="int64")}))
    assert ddf.a.sum().compute() == sum(2 * i + 1 for i in range(3))


# ---------------------------------------------------------------------------
# Annotations


def test_retries_annotation(client, tmp_path):
    counter = str(tmp_path / "attempts")
    with dask.annotate(retries=2):
        d = delayed(fail_first_n, pure=False)(counter, 2)
    assert d.compute() == 2
    with pytest.raises(RuntimeError, match="attempt 3"):
        delayed(fail_first_n, pure=False)(counter, 5).compute()


def test_workers_annotation(client):
    pids = client.run(os.getpid)
    target = sorted(pids)[1]
    with dask.annotate(workers=[target]):
        ds = [delayed(getpid_task, pure=False)(i) for i in range(8)]
    assert set(dask.compute(*ds)) == {pids[target]}
    assert set(client.get({f"p{i}": (getpid_task, i) for i in range(8)},
                          [f"p{i}" for i in range(8)], workers=target)) == {pids[target]}


def test_resources_annotation_waits_for_a_worker_that_has_them(client, cluster):
    with dask.annotate(resources={"GPU": 1}):
        d = delayed(getpid_task, pure=False)()
    future = client.compute(d)
    with pytest.raises(TimeoutError):
        wait(future, timeout=0.5)  # no worker has a GPU: it must not run anywhere
    proc = subprocess.Popen([sys.executable, "-m", "teamster.cli", "worker",
                             cluster.scheduler_address, "--nthreads", "1", "--name", "gpu",
                             "--resources", "GPU=1"], stdout=subprocess.PIPE,
                            env={**os.environ, "TEAMSTER_TOKEN": cluster.security.token})
    try:
        _read_address(proc, "gpu worker", 30)
        assert future.result(timeout=60) == proc.pid
    finally:
        _terminate(proc)


# ---------------------------------------------------------------------------
# Scale


@pytest.mark.slow
def test_100k_task_array_graph_is_submitted_and_running_within_seconds(client, tmp_path):
    marker = str(tmp_path / "first-block")
    x = da.ones(75_000, chunks=1).map_blocks(first_block_marker, marker,
                                              meta=np.ones((0,)))
    total = (x + 1).sum()  # 75,000 fused blocks + a 25,000-task tree reduction
    start = time.time()
    future = client.compute(total)
    submitted = time.time() - start
    deadline = time.monotonic() + 120
    while not os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling an observable condition, not waiting for a guess
    assert os.path.exists(marker), "no task ran within 120 s of submission"
    running = float(Path(marker).read_text()) - start
    print(f"100k-task graph: compute() returned after {submitted:.1f} s, "
          f"first task ran after {running:.1f} s")
    # Generous bound (a shared 2-core CI machine): guards against anything
    # quadratic, which would take minutes; typical is 5-15 s.
    assert running < 60
    client.cancel(future)
