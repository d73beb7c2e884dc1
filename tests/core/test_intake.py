"""Graph intake (``UpdateGraph``): tasks created and linked in one pass when
dependencies come first, a second pass when one comes later, the priority
order whatever the order sent, and unwanted leaves forgotten at once."""

from __future__ import annotations

from .builders import A, compute, finished, graph, register_worker, scheduler, spec, states


def test_a_dependency_later_in_the_message_is_linked() -> None:
    s = scheduler(register_worker(A))
    out = s.handle(graph("c", spec("y", "x"), spec("x"), wanted=("y",), sid="g1"))
    assert out == [compute(A, "x", (0, 1, 0), "g1")]
    assert states(s, "x", "y") == {"x": "processing", "y": "waiting"}
    assert [d.key for d in s.tasks["y"].dependencies] == ["x"]
    assert list(s.tasks["x"].dependents) == [s.tasks["y"]]
    assert s.handle(finished(s, A, "x", nbytes=5, sid="f-x")) == [
        compute(A, "y", (0, 1, 0), "f-x", who_has=(("x", (A,), 5),)),
    ]


def test_tasks_sent_out_of_priority_order_start_in_priority_order() -> None:
    s = scheduler(register_worker(A))
    # Each its own prefix: a prefix of unknown duration gets one task per thread.
    out = s.handle(graph("c", spec("a", priority=(0, 2)), spec("b", priority=(0, 0)),
                         spec("c", priority=(0, 1)), sid="g1"))
    assert out == [compute(A, "b", (0, 1, 0), "g1")]
    assert s.handle(finished(s, A, "b", sid="f-b"))[1:] == [compute(A, "c", (0, 1, 1), "f-b")]
    assert s.handle(finished(s, A, "c", sid="f-c"))[1:] == [compute(A, "a", (0, 1, 2), "f-c")]


def test_user_priorities_that_differ_order_before_the_order() -> None:
    s = scheduler(register_worker(A))
    out = s.handle(graph("c", spec("a", priority=(0, 0)), spec("b", priority=(1, 1)),
                         sid="g1"))
    assert out == [compute(A, "b", (-1, 1, 1), "g1")]


def test_an_unwanted_leaf_is_forgotten_even_when_another_key_is_wanted_twice() -> None:
    s = scheduler(register_worker(A))
    out = s.handle(graph("c", spec("x"), spec("z"), wanted=("x", "x"), sid="g1"))
    assert out == [compute(A, "x", (0, 1, 0), "g1")]
    assert list(s.tasks) == ["x"]


def test_an_unwanted_dependent_is_forgotten_and_its_input_kept_for_the_other() -> None:
    s = scheduler(register_worker(A))
    out = s.handle(graph("c", spec("x"), spec("y", "x"), spec("z", "x"), wanted=("y",),
                         sid="g1"))
    assert out == [compute(A, "x", (0, 1, 0), "g1")]
    assert list(s.tasks) == ["x", "y"]
    assert list(s.tasks["x"].dependents) == [s.tasks["y"]]


def test_priorities_reach_the_worker_exactly_as_given() -> None:
    """The scheduler keeps a priority as numbers and rebuilds the tuple it
    sends: ints come back as the same ints; what floats cannot carry (huge
    ints, a float user priority) is kept as given."""
    s = scheduler(register_worker(A))
    huge = 2**60 + 1  # (not exact as a float)
    out = s.handle(graph("c", spec("a", priority=(0, 5)), spec("b", priority=(-huge, 6)),
                         spec("c", priority=(0.5, 7)), sid="g1"))
    assert s.tasks["a"].priority == (0, 1, 5)
    assert [type(x) for x in s.tasks["a"].priority] == [int, int, int]
    assert s.tasks["b"].priority == (huge, 1, 6)
    assert s.tasks["c"].priority == (-0.5, 1, 7)
    # (Each its own prefix: one task per thread; the highest priority first.)
    assert out == [compute(A, "c", (-0.5, 1, 7), "g1")]
    assert s.handle(finished(s, A, "c", sid="f-c"))[1:] == [compute(A, "a", (0, 1, 5), "f-c")]
    assert s.handle(finished(s, A, "a", sid="f-a"))[1:] == [compute(A, "b", (huge, 1, 6), "f-a")]
