"""What the property tests of the scheduler and the worker share (tier 2).

``test_properties_scheduler.py`` and ``test_properties_worker.py`` drive the
real state machines through random event sequences with hypothesis.
"""

from __future__ import annotations

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
