"""Search configs: mmengine ``Config`` files, ``--cfg-options`` overrides and strict key checking.

Configs are flat python files (one level of ``_base_`` at most, ARCHITECTURE.md §4.6) with the sections
``task``, ``data``, ``backbone``, ``space``, ``strategy``, ``evaluator`` and ``search``. Every key is
checked against the constructor it ends up in, so a typo fails at start-up with the key's full dotted
name and the closest valid spelling, not after an hour of search. :func:`densenas.build.build_search`
turns a checked config into the objects of one search.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

TOP_LEVEL = {"work_dir": "directory for history.sqlite, caches and results",
             "seed": "base seed", "device": "cpu, cuda or auto",
             "task": "task section: type (a densenas.task_plugins entry point) and that task's options",
             "data": "dataset section (read by the task)", "backbone": "encoder section (densenas.backbones)",
             "space": "search space section (a densenas.space_plugins entry point)",
             "strategy": "search strategy section", "evaluator": "evaluator section: type proxy | supernet",
             "search": "loop section: num_candidates (or epochs), time_budget_s"}


class ConfigError(ValueError):
    """A config that cannot be used: names the file and the dotted key."""


def load_config(path: str | Path, overrides: Iterable[str] | Mapping[str, Any] | None = None):
    """Read a config file and apply ``key.sub=value`` overrides (mmengine ``DictAction`` syntax)."""
    from mmengine.config import Config, DictAction

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    cfg = Config.fromfile(str(path))
    if overrides:
        if not isinstance(overrides, Mapping):
            ns = type("NS", (), {})()
            DictAction(option_strings=[], dest="o")(None, ns, list(overrides))
            overrides = ns.o
        cfg.merge_from_dict(dict(overrides))
    unknown = [k for k in cfg.keys() if k not in TOP_LEVEL]
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {unknown}{_suggest(unknown[0], TOP_LEVEL)}; "
                          f"allowed: {sorted(TOP_LEVEL)}")
    return cfg


def _suggest(key: str, allowed: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def allowed_keys(target: Callable | type) -> set[str]:
    """Keyword names a class/function/dataclass accepts."""
    if dataclasses.is_dataclass(target):
        return {f.name for f in dataclasses.fields(target)}
    sig = inspect.signature(target)
    return {n for n, p in sig.parameters.items()
            if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_keys(section: str, given: Mapping[str, Any], target: Callable | type,
               extra: Iterable[str] = (), source: str = "config") -> None:
    """Raise :class:`ConfigError` for any key of ``given`` that ``target`` does not accept."""
    allowed = allowed_keys(target) | set(extra)
    for key in given:
        if key not in allowed:
            raise ConfigError(f"{source}: unknown key '{section}.{key}'{_suggest(key, allowed)}; "
                              f"allowed: {sorted(allowed)}")


def build_dataclass(section: str, cls: type, given: Mapping[str, Any] | None, source: str = "config"):
    """Instantiate a (possibly nested) dataclass from a dict, checking every key."""
    given = dict(given or {})
    check_keys(section, given, cls, source=source)
    kwargs = {}
    hints = {f.name: f for f in dataclasses.fields(cls)}
    for k, v in given.items():
        default = hints[k].default_factory() if hints[k].default_factory is not dataclasses.MISSING \
            else hints[k].default
        if isinstance(v, Mapping) and dataclasses.is_dataclass(default):
            v = build_dataclass(f"{section}.{k}", type(default), v, source)
        kwargs[k] = v
    return cls(**kwargs)


def section(cfg, name: str, default: Any = None) -> dict[str, Any] | None:
    """A config section as a plain dict (``None`` stays ``None``)."""
    val = cfg.get(name, default)
    if val is None:
        return None
    if not isinstance(val, Mapping):
        raise ConfigError(f"{cfg.filename or 'config'}: '{name}' must be a dict, got {val!r}")
    return dict(val)
