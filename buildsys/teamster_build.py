"""teamster's build backend: setuptools', with the scheduler core compiled in wheels.

A wheel (``pip install .``, ``pip wheel .``, a container image) is what runs
a production scheduler, so by default it gets the scheduler's state machine
compiled with mypyc: the same source and the same decisions
(tests/sim/test_compiled_core.py) for 1.7-1.9x less CPU per task. An
editable install (``pip install -e .``, which ``make test`` uses) stays pure
Python, as development wants it: tracebacks into the source, debuggers,
monkeypatching.

``TEAMSTER_COMPILE`` when building a wheel:

- unset: compile if this machine can (a C compiler on PATH); otherwise say
  so on stderr and build pure Python. ``teamster.core.scheduler.CORE`` tells
  which one is installed, and the scheduler logs it when it starts.
- ``1``: compile, and fail the build if that is not possible.
- ``0``: pure Python.

mypy (which brings mypyc) is added to the wheel build's requirements only
when it will compile; setup.py does the compiling.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401 - the rest of the PEP 517/660 interface
    build_editable,
    build_sdist,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

#: The mypy (mypyc) range the core is type-checked and compiled with.
MYPY = "mypy>=1.10"


def _mode() -> str:
    mode = os.environ.get("TEAMSTER_COMPILE", "")
    if mode not in ("", "0", "1"):
        raise ValueError(f"TEAMSTER_COMPILE={mode!r}: use 1 (compile), 0 (pure Python), "
                         "or leave it unset (compile when a C compiler is available)")
    return mode


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def will_compile() -> bool:
    """Whether a wheel built now gets the compiled core (raises if it must but cannot)."""
    mode = _mode()
    if mode == "0":
        return False
    if _compiler() is None:
        if mode == "1":
            raise RuntimeError("TEAMSTER_COMPILE=1 but no C compiler (cc or gcc) on PATH: "
                               "install one (apt-get install gcc) or unset TEAMSTER_COMPILE")
        print("teamster: no C compiler (cc or gcc) on PATH, so this wheel has the pure-Python "
              "scheduler core (1.7-1.9x more CPU per task); install gcc and rebuild to "
              "compile it", file=sys.stderr)
        return False
    return True


def compiler_requires() -> list[str]:
    """What a wheel build needs beyond setuptools' own requirements."""
    return [MYPY] if will_compile() else []


def get_requires_for_build_wheel(config_settings: Any = None) -> list[str]:
    requires: list[str] = _setuptools.get_requires_for_build_wheel(config_settings)
    return [*requires, *compiler_requires()]


def build_wheel(wheel_directory: str, config_settings: Any = None,
                metadata_directory: str | None = None) -> str:
    # setup.py compiles when TEAMSTER_COMPILE=1; decide here what that means.
    os.environ["TEAMSTER_COMPILE"] = "1" if will_compile() else "0"
    name: str = _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)
    return name
