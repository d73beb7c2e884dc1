"""Optional C build of the scheduler core; everything else is in pyproject.toml.

    pip install mypy 'setuptools>=77'
    TEAMSTER_COMPILE=1 pip install --no-build-isolation .

compiles the modules listed under ``[tool.teamster] compiled-core`` with
mypyc (``--no-build-isolation`` lets the build see the mypy installed
beside it; a C compiler is needed) into C extensions that Python imports in place of the sources. Without
the variable the install is pure Python, as development and the test suite
want it (tracebacks, debuggers, monkeypatching).
"""

import os
import tomllib
from pathlib import Path

from setuptools import setup


def compiled_core() -> list:
    if os.environ.get("TEAMSTER_COMPILE") != "1":
        return []
    from mypyc.build import mypycify  # noqa: PLC0415 - only when compiling

    here = Path(__file__).parent
    config = tomllib.loads((here / "pyproject.toml").read_text())
    return mypycify(config["tool"]["teamster"]["compiled-core"], opt_level="3")


setup(ext_modules=compiled_core())
