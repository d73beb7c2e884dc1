"""Result type names: one copy of each, however many results carry it."""

from __future__ import annotations

import pytest

from teamster.core.scheduler import state as state_module

from .builders import A, finished, graph, register_worker, scheduler, spec


def _fresh(name: str) -> str:
    return "".join(list(name))  # (an equal string, not the same object)


def test_results_of_one_type_share_one_name() -> None:
    s = scheduler(register_worker(A))
    s.handle(graph("c", spec("x"), spec("y"), wanted=("x", "y"), sid="g"))
    first, second = _fresh("DataFrame"), _fresh("DataFrame")
    assert first is not second
    s.handle(finished(s, A, "x", type_name=first))
    s.handle(finished(s, A, "y", type_name=second))
    assert s.tasks["x"].type_name == "DataFrame"
    assert s.tasks["y"].type_name is s.tasks["x"].type_name


def test_past_the_limit_each_result_keeps_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_module, "MAX_TYPE_NAMES", 1)
    s = scheduler(register_worker(A))
    s.handle(graph("c", spec("x"), spec("y"), spec("z"), wanted=("x", "y", "z"), sid="g"))
    s.handle(finished(s, A, "x", type_name=_fresh("int")))
    name = _fresh("Gen0")
    s.handle(finished(s, A, "y", type_name=name))
    s.handle(finished(s, A, "z", type_name=_fresh("int")))
    assert s.tasks["y"].type_name is name  # (not remembered: the limit was reached)
    assert s.tasks["z"].type_name is s.tasks["x"].type_name
    assert list(s.type_names) == ["int"]
