"""Bad input gets a clear error and loses nothing."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from teamster import Client, LocalCluster
from teamster.runtime.comm import ConnectTimeoutError

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as c:
        yield c


def test_function_that_cannot_be_pickled_is_named_in_the_error(client):
    lock = threading.Lock()

    def holds_a_lock(x):
        with lock:
            return x

    with pytest.raises(TypeError, match="holds_a_lock"):
        client.submit(holds_a_lock, 1)
    # Nothing was lost: the client and cluster keep working.
    assert client.submit(abs, -3).result() == 3


def test_unreachable_scheduler_raises_within_the_timeout_naming_the_address():
    with pytest.raises(ConnectTimeoutError) as info:
        Client("tcp://127.0.0.1:1", timeout=0.5)
    message = str(info.value)
    assert "tcp://127.0.0.1:1" in message and "0.5" in message
    assert isinstance(info.value, OSError)


def test_bad_memory_limit_says_what_is_expected():
    with pytest.raises(ValueError, match="300MB"):
        LocalCluster(n_workers=1, memory_limit="lots")


def test_large_array_travels_between_workers_and_back(client):
    data = np.arange(5_000_000, dtype="float64")  # 40 MB
    [remote] = client.scatter([data], workers=[next(iter(client.scheduler_info()["workers"]))])
    other = [a for a in client.scheduler_info()["workers"] if a not in client.who_has(remote)[remote.key]]
    doubled = client.submit(np.multiply, remote, 2, workers=other, pure=False)
    result = doubled.result()
    assert result.shape == data.shape and float(result[-1]) == 2 * float(data[-1])
