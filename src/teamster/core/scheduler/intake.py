"""Graph intake: the tasks of an ``UpdateGraph`` (and scattered data) become scheduler tasks.

Priorities are normalised here (see ``set_priority``), tasks created and
linked to their dependencies, and the needed ones moved towards processing
in priority order. At a million tasks this event alone was a quarter of the
scheduler's CPU per task in teamster.sim, hence the tight loops.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

from teamster.core import messages as m
from teamster.core.keys import key_prefix
from teamster.core.scheduler import transitions as tr
from teamster.core.scheduler.entities import TaskPrefix, TaskState

if TYPE_CHECKING:
    from teamster.core.scheduler.state import SchedulerState


def _by_order(ts: TaskState) -> float:
    return ts.q_order


def _by_user_then_order(ts: TaskState) -> tuple[float, float]:
    return (ts.q_user, ts.q_order)


#: Ints this large and smaller convert to floats exactly.
_EXACT: Final = 2**53


def _as_float(x: Any) -> float:
    """A priority element as a float, order kept (huge ints: ties at the ends)."""
    if isinstance(x, int) and -_EXACT <= x <= _EXACT:
        return float(x)  # (the usual case, without a generic conversion)
    try:
        return float(x)
    except OverflowError:
        return math.inf if x > 0 else -math.inf


def set_priority(ts: TaskState, priority: m.Priority, generation: int) -> None:
    """Give ``ts`` the scheduler's priority for a client's (user priority,
    order): higher user priority first, then earlier submissions, then the
    order. Always three elements (anything after the order is ignored); the
    ready queue orders by their numeric copy (``q_user`` to ``q_order``).
    """
    user: Any = -priority[0] if priority else 0
    order: Any = priority[1] if len(priority) >= 2 else 0
    ts.q_generation = generation
    if (type(user) is int and type(order) is int and -_EXACT <= user <= _EXACT
            and -_EXACT <= order <= _EXACT):
        ts.q_user = float(user)  # (``TaskState.priority`` rebuilds them exactly)
        ts.q_order = float(order)
        return
    ts.priority_kept = (user, generation, order)
    ts.q_user = _as_float(user)
    ts.q_order = _as_float(order)


def find_prefix(prefixes: dict[str, TaskPrefix], name: str) -> TaskPrefix:
    """The prefix called ``name``, created on first use."""
    prefix = prefixes.get(name)
    if prefix is None:
        prefix = prefixes[name] = TaskPrefix(name)
    return prefix


def _renamed(key: tuple[Any, ...], name: str) -> tuple[Any, ...]:
    """``key`` with ``name`` (an equal string) in place of its first element."""
    if len(key) == 2:
        return (name, key[1])
    return (name,) + key[1:]


def update_graph(s: SchedulerState, ev: m.UpdateGraph) -> None:
    """A client submitted tasks: create the new ones, link them, start the needed ones."""
    cs = s._client(ev.client, ev.now)
    s.generation += 1
    if not s.n_processing and not s.n_queued and not s.unrunnable:
        s.report.start(ev.now, s)
    tasks = s.tasks
    prefixes = s.prefixes
    generation = s.generation
    # At a million tasks none of them stays in cache between two passes over
    # the graph: each pass is a few cache misses per task. So one pass
    # creates the tasks and links each to its dependencies, which dask.order
    # and our clients send first; a task naming one that comes later in the
    # message is linked in a second pass over those alone.
    new: list[TaskState] = []
    later: list[tuple[TaskState, m.TaskSpec]] = []
    # A dask key is mostly a tuple (name, index...) whose name a whole layer
    # of the graph shares, but decoding gives every key its own copy of it.
    # The keys stored share one name object per layer: every later lookup
    # of a key (each message about a task) compares the name with that one,
    # used all the time and so in cache, not with a copy of its own, as cold
    # as the task's record (and a million-task graph holds ~70 bytes per
    # task less). The layer's prefix is found once too.
    layers: dict[str, tuple[str, TaskPrefix]] = {}
    user = 0.0  # the new tasks' user priority while they share one
    last_order = -math.inf
    in_order = True  # in priority order as sent (then no sort is needed)
    n_depended = 0  # new tasks with a dependent
    for spec in ev.tasks:
        key = spec.key
        if key in tasks:
            continue  # same key, same computation (keys are content-addressed)
        if type(key) is tuple and key and type(key[0]) is str:
            name: str = key[0]
            layer = layers.get(name)
            if layer is None:
                layer = layers[name] = (name, find_prefix(prefixes, key_prefix(key)))
            else:
                key = _renamed(key, layer[0])
            prefix = layer[1]
        else:
            prefix = find_prefix(prefixes, key_prefix(key))
        ts = tasks[key] = TaskState(key, prefix, spec.run_spec)
        set_priority(ts, spec.priority, generation)
        if ts.q_user != user:
            if new:
                user = math.nan  # (they differ)
                in_order = False
            else:
                user = ts.q_user
        if ts.q_order < last_order:
            in_order = False
        last_order = ts.q_order
        if spec.retries:
            ts.retries = spec.retries
        if spec.workers:
            ts.worker_restrictions = frozenset(spec.workers)
            ts.allow_other_workers = spec.allow_other_workers
        if spec.resources:
            ts.resource_restrictions = dict(spec.resources)
        new.append(ts)
        if spec.dependencies:
            linked = _link(tasks, ts, spec.dependencies, generation, False)
            if linked < 0:
                later.append((ts, spec))
            else:
                n_depended += linked
    # Only the last pass finds dependencies missing: a task failed at
    # submission is one of these. (Knowing that no task failed saves reading
    # ``exception_blame``, the last line of every task's record, below.)
    failed = False
    for ts, spec in later:
        n_depended += _link(tasks, ts, spec.dependencies, generation, True)
        if ts.exception_blame is ts:
            failed = True
    n_wanted_leaves = 0  # new tasks without dependents that a client wants
    for key in ev.wanted:
        wts = s.tasks.get(key)
        if wts is not None:
            if (wts.q_generation == generation and not wts.has_dependents()
                    and not wts.who_wants):
                n_wanted_leaves += 1
            s._want(cs, wts, ev.stimulus_id)
    # Ready tasks are recommended for processing as they are met, and
    # recommendations run last in, first out: meet them lowest priority
    # first, so the highest-priority task takes the first free slot.
    stimulus_id = ev.stimulus_id
    released_waiting = tr.released_waiting
    log = s.log
    if not in_order:
        # (In one submission only the user priority and the order differ;
        # most often only the order, and sorting by one number is faster.)
        new.sort(key=_by_user_then_order if math.isnan(user) else _by_order)
    for ts in reversed(new):
        if failed and ts.exception_blame is ts:
            s.transition(ts, "erred", stimulus_id)
        elif (ts.who_wants or ts.n_waiters) and ts.state == "released":
            # (transition() inlined: this runs for every task submitted.)
            released_waiting(s, ts, stimulus_id)
            log.append(ts.key, "released", ts.state, stimulus_id)
            if s.validate_enabled:
                s._touched[ts] = None
    if len(new) > n_depended + n_wanted_leaves:
        # Some new task has no dependent and no client wants it.
        # (Erred too: a task failed at submission that nobody wants would
        # otherwise be kept forever.)
        for ts in new:
            if (ts.state in ("released", "erred") and not ts.has_dependents()
                    and not (ts.who_wants or ts.n_waiters)):
                s.recommend(ts, "forgotten")
    for key in ev.wanted:
        wts = s.tasks.get(key)
        if wts is not None and wts.state == "released":
            # A known key wanted again (kept as lineage of a result, or
            # released since): it must be computed again.
            s.recommend(wts, "waiting")


def _link(tasks: dict[m.Key, TaskState], ts: TaskState, dep_keys: tuple[m.Key, ...],
          generation: int, last_pass: bool) -> int:
    """Link ``ts`` with its dependencies; return how many tasks of this
    submission (``generation``) got their first dependent. Before the last
    pass, -1 (and nothing linked) if a dependency is not known yet."""
    deps: list[TaskState] = []
    for dep_key in dep_keys:
        dts = tasks.get(dep_key)
        if dts is None:
            if not last_pass:
                return -1
            # The client referenced a key that is gone (its future was released).
            ts.exception_text = (
                f"Task {ts.key!r} depends on {dep_key!r}, which the scheduler "
                "does not hold (was its future released or cancelled?)"
            )
            ts.exception_blame = ts
            continue
        deps.append(dts)
    n_first = 0
    for dts in deps:
        if dts.q_generation == generation and not dts.has_dependents():
            n_first += 1
        dts.add_dependent(ts)
    ts.dependencies = tuple(deps) if len(deps) < 2 else tuple(dict.fromkeys(deps))
    return n_first


def scattered_data(s: SchedulerState, ev: m.ScatteredData) -> None:
    """A client scattered data to workers: its keys are in memory there."""
    cs = s._client(ev.client)
    for key, holders, nbytes in ev.who_has:
        workers = [s.workers[a] for a in holders if a in s.workers]
        ts = s.tasks.get(key)
        if ts is None:
            prefix = find_prefix(s.prefixes, key_prefix(key))
            ts = s.tasks[key] = TaskState(key, prefix, None)
        if ts.state not in ("released", "memory"):
            continue  # a computation under this key is already under way
        s._want(cs, ts, ev.stimulus_id)
        if not workers:
            ts.exception_text = f"Scattered {key!r} to workers that have since left"
            ts.exception_blame = ts
            if ts.state == "released":
                s.transition(ts, "erred", ev.stimulus_id)
            continue
        if ts.state == "released":
            # (A key already in memory keeps its size: the holders'
            # byte counts were summed with it.)
            ts.nbytes = nbytes
        for ws in workers:
            s.add_replica(ts, ws)
        if ts.state == "released":
            s.transition(ts, "memory", ev.stimulus_id)
