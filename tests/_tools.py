"""Shared by the tests that drive the command-line scripts in-process (``tools/*.py``, ``benchmarks/*.py``):
load a script as a fresh module from its path (the scripts are not a package), so its ``main(argv)`` runs
in the test's process."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]


def load_script(path: str | Path, name: str | None = None) -> ModuleType:
    """The module of the script at ``path`` (relative paths from the repository root), executed once."""
    path = ROOT / path
    spec = importlib.util.spec_from_file_location(name or f"script_{path.parent.name}_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tool(name: str) -> Callable[[list[str]], int]:
    """``main`` of ``tools/<name>.py``."""
    return load_script(Path("tools") / f"{name}.py", f"tool_{name}").main
