"""End-to-end tests of the futures API: teamster must behave as dask.distributed does.

Every test here passes against dask.distributed 2026.8.0 (run with
``TEAMSTER_API_UNDER_TEST=distributed``, see conftest.py), so each one encodes
real distributed behaviour that teamster, as a drop-in replacement, must match.

Rules: a shared 2-worker x 2-thread process cluster, a fresh client per test,
no sleeps as synchronisation (tasks that must stay running wait on a gate
file that the test creates), no timing asserts, one behaviour per test.
Task functions live at module level so they pickle by reference.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import traceback
import uuid
from concurrent.futures import CancelledError

import pytest
from file_counters import count_calls, fail_first_n

pytestmark = pytest.mark.timeout(180)


# ---------------------------------------------------------------------------
# Task functions (run on the workers)


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def identity(x):
    return x


def getpid_task(_=None):
    return os.getpid()


def raise_value_error_remotely(x):
    raise ValueError(f"bad value {x}")


class CustomTaskError(Exception):
    pass


def raise_custom_error(x):
    raise CustomTaskError("custom", x)


def total(xs, mapping, k=0):
    """Sum of a list, a dict's values and a keyword: exercises nested future arguments."""
    return sum(xs) + sum(mapping.values()) + k


def describe(xs, mapping, t):
    return (type(xs).__name__, xs, type(mapping).__name__, mapping, type(t).__name__, t)


def wait_for_file(path, x=None, deadline_s=120.0):
    """Block until ``path`` exists (the test's gate), then return x.

    Polls rather than sleeps for a fixed time; raises if the gate never opens so
    a broken test fails instead of returning a plausible value.
    """
    end = time.monotonic() + deadline_s
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise TimeoutError(f"gate {path} never opened")
        time.sleep(0.005)
    return x






def unique(name: str) -> str:
    """An explicit key no other test (nor an earlier run on the shared cluster) uses."""
    return f"{name}-{uuid.uuid4().hex}"


def frame_names(tb) -> list[str]:
    return [frame.name for frame in traceback.extract_tb(tb)]


def wait_until(predicate, timeout=30.0) -> bool:
    """Poll an eventually-consistent observation (release is asynchronous by design)."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


# ---------------------------------------------------------------------------
# Client construction, cluster introspection, close


def test_client_from_cluster_is_a_context_manager_and_closes(api, api_cluster):
    with api.Client(api_cluster, timeout=30, set_as_default=False) as client:
        assert client.submit(inc, 1).result() == 2
    assert client.status == "closed"


def test_client_connects_by_scheduler_address(api, api_cluster):
    address = api_cluster.scheduler_address
    assert isinstance(address, str) and address.startswith("tcp://")
    with api.Client(address, timeout=30, set_as_default=False) as client:
        assert client.submit(add, 1, 2).result() == 3


def test_submit_on_closed_client_raises(api, api_cluster):
    client = api.Client(api_cluster, set_as_default=False)
    client.close()
    # distributed: ClosedClientError("Client is closed. ..."), a plain Exception subclass
    with pytest.raises(Exception, match="(?i)closed"):  # noqa: B017
        client.submit(inc, 1)


def test_closing_a_client_cancels_its_pending_futures(api, api_cluster, api_gate):
    client = api.Client(api_cluster, set_as_default=False)
    future = client.submit(wait_for_file, str(api_gate), 1, pure=False)
    client.close()
    assert future.status == "cancelled"
    with pytest.raises(CancelledError):
        future.result()


@pytest.mark.timeout(30)
def test_unreachable_address_raises_oserror(api):
    # distributed raises OSError("Timed out trying to connect to ... after 1 s");
    # TimeoutError is an OSError subclass, so either is accepted.
    with pytest.raises(OSError):
        api.Client("tcp://127.0.0.1:1", timeout=1)


def test_scheduler_info_lists_both_workers_with_nthreads_and_metrics(api_client):
    workers = api_client.scheduler_info()["workers"]
    assert len(workers) == 2
    for address, info in workers.items():
        assert isinstance(address, str) and address.startswith("tcp://")
        assert info["nthreads"] == 2
        assert isinstance(info["metrics"], dict)


def test_run_calls_function_on_every_worker_process(api_client):
    pids = api_client.run(os.getpid)
    assert set(pids) == set(api_client.scheduler_info()["workers"])
    assert len(set(pids.values())) == 2
    assert os.getpid() not in pids.values()


def test_run_passes_arguments(api_client):
    assert set(api_client.run(add, 1, 2).values()) == {3}


# ---------------------------------------------------------------------------
# submit, Future basics, keys


def test_submit_returns_future_with_result(api, api_client):
    future = api_client.submit(add, 1, y=2)
    assert isinstance(future, api.Future)
    assert future.result() == 3
    assert future.done() is True
    assert future.status == "finished"


def test_future_is_pending_until_its_task_finishes(api_client, api_gate):
    future = api_client.submit(wait_for_file, str(api_gate), 7, pure=False)
    assert future.status == "pending"
    assert future.done() is False
    api_gate.touch()
    assert future.result() == 7
    assert future.status == "finished"
    assert future.done() is True


def test_pure_submit_gives_same_key_for_same_call(api_client):
    a = api_client.submit(inc, 1)
    b = api_client.submit(inc, 1)
    c = api_client.submit(inc, 2)
    assert a.key == b.key
    assert a.key != c.key


def test_pure_key_is_function_name_then_token(api_client):
    key = api_client.submit(inc, 41).key
    assert isinstance(key, str)
    assert key.startswith("inc-")


def test_impure_submit_gives_fresh_keys(api_client):
    a = api_client.submit(inc, 1, pure=False)
    b = api_client.submit(inc, 1, pure=False)
    assert a.key != b.key
    assert a.result() == b.result() == 2


def test_explicit_key_is_used(api_client):
    key = unique("explicit")
    future = api_client.submit(inc, 1, key=key)
    assert future.key == key
    assert future.result() == 2


def test_identical_pure_task_is_not_recomputed_while_held(api_client, tmp_path):
    counter = tmp_path / "calls"
    first = api_client.submit(count_calls, str(counter), 5)
    assert first.result() == 5
    second = api_client.submit(count_calls, str(counter), 5)
    assert second.key == first.key
    assert second.result() == 5
    assert counter.read_text() == "1"


def test_submit_accepts_scheduling_keywords(api_client):
    future = api_client.submit(inc, 10, priority=10, retries=1)
    assert future.result() == 11


# ---------------------------------------------------------------------------
# Futures as arguments, chains


def test_futures_in_args_lists_dicts_and_kwargs_resolve_to_values(api_client):
    a = api_client.submit(inc, 1)  # 2
    b = api_client.submit(inc, 2)  # 3
    future = api_client.submit(total, [a, b, 3], {"x": a}, k=b)
    assert future.result() == 2 + 3 + 3 + 2 + 3


def test_nested_future_arguments_keep_container_types(api_client):
    a = api_client.submit(inc, 1)
    result = api_client.submit(describe, [a, 0], {"k": a}, (a, 1)).result()
    assert result == ("list", [2, 0], "dict", {"k": 2}, "tuple", (2, 1))


def test_chain_of_100_dependent_submits(api_client):
    future = api_client.submit(inc, 0)
    for _ in range(99):
        future = api_client.submit(inc, future)  # earlier futures are dropped as we go
    assert future.result() == 100


def test_submit_map_gather_chain(api_client):
    xs = api_client.map(inc, range(10))
    ys = api_client.map(add, xs, xs)
    total_future = api_client.submit(sum, ys)
    assert api_client.gather(ys) == [2 * (i + 1) for i in range(10)]
    assert total_future.result() == sum(2 * (i + 1) for i in range(10))


# ---------------------------------------------------------------------------
# map


def test_map_returns_list_of_futures_in_order(api, api_client):
    futures = api_client.map(inc, range(5))
    assert isinstance(futures, list)
    assert all(isinstance(f, api.Future) for f in futures)
    assert api_client.gather(futures) == [1, 2, 3, 4, 5]


def test_map_over_several_iterables_and_kwargs(api_client):
    assert api_client.gather(api_client.map(add, [1, 2], [10, 20])) == [11, 22]
    assert api_client.gather(api_client.map(add, [1, 2], y=100)) == [101, 102]


def test_map_over_futures(api_client):
    xs = api_client.map(inc, [1, 2, 3])
    assert api_client.gather(api_client.map(inc, xs)) == [3, 4, 5]


def test_map_pure_keys_repeat_and_impure_keys_do_not(api_client):
    a = [f.key for f in api_client.map(inc, range(3))]
    b = [f.key for f in api_client.map(inc, range(3))]
    c = [f.key for f in api_client.map(inc, range(3), pure=False)]
    d = [f.key for f in api_client.map(inc, range(3), pure=False)]
    assert a == b
    assert len(set(a)) == 3
    assert len(set(c)) == 3
    assert not set(c) & set(d)
    assert not set(a) & set(c)


def test_map_with_list_of_keys_uses_them(api_client):
    keys = [unique("mapkey") for _ in range(3)]
    futures = api_client.map(inc, range(3), key=keys)
    assert [f.key for f in futures] == keys
    assert api_client.gather(futures) == [1, 2, 3]


def test_map_with_key_prefix(api_client):
    prefix = unique("prefix")
    futures = api_client.map(inc, range(3), key=prefix)
    assert all(f.key.startswith(prefix + "-") for f in futures)
    assert len({f.key for f in futures}) == 3
    assert api_client.gather(futures) == [1, 2, 3]


def test_map_of_empty_iterable_is_empty_list(api_client):
    assert api_client.map(inc, []) == []


@pytest.mark.slow
def test_map_10000_tasks(api_client):
    futures = api_client.map(inc, range(10_000))
    assert api_client.gather(futures) == list(range(1, 10_001))


# ---------------------------------------------------------------------------
# gather


def test_gather_preserves_nested_lists_tuples_and_dicts(api_client):
    a = api_client.submit(inc, 1)
    b = api_client.submit(inc, 2)
    result = api_client.gather([a, (a, b), {"x": a, "y": [b, "plain", None]}, 5])
    assert result == [2, (2, 3), {"x": 2, "y": [3, "plain", None]}, 5]


def test_gather_of_single_future_tuple_and_dict(api_client):
    a = api_client.submit(inc, 1)
    b = api_client.submit(inc, 2)
    assert api_client.gather(a) == 2
    assert api_client.gather((a, b)) == (2, 3)
    assert api_client.gather({"a": a}) == {"a": 2}


def test_gather_raises_original_exception_by_default(api_client):
    ok = api_client.submit(inc, 1)
    bad = api_client.submit(raise_value_error_remotely, 1)
    with pytest.raises(ValueError, match="bad value 1"):
        api_client.gather([ok, bad])


def test_gather_errors_skip_drops_failed_futures_from_a_list(api_client):
    ok = api_client.map(inc, range(3))
    bad = api_client.submit(raise_value_error_remotely, 2)
    assert api_client.gather([ok[0], bad, ok[1], ok[2]], errors="skip") == [1, 2, 3]


def test_gather_errors_skip_drops_cancelled_futures(api_client, api_gate):
    ok = api_client.submit(inc, 1)
    blocked = api_client.submit(wait_for_file, str(api_gate), 0, pure=False)
    blocked.cancel()
    assert api_client.gather([blocked, ok], errors="skip") == [2]


# ---------------------------------------------------------------------------
# Exceptions and tracebacks


def test_remote_exception_reraises_with_original_type_and_message(api_client):
    future = api_client.submit(raise_value_error_remotely, 1)
    with pytest.raises(ValueError) as excinfo:
        future.result()
    assert excinfo.value.args == ("bad value 1",)
    assert future.status == "error"
    assert future.done() is True


def test_remote_exception_of_user_defined_class(api_client):
    future = api_client.submit(raise_custom_error, 3)
    with pytest.raises(CustomTaskError) as excinfo:
        future.result()
    assert excinfo.value.args == ("custom", 3)


def test_result_traceback_includes_remote_function_frame(api_client):
    future = api_client.submit(raise_value_error_remotely, 1)
    with pytest.raises(ValueError) as excinfo:
        future.result()
    assert "raise_value_error_remotely" in frame_names(excinfo.value.__traceback__)


def test_future_exception_and_traceback(api_client):
    future = api_client.submit(raise_value_error_remotely, 4)
    exc = future.exception(timeout=60)
    assert isinstance(exc, ValueError)
    assert exc.args == ("bad value 4",)
    assert "raise_value_error_remotely" in frame_names(future.traceback(timeout=60))


def test_exception_and_traceback_of_successful_future_are_none(api_client):
    future = api_client.submit(inc, 1)
    assert future.result() == 2
    assert future.exception() is None
    assert future.traceback() is None


def test_dependent_of_failed_future_fails_with_the_same_error(api_client):
    bad = api_client.submit(raise_value_error_remotely, 5)
    dependent = api_client.submit(inc, bad)
    with pytest.raises(ValueError, match="bad value 5"):
        dependent.result()
    assert dependent.status == "error"


def test_unpicklable_argument_raises_error_naming_the_type(api_client):
    # distributed raises at submit time: TypeError("Could not serialize object of
    # type LLGExpr", ...) chained from TypeError("cannot pickle '_thread.lock'
    # object"); the type's name is in the error or the chain it raises.
    with pytest.raises(TypeError) as excinfo:
        api_client.submit(identity, threading.Lock()).result()
    assert "_thread.lock" in "".join(traceback.format_exception(excinfo.value))
    assert api_client.submit(inc, 1).result() == 2  # the client is still usable


def test_client_run_reraises_remote_exception(api_client):
    with pytest.raises(ValueError, match="bad value 9"):
        api_client.run(raise_value_error_remotely, 9)


# ---------------------------------------------------------------------------
# retries


def test_retries_two_succeeds_on_third_attempt(api_client, tmp_path):
    counter = tmp_path / "attempts"
    future = api_client.submit(fail_first_n, str(counter), 2, retries=2)
    assert future.result() == 2
    assert counter.read_text() == "3"


def test_too_few_retries_raises_last_attempts_error(api_client, tmp_path):
    counter = tmp_path / "attempts"
    future = api_client.submit(fail_first_n, str(counter), 2, retries=1)
    with pytest.raises(RuntimeError, match="attempt 1"):
        future.result()
    assert counter.read_text() == "2"


def test_no_retries_by_default(api_client, tmp_path):
    counter = tmp_path / "attempts"
    future = api_client.submit(fail_first_n, str(counter), 1)
    with pytest.raises(RuntimeError, match="attempt 0"):
        future.result()
    assert counter.read_text() == "1"


def test_map_retries(api_client, tmp_path):
    counters = [str(tmp_path / f"attempts-{i}") for i in range(3)]
    futures = api_client.map(fail_first_n, counters, [1] * 3, retries=1)
    assert api_client.gather(futures) == [1, 1, 1]


# ---------------------------------------------------------------------------
# Placement: workers=, allow_other_workers=, resources=


def test_workers_restriction_runs_on_that_worker(api_client):
    pids = api_client.run(os.getpid)
    for address, pid in pids.items():
        futures = api_client.map(getpid_task, range(6), workers=[address], pure=False)
        assert set(api_client.gather(futures)) == {pid}
        single = api_client.submit(getpid_task, workers=[address], pure=False)
        assert single.result() == pid


def test_restriction_to_unknown_worker_with_allow_other_workers_runs(api_client):
    future = api_client.submit(
        inc, 5, workers=["tcp://127.0.0.1:9"], allow_other_workers=True, pure=False
    )
    assert future.result() == 6


def test_strict_restriction_to_unknown_worker_stays_pending(api, api_client):
    future = api_client.submit(inc, 6, workers=["tcp://127.0.0.1:9"], pure=False)
    with pytest.raises(TimeoutError):
        api.wait([future], timeout=0.5)
    assert future.status == "pending"
    future.cancel()


def test_unsatisfiable_resources_stay_pending(api, api_client):
    future = api_client.submit(inc, 7, resources={"GPU": 1}, pure=False)
    with pytest.raises(TimeoutError):
        api.wait([future], timeout=0.5)
    assert future.status == "pending"
    future.cancel()


# ---------------------------------------------------------------------------
# scatter


def test_scatter_list_gives_list_of_finished_futures(api, api_client):
    futures = api_client.scatter([1, 2, 3])
    assert isinstance(futures, list)
    assert all(isinstance(f, api.Future) for f in futures)
    assert [f.status for f in futures] == ["finished"] * 3
    assert api_client.gather(futures) == [1, 2, 3]


def test_scatter_dict_gives_dict_of_futures_keyed_by_the_dict_keys(api_client):
    names = {unique("a"): 1, unique("b"): 2}
    futures = api_client.scatter(names)
    assert isinstance(futures, dict)
    assert set(futures) == set(names)
    assert {name: f.key for name, f in futures.items()} == {n: n for n in names}
    assert api_client.gather(futures) == names


def test_scatter_single_value_gives_one_future(api, api_client):
    future = api_client.scatter(5)
    assert isinstance(future, api.Future)
    assert future.result() == 5


def test_scatter_then_submit(api_client):
    x, y = api_client.scatter([1, 2])
    assert api_client.submit(add, x, y).result() == 3
    assert api_client.gather(api_client.map(inc, [x, y])) == [2, 3]


def test_scatter_broadcast_puts_data_on_every_worker(api, api_client):
    [future] = api_client.scatter([unique("bcast")], broadcast=True)
    holders = api.who_has(api_client, [future])
    if holders is None:
        pytest.skip(f"{api.name} has no Client.who_has to observe data placement")
    assert holders[future.key] == set(api_client.scheduler_info()["workers"])


def test_scatter_to_workers_puts_data_only_there(api, api_client):
    address = sorted(api_client.scheduler_info()["workers"])[0]
    [future] = api_client.scatter([unique("placed")], workers=[address])
    holders = api.who_has(api_client, [future])
    if holders is None:
        pytest.skip(f"{api.name} has no Client.who_has to observe data placement")
    assert holders[future.key] == {address}


# ---------------------------------------------------------------------------
# cancel


def test_future_cancel_of_running_task(api_client, api_gate):
    future = api_client.submit(wait_for_file, str(api_gate), 1, pure=False)
    future.cancel()
    assert future.cancelled() is True
    assert future.status == "cancelled"
    assert future.done() is True
    with pytest.raises(CancelledError):
        future.result()


def test_exception_of_cancelled_future_is_none(api_client, api_gate):
    # distributed: exception()/traceback() return None for a cancelled future
    # (concurrent.futures would raise CancelledError instead).
    future = api_client.submit(wait_for_file, str(api_gate), 1, pure=False)
    future.cancel()
    assert future.exception() is None


def test_client_cancel_list_of_futures(api_client, api_gate):
    futures = [api_client.submit(wait_for_file, str(api_gate), i, pure=False) for i in range(6)]
    api_client.cancel(futures)
    assert [f.status for f in futures] == ["cancelled"] * 6
    assert all(f.cancelled() for f in futures)


def test_dependent_of_cancelled_future_is_cancelled(api_client, api_gate):
    blocked = api_client.submit(wait_for_file, str(api_gate), 1, pure=False)
    dependent = api_client.submit(inc, blocked)
    blocked.cancel()
    with pytest.raises(CancelledError):
        dependent.result(timeout=60)
    assert dependent.status == "cancelled"


def test_finished_future_is_not_cancelled(api_client):
    future = api_client.submit(inc, 1)
    assert future.result() == 2
    assert future.cancelled() is False


# ---------------------------------------------------------------------------
# result(timeout), wait


def test_result_timeout_raises_timeout_error(api_client, api_gate):
    future = api_client.submit(wait_for_file, str(api_gate), 1, pure=False)
    with pytest.raises(TimeoutError):
        future.result(timeout=0.2)
    api_gate.touch()
    assert future.result() == 1


def test_wait_all_completed_returns_done_and_not_done_sets(api, api_client):
    futures = api_client.map(inc, range(4))
    result = api.wait(futures)
    done, not_done = result
    assert result.done is done and result.not_done is not_done
    assert isinstance(done, set) and isinstance(not_done, set)
    assert done == set(futures)
    assert not_done == set()
    assert all(f.status == "finished" for f in futures)


def test_wait_counts_failed_futures_as_done(api, api_client):
    ok = api_client.submit(inc, 1)
    bad = api_client.submit(raise_value_error_remotely, 1)
    done, not_done = api.wait([ok, bad])
    assert done == {ok, bad}
    assert not_done == set()
    assert bad.status == "error"


def test_wait_first_completed(api, api_client, api_gate):
    blocked = api_client.submit(wait_for_file, str(api_gate), 1, pure=False)
    fast = api_client.submit(inc, 1)
    done, not_done = api.wait([blocked, fast], return_when="FIRST_COMPLETED")
    assert done == {fast}
    assert not_done == {blocked}


def test_wait_timeout_raises_timeout_error(api, api_client, api_gate):
    blocked = api_client.submit(wait_for_file, str(api_gate), 1, pure=False)
    with pytest.raises(TimeoutError):
        api.wait([blocked], timeout=0.2)
    api_gate.touch()
    done, not_done = api.wait([blocked], timeout=60)
    assert done == {blocked} and not_done == set()


def test_wait_on_cancelled_future_raises_cancelled_error(api, api_client, api_gate):
    # distributed raises FuturesCancelledError (a concurrent.futures.CancelledError)
    blocked = api_client.submit(wait_for_file, str(api_gate), 1, pure=False)
    blocked.cancel()
    with pytest.raises(CancelledError):
        api.wait([blocked])


# ---------------------------------------------------------------------------
# as_completed


def test_as_completed_yields_each_input_future_once(api, api_client):
    futures = api_client.map(inc, range(10))
    seen = list(api.as_completed(futures))
    assert len(seen) == 10
    assert {id(f) for f in seen} == {id(f) for f in futures}  # the very same objects
    assert sorted(f.result() for f in seen) == list(range(1, 11))


def test_as_completed_yields_in_completion_order(api, api_client, api_gate):
    blocked = api_client.submit(wait_for_file, str(api_gate), "slow", pure=False)
    fast = api_client.submit(identity, "fast", pure=False)
    iterator = iter(api.as_completed([blocked, fast]))
    assert next(iterator) is fast
    api_gate.touch()
    assert next(iterator) is blocked
    with pytest.raises(StopIteration):
        next(iterator)


def test_as_completed_with_results_yields_future_result_pairs(api, api_client):
    futures = api_client.map(inc, range(5))
    pairs = list(api.as_completed(futures, with_results=True))
    assert len(pairs) == 5
    for future, result in pairs:
        assert future.result() == result
    assert sorted(r for _, r in pairs) == [1, 2, 3, 4, 5]


def test_as_completed_with_results_raises_remote_error(api, api_client):
    bad = api_client.submit(raise_value_error_remotely, 3)
    with pytest.raises(ValueError, match="bad value 3"):
        list(api.as_completed([bad], with_results=True))


def test_as_completed_without_results_yields_failed_futures(api, api_client):
    ok = api_client.submit(inc, 1)
    bad = api_client.submit(raise_value_error_remotely, 3)
    seen = list(api.as_completed([ok, bad]))
    assert {f.key: f.status for f in seen} == {ok.key: "finished", bad.key: "error"}


def test_as_completed_yields_duplicates_as_given(api, api_client):
    a = api_client.submit(inc, 1)
    b = api_client.submit(inc, 2)
    assert len(list(api.as_completed([a, a, b]))) == 3


# ---------------------------------------------------------------------------
# add_done_callback


def _collect_callback(future, timeout=60):
    calls = []
    event = threading.Event()

    def callback(fut):
        calls.append((fut, fut.status))
        event.set()

    future.add_done_callback(callback)
    assert event.wait(timeout), "callback was never called"
    return calls


def test_add_done_callback_called_with_the_future(api_client):
    future = api_client.submit(inc, 100)
    calls = _collect_callback(future)
    assert calls[0][0] is future
    assert calls[0][1] == "finished"
    assert future.result() == 101


def test_add_done_callback_on_already_finished_future(api_client):
    future = api_client.submit(inc, 101)
    assert future.result() == 102
    calls = _collect_callback(future)
    assert [(f is future, status) for f, status in calls] == [(True, "finished")]


def test_add_done_callback_on_failed_future(api_client):
    future = api_client.submit(raise_value_error_remotely, 0)
    calls = _collect_callback(future)
    assert calls[0][1] == "error"


def test_add_done_callback_on_cancelled_future(api_client, api_gate):
    future = api_client.submit(wait_for_file, str(api_gate), 1, pure=False)
    event = threading.Event()
    statuses = []
    future.add_done_callback(lambda f: (statuses.append(f.status), event.set()))
    future.cancel()
    assert event.wait(60)
    assert statuses == ["cancelled"]


# ---------------------------------------------------------------------------
# Releasing data (implementation-specific observation: who_has)


def test_releasing_last_future_frees_data_on_cluster(api, api_client):
    future = api_client.submit(inc, 1000, key=unique("released"))
    assert future.result() == 1001
    key = future.key
    holders = api.who_has(api_client)
    if holders is None:
        pytest.skip(f"{api.name} has no Client.who_has to observe data on the cluster")
    assert len(holders.get(key, ())) == 1
    del future
    gc.collect()
    assert wait_until(lambda: key not in api.who_has(api_client)), "data was never released"


def test_data_is_kept_while_another_future_holds_the_key(api, api_client):
    key = unique("kept")
    first = api_client.submit(inc, 1, key=key)
    second = api_client.submit(inc, 1, key=key)
    assert first.result() == 2
    del first
    gc.collect()
    # The release of `first` must not drop data that `second` still needs.
    assert second.result() == 2
    holders = api.who_has(api_client)
    if holders is None:
        pytest.skip(f"{api.name} has no Client.who_has to observe data on the cluster")
    assert len(holders.get(key, ())) == 1
