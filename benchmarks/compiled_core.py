"""The scheduler and worker cores compiled with mypyc, built once per source version.

    .venv/bin/python benchmarks/compiled_core.py      # build (or find) it, print its path

``sim_scale.py --compiled`` and ``balance_sim.py --compiled`` run their child
processes with this path first on ``PYTHONPATH``, so ``teamster simulate``
imports the C extensions in place of the cores' sources (the modules
listed under ``[tool.teamster] compiled-core`` in pyproject.toml, as
``TEAMSTER_COMPILE=1 pip install`` compiles them). Everything else imports
from the same copy of the source tree, so the two builds differ only in
being compiled. tests/sim/test_compiled_core.py checks they make the same
decisions.

The build lives in ``.build/compiled-core/<digest>/`` (the digest covers
every source file and the mypy version), takes ~20 s on 2 cores, and needs
mypy (the ``dev`` extra) and a C compiler.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE = REPO_ROOT / "src"
BUILD_ROOT = REPO_ROOT / ".build" / "compiled-core"


class CompileError(RuntimeError):
    pass


def compiled_modules() -> list[str]:
    """Paths (relative to src/) of the modules to compile, from pyproject.toml."""
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    paths: list[str] = config["tool"]["teamster"]["compiled-core"]
    return [p.removeprefix("src/") for p in paths]


def _digest() -> str:
    import mypy.version

    h = hashlib.sha256(mypy.version.__version__.encode())
    h.update(sys.version.encode())
    for path in sorted(SOURCE.rglob("*.py")):
        h.update(str(path.relative_to(SOURCE)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def available() -> str | None:
    """None if a build can be attempted here, else why not."""
    try:
        import mypyc  # noqa: F401
    except ImportError:
        return "mypyc is not installed (pip install -e '.[dev]')"
    if not (shutil.which("cc") or shutil.which("gcc")):
        return "no C compiler (cc or gcc) on PATH"
    return None


def ensure_compiled() -> Path:
    """The directory to put first on PYTHONPATH (building it if needed)."""
    why_not = available()
    if why_not:
        raise CompileError(f"cannot compile the core: {why_not}")
    target = BUILD_ROOT / _digest()
    if (target / "BUILT").exists():
        return target / "src"
    staging = target.with_name(target.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(SOURCE / "teamster", staging / "src" / "teamster",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    modules = compiled_modules()
    proc = subprocess.run([sys.executable, "-m", "mypyc", *modules], cwd=staging / "src",
                          capture_output=True, text=True,
                          env={**os.environ, "MYPYC_OPT_LEVEL": "3"})
    built = [m for m in modules
             if list((staging / "src" / m).parent.glob(Path(m).stem + ".*.so"))]
    if proc.returncode != 0 or len(built) != len(modules):
        raise CompileError(f"mypyc failed (exit {proc.returncode}; built {len(built)} of "
                           f"{len(modules)} modules):\n{(proc.stdout + proc.stderr)[-3000:]}")
    shutil.rmtree(staging / "src" / "build", ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    (target / "BUILT").write_text(" ".join(modules) + "\n")
    for old in BUILD_ROOT.iterdir():  # builds of older sources
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target / "src"


def add_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compiled", action="store_true",
                        help="run the scheduler and worker cores compiled with mypyc (compiled_core.py)")


def child_env(compiled: bool) -> dict[str, str] | None:
    """Environment for a child ``teamster simulate``: None (inherit) or compiled
    first. Says which on stdout, so every table names its build."""
    print(f"core: {'compiled with mypyc' if compiled else 'Python source'}")
    if not compiled:
        return None
    path = str(ensure_compiled())
    old = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": path + (os.pathsep + old if old else "")}


if __name__ == "__main__":
    print(ensure_compiled())
