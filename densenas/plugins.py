"""Plugin lookup: tasks and search spaces are found by name through setuptools entry points.

The core never imports a task or a space module by name (docs/architecture.md, "Layers"): ``setup.py`` declares them
in the entry-point groups below (a literal table), and a third-party package adds its own task or space
by declaring entry points in the same groups — the way pytest and mmengine plugins are found. Nothing is
registered by import side effects; a plugin module is imported only when a config names it.
"""
from __future__ import annotations

import difflib
from functools import lru_cache
from importlib import metadata
from typing import Any

TASKS = "densenas.task_plugins"
SPACES = "densenas.space_plugins"


class PluginError(ValueError):
    """An unknown or broken plugin name; says which names exist."""


@lru_cache(maxsize=None)
def _entry_points(group: str) -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=group)}


def available(group: str) -> list[str]:
    """Names declared in an entry-point group (e.g. ``available(TASKS)``)."""
    return sorted(_entry_points(group))


def load(group: str, name: str, what: str = "plugin") -> Any:
    """The object an entry point of ``group`` named ``name`` points at.

    Args:
        group: :data:`TASKS` or :data:`SPACES`.
        name: the name a config uses (``task.type``, ``space.type``).
        what: the config key, for the error message (e.g. ``"task.type"``).

    Raises:
        PluginError: no such name (lists the names and the closest spelling), or none at all (the
            package is not installed: ``pip install -e .`` writes the entry points).
    """
    eps = _entry_points(group)
    if not eps:
        raise PluginError(f"no {group} entry points found: densenas is not installed; run "
                          f"`bash tools/install.sh` (or `pip install -e . --no-deps --no-build-isolation`)")
    if name not in eps:
        close = difflib.get_close_matches(str(name), list(eps), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise PluginError(f"'{what}' is {name!r}{hint}; available: {sorted(eps)}")
    return eps[name].load()
