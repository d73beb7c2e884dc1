"""Run the curated dask test modules on a teamster cluster, or on dask's own schedulers.

    python tests/dask_suite/run.py                 # on teamster (what `make test` runs)
    python tests/dask_suite/run.py --baseline      # the same modules, dask's schedulers
    python tests/dask_suite/run.py -- -x -k sum    # extra pytest arguments after --
    python tests/dask_suite/run.py --module dask.tests.test_delayed   # one module only

Runs from the repository root, so the project's pytest settings (timeout)
apply. The modules are dask's own, shipped inside the installed dask package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent

#: The curated set: delayed, bag, dataframe shuffles, array reductions.
MODULES = [
    "dask.tests.test_delayed",
    "dask.bag.tests.test_bag",
    "dask.dataframe.tests.test_shuffle",
    "dask.array.tests.test_reductions",
]


def main(argv: list[str]) -> int:
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    baseline = "--baseline" in argv
    modules = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--module"] or MODULES
    args = ["-q", "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestUnknownMarkWarning",
            "--pyargs", *modules]
    if not baseline:
        sys.path.insert(0, str(HERE))
        args += ["-p", "teamster_dask_plugin"]
    os.chdir(REPO_ROOT)
    return int(pytest.main(args + extra))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
