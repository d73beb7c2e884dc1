"""The scheduler's pure state machine."""

from teamster.core.scheduler import state as _state
from teamster.core.scheduler.state import SchedulerState

#: Which build of the state machine is imported: "compiled" (mypyc C
#: extensions, what wheels install; buildsys/teamster_build.py) or "python"
#: (the sources, as in an editable install).
CORE = "python" if _state.__file__.endswith(".py") else "compiled"

__all__ = ["CORE", "SchedulerState"]
