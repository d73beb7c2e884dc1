"""The C build of the scheduler core; everything else is in pyproject.toml.

With ``TEAMSTER_COMPILE=1`` this compiles the modules listed under
``[tool.teamster] compiled-core`` with mypyc into C extensions that Python
imports in place of the sources. The build backend
(buildsys/teamster_build.py) sets it for wheels when a C compiler is
available, and adds mypy to the build's requirements; editable installs
(development, the test suite) stay pure Python.
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
