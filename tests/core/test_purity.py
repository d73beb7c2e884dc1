"""The core is pure: no I/O, clocks, threads, environment or global randomness.

ARCHITECTURE.md rule 2 ("purity is checked by a test"). Two checks:

- a static one: every ``src/teamster/core/**/*.py`` is parsed with ``ast`` and
  its imports (absolute, relative, and ``__import__``/``importlib`` calls) are
  compared with a deny-list;
- a dynamic one: a fresh interpreter imports every core module and must not
  end up with any I/O or outer-layer module loaded, which also catches a
  forbidden module pulled in transitively.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import teamster.core

CORE_DIR = Path(teamster.core.__file__).resolve().parent
SRC_DIR = CORE_DIR.parent.parent

#: Modules the core must never import (the module itself or any submodule).
FORBIDDEN = {
    # I/O, event loops and concurrency: the shells own these.
    "asyncio": "event loops belong to runtime/",
    "socket": "network I/O belongs to runtime/comm",
    "ssl": "network I/O belongs to runtime/comm",
    "select": "I/O multiplexing belongs to runtime/",
    "selectors": "I/O multiplexing belongs to runtime/",
    "threading": "threads belong to the worker shell",
    "_thread": "threads belong to the worker shell",
    "multiprocessing": "processes belong to cluster/",
    "concurrent": "executors belong to the worker shell",
    "subprocess": "processes belong to cluster/",
    "signal": "process control belongs to the shells",
    # Clocks: time arrives as an event field.
    "time": "time arrives in events (Tick.now, RegisterWorker.now, ...)",
    "datetime": "time arrives in events",
    # Environment and files: configuration arrives as constructor arguments.
    "os": "no environment reads or file access; config is a constructor argument",
    "pathlib": "no file access in the core",
    "shutil": "no file access in the core",
    "tempfile": "no file access in the core",
    "io": "no I/O in the core",
    # Outer layers of teamster itself.
    "teamster.runtime": "the core may not depend on its shells",
    "teamster.client": "the core may not depend on the client",
    "teamster.cluster": "the core may not depend on cluster managers",
    "teamster.sim": "the simulator drives the core, not the reverse",
    "teamster.dashboard": "the core may not depend on the dashboard",
    "teamster.cli": "the core may not depend on the CLI",
    # Dynamic imports would dodge this test.
    "importlib": "dynamic imports would dodge the purity check",
}
#: Builtins that do I/O or dodge the import check.
FORBIDDEN_CALLS = {"__import__", "open", "print", "input", "exec", "eval", "breakpoint"}
#: ``random`` is allowed only for its ``Random`` class (an injected instance);
#: the module-level functions share hidden global state and break seeds.
RANDOM_ALLOWED = {"Random"}


def _forbidden_reason(module: str) -> str | None:
    for name, why in FORBIDDEN.items():
        if module == name or module.startswith(name + "."):
            return why
    return None


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC_DIR).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve_relative(path: Path, own: str, level: int, module: str | None) -> str:
    package = own.split(".")
    if path.name != "__init__.py":
        package.pop()
    base = package[: len(package) - (level - 1)] if level > 1 else package
    return ".".join(base + ([module] if module else []))


CORE_FILES = sorted(CORE_DIR.rglob("*.py"))
CORE_MODULES = sorted(_module_name(p) for p in CORE_FILES)


def violations(path: Path, own: str | None = None) -> list[str]:
    """Every forbidden import in one file, as 'file:line: what (why)'.

    ``own`` is the file's dotted module name (to resolve relative imports).
    """
    own = own if own is not None else _module_name(path)
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    random_aliases: set[str] = set()

    def check(lineno: int, module: str) -> None:
        why = _forbidden_reason(module)
        if why is not None:
            found.append(f"{path.name}:{lineno}: imports {module} ({why})")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                check(node.lineno, alias.name)
                if alias.name == "random":
                    random_aliases.add(alias.asname or "random")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                module = _resolve_relative(path, own, node.level, node.module)
            else:
                module = node.module or ""
            check(node.lineno, module)
            for alias in node.names:
                # "from teamster import runtime" names a forbidden submodule too.
                check(node.lineno, f"{module}.{alias.name}")
                if module == "random" and alias.name not in RANDOM_ALLOWED:
                    found.append(
                        f"{path.name}:{node.lineno}: from random import {alias.name} "
                        "(module-level randomness; inject a random.Random)"
                    )
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in FORBIDDEN_CALLS:
                found.append(f"{path.name}:{node.lineno}: {node.func.id}() call")
    if random_aliases:
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in random_aliases
                and node.attr not in RANDOM_ALLOWED
            ):
                found.append(
                    f"{path.name}:{node.lineno}: random.{node.attr} "
                    "(module-level randomness; inject a random.Random)"
                )
    return found


def test_core_files_found() -> None:
    # Guard against the walk silently finding nothing (a moved package).
    names = {p.relative_to(CORE_DIR).as_posix() for p in CORE_FILES}
    assert {"messages.py", "scheduler/state.py", "worker/state.py"} <= names


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.relative_to(CORE_DIR).as_posix())
def test_no_forbidden_imports(path: Path) -> None:
    assert violations(path) == []


@pytest.mark.parametrize("module", CORE_MODULES)
def test_module_imports_cleanly(module: str) -> None:
    importlib.import_module(module)


def test_checker_catches_violations(tmp_path: Path) -> None:
    """The deny-list is live: a probe file with every kind of violation is flagged."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import asyncio\n"
        "import os.path\n"
        "from time import monotonic\n"
        "import random\n"
        "x = random.random()\n"
        "ok = random.Random(3)\n"
        "from random import shuffle\n"
        "from ...runtime import comm\n"
        "from teamster import client\n"
        "__import__('socket')\n"
        "print('hello')\n"
    )
    found = violations(probe, own="teamster.core.scheduler.probe")
    text = "\n".join(found)
    assert "imports asyncio" in text
    assert "imports os.path" in text
    assert "imports time" in text
    assert "probe.py:5: random.random " in text
    assert not [v for v in found if v.startswith("probe.py:6:")]  # random.Random is fine
    assert "from random import shuffle" in text
    assert "imports teamster.runtime" in text  # the relative import, resolved
    assert "imports teamster.client" in text
    assert "__import__() call" in text
    assert "print() call" in text


def test_fresh_interpreter_loads_no_io_modules() -> None:
    """Importing all of core in a clean process pulls in nothing forbidden, even transitively.

    ``os`` and ``time`` are loaded by every interpreter at startup, so the
    dynamic check cannot see them; the static check above covers them.
    """
    code = (
        "import sys, json\n"
        "before = set(sys.modules)\n"
        f"for name in {CORE_MODULES!r}:\n"
        "    __import__(name)\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    loaded = json.loads(result.stdout)
    preloaded = {"os", "time"}
    bad = [
        name for name in loaded
        if name not in preloaded and (_forbidden_reason(name) or name == "random")
        and not name.startswith("importlib")  # the interpreter's own import machinery
    ]
    assert bad == [], f"importing teamster.core loaded {bad}"
