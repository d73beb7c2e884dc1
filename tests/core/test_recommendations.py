"""The scheduler's pending recommendations: last in, first out, one per task.

They are a stack with each task's live entry index on the task (not an
ordered dict); these tests pin the order and the replacement the dict gave.
"""

from __future__ import annotations

from teamster.core.story import StoryEntry

from .builders import A, graph, register_worker, scheduler, spec, states


def _queued_three():  # type: ignore[no-untyped-def]
    s = scheduler(register_worker(A))
    s.handle(graph("c", spec("x"), spec("y"), spec("z"), sid="g1"))
    assert states(s, "x", "y", "z") == {"x": "processing", "y": "queued", "z": "queued"}
    return s


def _run(s, stimulus_id: str) -> list[StoryEntry]:  # type: ignore[no-untyped-def]
    """The transitions the pending recommendations make (wanted tasks
    released go back to waiting, and to the queue: the only worker is busy)."""
    s._run_recommendations(stimulus_id)
    return [e for e in s.log.story("y", "z") if e.stimulus_id == stimulus_id]


def _requeued(key: str) -> list[StoryEntry]:
    return [
        StoryEntry(key, "queued", "released", "r"),
        StoryEntry(key, "released", "waiting", "r"),
        StoryEntry(key, "waiting", "queued", "r"),
    ]


def test_recommendations_run_last_in_first_out() -> None:
    s = _queued_three()
    s.recommend(s.tasks["y"], "released")
    s.recommend(s.tasks["z"], "released")
    assert _run(s, "r") == _requeued("z") + _requeued("y")


def test_a_task_recommended_again_runs_once_in_its_latest_place() -> None:
    s = _queued_three()
    y, z = s.tasks["y"], s.tasks["z"]
    s.recommend(y, "processing")
    s.recommend(z, "released")
    s.recommend(y, "released")  # replaces y's first recommendation, on top
    # y first (latest on top), then z. y's replaced "processing", below z's,
    # never runs: it would take y from the queue (and log it) after z.
    assert _run(s, "r") == _requeued("y") + _requeued("z")
    assert y.rec_index == z.rec_index == -1
    s.validate()
