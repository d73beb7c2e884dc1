"""Copies of small inputs over real TCP: reported with the result of the task
that read them (``TaskFinished.transfers``), not one ``AddKeys`` each. The
scheduler must still know every copy, count its bytes as moved, and free it
when the data is released: a copy it never heard of would stay on its
worker for good."""

from __future__ import annotations

import pytest
from waiting import wait_for

from teamster import Client, LocalCluster

pytestmark = pytest.mark.timeout(180)


def managed_bytes(client: Client) -> dict[str, float]:
    return {info["name"]: float(info["metrics"].get("managed", 0.0))
            for info in client.scheduler_info()["workers"].values()}


def test_a_small_copy_is_known_with_its_readers_result_and_freed_with_the_data() -> None:
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, \
            Client(cluster, timeout=60) as client:
        a, b = sorted(client.scheduler_info()["workers"])
        x = client.submit(bytes, 10_000, workers=[a], pure=False)  # 10 KB, made on a
        readers = [client.submit(len, x, workers=[b], key=f"read-{i}") for i in range(3)]
        assert client.gather(readers) == [10_000] * 3
        # b's copy arrived with the first reader's result: known by now.
        assert sorted(client.who_has(x)[x.key]) == [a, b]
        report = client.balance_report()
        assert report["bytes_moved"] >= 10_000 and report["transfers"] >= 1
        del x, readers
        wait_for(lambda: not any(managed_bytes(client).values()),
                 "both workers to free every value, the copy included")
