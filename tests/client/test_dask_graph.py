"""Dask graphs into TaskSpecs, without a cluster: what the scheduler and workers receive.

Run specs are executed here exactly as a worker does (``run_task`` with a
dict of dependency values), so the format is checked end to end in-process.
"""

from __future__ import annotations

import operator

import dask
import pytest
from dask import delayed
from dask._task_spec import Alias, DataNode, Task, TaskRef
from dask.highlevelgraph import HighLevelGraph
from dask.order import order
from dask.utils_test import inc

from teamster.client.dask_graph import GraphSubmission, flatten_keys, pack_results
from teamster.client.future import Future
from teamster.runtime.task_payload import run_task


def specs_of(dsk, keys, **kwargs):
    return {s.key: s for s in GraphSubmission(dsk, keys).specs("sid", **kwargs)}


def test_tasks_run_as_a_worker_runs_them():
    dsk = {"x": 1, "y": (inc, "x"), "z": (operator.add, "x", (inc, "y"))}
    specs = specs_of(dsk, ["z"])
    assert specs["x"].dependencies == () and specs["z"].dependencies == ("x", "y")
    assert run_task(specs["x"].run_spec, {}) == 1
    assert run_task(specs["y"].run_spec, {"x": 1}) == 2
    assert run_task(specs["z"].run_spec, {"x": 1, "y": 2}) == 4


def test_alias_has_no_run_spec_and_one_dependency():
    specs = specs_of({"a": [1, 2], "b": "a"}, ["b"])
    assert specs["b"].run_spec is None and specs["b"].dependencies == ("a",)


def test_priorities_follow_dask_order_and_the_users_priority():
    dsk = {"a": 1, "b": (inc, "a"), "c": (inc, "b"), "d": (operator.add, "a", "c")}
    graph = GraphSubmission(dsk, ["d"])
    rank = order(graph.nodes)
    specs = {s.key: s for s in graph.specs("sid", priority=3)}
    assert {k: s.priority for k, s in specs.items()} == {k: (3, rank[k]) for k in dsk}


def test_annotations_override_call_arguments_key_by_key():
    with dask.annotate(retries=3, priority=7, resources={"GPU": 1}, workers=["w1"],
                       allow_other_workers=True):
        a = delayed(inc)(1, dask_key_name="a")
    b = delayed(inc)(a, dask_key_name="b")
    specs = specs_of(b.__dask_graph__(), ["b"], retries=1, workers="w2", resources={"R": 2})
    assert (specs["a"].retries, specs["a"].priority[0], specs["a"].resources,
            specs["a"].workers, specs["a"].allow_other_workers) == (
        3, 7, (("GPU", 1.0),), ("w1",), True)
    assert (specs["b"].retries, specs["b"].priority[0], specs["b"].resources,
            specs["b"].workers, specs["b"].allow_other_workers) == (
        1, 0, (("R", 2.0),), ("w2",), False)


def test_futures_inside_nodes_become_dependencies_named_by_key():
    future = Future._make("f-123", None, None)  # type: ignore[arg-type]
    dsk = {"y": Task("y", operator.add, future, 1), "z": future}
    graph = GraphSubmission(dsk, ["y"])
    # {"z": future} names another key: an alias of cluster memory (culled here: unused).
    assert list(graph.nodes) == ["y"]
    (spec,) = graph.specs("sid")
    assert spec.dependencies == ("f-123",)
    assert b"teamster.client" not in bytes(spec.run_spec.buffers[0])  # a plain TaskRef
    assert run_task(spec.run_spec, {"f-123": 41}) == 42


def test_future_under_its_own_key_is_cluster_memory_not_a_task():
    future = Future._make("held", None, None)  # type: ignore[arg-type]
    graph = GraphSubmission({"held": future, "y": (inc, "held")}, ["y", "held"])
    assert list(graph.nodes) == ["y"] and graph.outside_graph() == ["held"]


def test_lambdas_and_closures_travel_by_value():
    offset = 10
    specs = specs_of({"x": 1, "y": (lambda v: v + offset, "x")}, ["y"])
    assert run_task(specs["y"].run_spec, {"x": 1}) == 11


def test_unpicklable_task_raises_type_error_naming_it():
    with pytest.raises(TypeError, match="Could not serialize the dask task"):
        specs_of({"y": Task("y", list, (i for i in range(3)))}, ["y"])


def test_large_node_travels_out_of_band():
    payload = b"x" * 100_000
    specs = specs_of({"big": DataNode("big", payload), "n": (len, "big")}, ["n"])
    assert len(specs["big"].run_spec.buffers) == 2  # args + the node's own frame
    assert run_task(specs["big"].run_spec, {}) == payload


def test_dict_graphs_are_culled_to_the_wanted_keys():
    graph = GraphSubmission({"x": 1, "y": (inc, "x"), "unused": (inc, "x")}, ["y"])
    assert sorted(graph.nodes) == ["x", "y"]


def test_high_level_graph_annotations():
    with dask.annotate(retries=2):
        layer = {"x": 1, "y": (inc, "x")}
        hlg = HighLevelGraph.from_collections("layer", layer, dependencies=())
    specs = specs_of(hlg, ["y"])
    assert specs["y"].retries == 2 and specs["x"].retries == 2


def test_dependencies_are_sorted_whatever_the_hash_seed():
    keys = [("x", i) for i in range(20)]
    dsk = {k: i for i, k in enumerate(keys)}
    dsk["s"] = (sum, list(keys))
    specs = specs_of(dsk, ["s"])
    assert list(specs["s"].dependencies) == sorted(keys, key=str)


def test_keys_flatten_and_pack_like_dask_get():
    assert flatten_keys([["a", ("t", 0)], "a", "b"]) == ["a", ("t", 0), "b"]
    values = {"a": 1, ("t", 0): 2, "b": 3}
    assert pack_results([["a", ("t", 0)], "b"], values) == ((1, 2), 3)
    assert pack_results(("t", 0), values) == 2


def test_other_node_kinds_round_trip():
    dsk = {"a": DataNode("a", {"k": 1}), "b": Alias("b", "a"),
           "c": Task("c", operator.getitem, TaskRef("a"), "k")}
    specs = specs_of(dsk, ["b", "c"])
    assert run_task(specs["c"].run_spec, {"a": {"k": 1}}) == 1


def test_curried_functions_travel_without_numpys_docstrings():
    import dask.array as da
    import numpy as np

    x = da.ones(4, chunks=2)
    graph = GraphSubmission(x.__dask_graph__(), [(x.name, 0)])
    (spec,) = [s for s in graph.specs("sid") if s.key == (x.name, 0)]
    assert b"Return an array of ones" not in bytes(spec.run_spec.buffers[0])
    np.testing.assert_array_equal(run_task(spec.run_spec, {}), np.ones(2))


def test_tasks_travel_without_their_cached_repr():
    task = Task("t-1", operator.add, TaskRef("a"), 1)
    assert "operator" in repr(task) or "add" in repr(task)  # caches the repr text
    (spec,) = GraphSubmission({"t-1": task}, ["t-1"]).specs("sid")
    assert b"<Task" not in bytes(spec.run_spec.buffers[0])
    assert run_task(spec.run_spec, {"a": 2}) == 3
