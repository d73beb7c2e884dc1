"""A wheel carries the compiled scheduler core; the build says when it cannot.

``pip install .`` and container images install wheels, and production
schedulers should run the mypyc-compiled core (1.7-1.9x less CPU per task,
the same decisions: tests/sim/test_compiled_core.py). The build backend
(buildsys/teamster_build.py) compiles it when a C compiler is available;
these tests pin that decision and build a real wheel with pip. (The
decision is tested apart from setuptools: the one in this environment may be
older than what a build installs for itself, and unable to read pyproject.toml.)
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT / "buildsys"))
    monkeypatch.delenv("TEAMSTER_COMPILE", raising=False)
    monkeypatch.delenv("CC", raising=False)
    return importlib.import_module("teamster_build")


def no_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")


def test_a_wheel_build_needs_mypy_only_when_it_compiles(
        backend: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "gcc")
    assert backend.MYPY in backend.compiler_requires()
    monkeypatch.setenv("TEAMSTER_COMPILE", "0")
    assert backend.MYPY not in backend.compiler_requires()


def test_without_a_compiler_the_wheel_is_pure_python_and_the_build_says_so(
        backend: ModuleType, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    no_compiler(monkeypatch)
    assert backend.MYPY not in backend.compiler_requires()
    assert "no C compiler" in capsys.readouterr().err


def test_asking_to_compile_without_a_compiler_fails_the_build(
        backend: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    no_compiler(monkeypatch)
    monkeypatch.setenv("TEAMSTER_COMPILE", "1")
    with pytest.raises(RuntimeError, match="no C compiler"):
        backend.compiler_requires()


def test_a_mistyped_setting_is_an_error_not_a_guess(
        backend: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEAMSTER_COMPILE", "yes")
    with pytest.raises(ValueError, match="TEAMSTER_COMPILE='yes'"):
        backend.compiler_requires()


def test_the_development_install_runs_the_sources() -> None:
    import teamster.core.scheduler as scheduler

    assert scheduler.CORE == "python"


@pytest.mark.slow
def test_pip_builds_a_wheel_whose_scheduler_core_is_compiled(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TEAMSTER_COMPILE"}
    # pip builds in the source tree (build/, mypyc's C files): build a copy,
    # so that the checkout stays clean and no earlier build stands in for this one.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".*", "build", "dist", "*.egg-info", "__pycache__", "*.so", "tests", "docs"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
         str(source)], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (wheel,) = tmp_path.glob("teamster-*.whl")
    assert "linux" in wheel.name  # a platform wheel: it carries C extensions
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("teamster/core/scheduler/state.") and n.endswith(".so")
               for n in names), names
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, env=env, timeout=300)
    # The wheel's teamster first on the path, this environment's dependencies behind it.
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import teamster.core.scheduler as s\n"
        "from teamster.sim.run import run_simulation\n"
        "r = run_simulation('balance-random-dag', workers=8, tasks=300, seed=1)\n"
        "print(s.CORE, s.__file__.startswith(sys.argv[1]), r['tasks'])\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(target)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["compiled", "True", "300"]
