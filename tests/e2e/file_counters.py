"""Task functions that count their executions in a file, so the count is
visible across worker processes (retries, recomputation, deduplication)."""

from __future__ import annotations

import os
from pathlib import Path


def _bump(counter_path) -> int:
    calls = int(Path(counter_path).read_text()) if os.path.exists(counter_path) else 0
    Path(counter_path).write_text(str(calls + 1))
    return calls


def count_calls(counter_path, x):
    """Return x, counting executions in a file."""
    _bump(counter_path)
    return x


def fail_first_n(counter_path, n_failures):
    """Fail the first ``n_failures`` calls; return how many calls came before."""
    calls = _bump(counter_path)
    if calls < n_failures:
        raise RuntimeError(f"attempt {calls}")
    return calls
