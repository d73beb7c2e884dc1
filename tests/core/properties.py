"""What the property tests of the scheduler and the worker share (tier 2).

``test_properties_scheduler.py`` and ``test_properties_worker.py`` drive the
real state machines through random event sequences with hypothesis.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, Phase, settings

from teamster.core import messages as m

RUN = m.Serialized(b"run")
RUN2 = m.Serialized(b"run-another-computation")
EXC = m.Serialized(b"exc")

#: ~50 ms per example on a slow 2-core machine: ~15 s per property test.
#: (Hunting bugs: raise max_examples locally; a few thousand pass.)
SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    # "explain" re-runs a failure hundreds of times for little insight here.
    phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Hypothesis shrinks a failure for up to 300 s (its MAX_SHRINKING_SECONDS),
#: as long as the suite's per-test timeout: a failing property test was
#: killed mid-shrink, and its minimal example and reproduction blob were
#: never printed. Room for generation, the shrink and the report (each
#: property test module sets ``pytestmark`` to this).
TIMEOUT_S = 900


class WorldFailure(AssertionError):
    pass


class TracedWorld:
    """A world driving one state machine (``core``), with the trace of what it
    was told and said: a failure names the last events and the key's story."""

    def __init__(self, core: Any) -> None:
        self.core = core
        self.n_events = 0
        self.trace: list[str] = []

    def fail(self, what: str, key: m.Key | None = None) -> WorldFailure:
        lines = [what, "last events:", *("  " + t for t in self.trace[-40:])]
        if key is not None:
            lines.append(f"story of {key!r}:")
            lines += [f"  {e.start} -> {e.finish} ({e.stimulus_id})"
                      for e in self.core.story(key)]
        return WorldFailure("\n".join(lines))

    def handle_traced(self, event: Any) -> list[Any]:
        """``core.handle(event)``, traced; a failure inside it becomes a WorldFailure."""
        self.n_events += 1
        self.trace.append(f"#{self.n_events} {event!r}")
        try:
            out: list[Any] = self.core.handle(event)
        except Exception as exc:
            raise self.fail(f"{type(exc).__name__}: {exc}", getattr(exc, "key", None)) from exc
        self.trace.extend(f"    -> {instr!r}" for instr in out)
        return out
