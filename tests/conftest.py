"""Shared test setup for every tier.

Validation mode is switched on here, at import time, before any test module
(or any subprocess a test starts, which inherits the environment) builds a
scheduler or a worker: a hang or a wrong answer should surface as a broken
invariant, not a timeout. See ARCHITECTURE.md, "Validation mode".
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["TEAMSTER_VALIDATE"] = "1"


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a real full disk (ENOSPC) for spill files."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a 1 MiB tmpfs here (needs root and CAP_SYS_ADMIN): "
                    f"{done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
