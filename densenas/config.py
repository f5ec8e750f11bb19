"""Search configs: mmengine ``Config`` files, ``--cfg-options`` overrides and strict key checking.

Configs are flat python files (one level of ``_base_`` at most, as mmengine configs are composed) with the sections
``task``, ``data``, ``backbone``, ``space``, ``strategy``, ``evaluator`` and ``search``. Every key is
checked against the constructor it ends up in, and its value against that parameter's annotation, so a
typo or a wrong type (``iters='abc'``) fails at start-up with the key's full dotted name and the closest
valid spelling, not after an hour of search. :func:`densenas.build.build_search`
turns a checked config into the objects of one search.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import re
import types
import typing
from collections import abc
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

TOP_LEVEL = {"work_dir": "directory for history.sqlite, caches and results",
             "seed": "base seed", "device": "cpu, cuda or auto",
             "task": "task section: type (a densenas.task_plugins entry point) and that task's options",
             "data": "dataset section (read by the task)", "backbone": "encoder section (densenas.backbones)",
             "space": "search space section (a densenas.space_plugins entry point)",
             "strategy": "search strategy section", "evaluator": "evaluator section: type proxy | supernet",
             "search": "loop section: num_candidates (or epochs), time_budget_s",
             "objective": "multi-objective reward: cost, target, weight, limit (densenas.evaluation.objective)",
             "parallel": "candidates in parallel: workers, mode, batch, cpus_per_worker, gpus_per_worker, retries, "
                         "address (densenas.parallel)",
             "hooks": "loop hooks: a list of dict(type='module:Class' or a densenas.hook_plugins name, ...) "
                      "(densenas.hooks)"}


SECTIONS = ("task", "data", "backbone", "space", "strategy", "evaluator", "search", "objective", "parallel")
#: ``search`` values (the keys themselves are checked per evaluator by densenas.build.plan_search)
SEARCH_VALUES = {"num_candidates": False, "epochs": False, "max_duplicates": False, "time_budget_s": True}


class ConfigError(ValueError):
    """A config that cannot be used: names the file and the dotted key."""


def load_config(path: str | Path, overrides: Iterable[str] | Mapping[str, Any] | None = None):
    """Read a search config, apply ``key.sub=value`` overrides (mmengine ``DictAction`` syntax) and check its
    top-level sections."""
    cfg = read_config(path, overrides)
    unknown = [k for k in cfg.keys() if k not in TOP_LEVEL]
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {unknown}{_suggest(unknown[0], TOP_LEVEL)}; "
                          f"allowed: {sorted(TOP_LEVEL)}")
    check_top_level(cfg, str(path))
    return cfg


def read_config(path: str | Path, overrides: Iterable[str] | Mapping[str, Any] | None = None):
    """Any config file (a search config or an exported OpenMMLab one) with ``--cfg-options`` applied; errors
    name the file and the option.

    Raises:
        ConfigError: a missing file, or overrides mmengine cannot apply.
    """
    from mmengine.config import Config, DictAction

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    cfg = Config.fromfile(str(path))
    if overrides:
        # mmengine's own parse / merge errors (AssertionError on unbalanced brackets, TypeError when a
        # key goes below a non-dict value, ...) say neither the file nor the option: re-raise naming both
        try:
            if not isinstance(overrides, Mapping):
                overrides = list(overrides)
                bad = [o for o in overrides if not isinstance(o, str) or "=" not in o or not o.split("=")[0]]
                if bad:
                    raise ValueError(f"{bad[0]!r} is not KEY=VALUE")
                ns = type("NS", (), {})()
                DictAction(option_strings=[], dest="o")(None, ns, overrides)
                overrides = ns.o
            keys = [str(k) for k in overrides]
            nested = [(k, j) for k in keys for j in keys if j.startswith(k + ".")]
            if nested:  # mmengine would set the section to a scalar, then fail to go below it
                raise ValueError(f"it sets {nested[0][0]!r} and also {nested[0][1]!r} below it; give one of them")
            cfg.merge_from_dict(dict(overrides))
        except (AssertionError, AttributeError, KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{path}: cannot apply --cfg-options {overrides}: {e}") from None
    return cfg


def check_top_level(cfg: Mapping[str, Any], source: str = "config") -> None:
    """The plain values and section shapes every search config shares (before any section is built).

    Raises:
        ConfigError: ``seed`` not an integer, ``device`` / ``work_dir`` not strings, a section that is
            not a dict (or ``None``), a section ``type`` that is not a string, or a ``search`` budget that
            is not a positive integer (``time_budget_s``: a positive number or ``None``).
    """
    seed = cfg.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{source}: 'seed' must be an integer, got {seed!r}")
    for key in ("device", "work_dir"):
        if cfg.get(key) is not None and not isinstance(cfg.get(key), (str, Path)):
            raise ConfigError(f"{source}: '{key}' must be a string, got {cfg.get(key)!r}")
    device = cfg.get("device")
    if device is not None and not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(device)):
        raise ConfigError(f"{source}: 'device' must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    for name in SECTIONS:
        sec = cfg.get(name)
        if sec is not None and not isinstance(sec, Mapping):
            raise ConfigError(f"{source}: '{name}' must be a dict, got {sec!r}")
        if sec and sec.get("type") is not None and not isinstance(sec["type"], str):
            raise ConfigError(f"{source}: '{name}.type' must be a string, got {sec['type']!r}")
    for key, v in dict(cfg.get("search") or {}).items():
        if key not in SEARCH_VALUES or (SEARCH_VALUES[key] and v is None):
            continue
        number = SEARCH_VALUES[key] and isinstance(v, float) and math.isfinite(v)
        if isinstance(v, bool) or not (isinstance(v, int) or number) or not v > 0:
            what = "a positive number or None" if SEARCH_VALUES[key] else "a positive integer"
            raise ConfigError(f"{source}: 'search.{key}' must be {what}, got {v!r}")


def check_int(value: Any, key: str, source: str = "config", low: int = 1, optional: bool = False) -> int | None:
    """``value`` when it is an integer ``>= low`` (or ``None`` when ``optional``); else a ConfigError naming
    ``key`` (``int("2")`` or ``"2"[1]`` deep inside a reader would name nothing)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{source}: '{key}' must be an integer >= {low}{' or None' * optional}, got {value!r}")
    return value


def check_image_size(value: Any, key: str, source: str = "config") -> int | tuple[int, int]:
    """An image side (int) or ``(height, width)``, each a positive integer."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return (check_int(value[0], key, source), check_int(value[1], key, source))
    return check_int(value, key, source)


def check_classes(value: Any, key: str, source: str = "config") -> list[str] | None:
    """``value`` when it is ``None`` or a non-empty list of class names; else a ConfigError naming ``key``."""
    if value is not None and not (isinstance(value, (list, tuple)) and value and
                                  all(isinstance(c, str) for c in value)):
        raise ConfigError(f"{source}: '{key}' must be a list of class names, got {value!r}")
    return value


def check_sub_dict(value: Any, key: str, source: str = "config") -> dict[str, Any]:
    """A nested section such as ``data.proxy``: a dict, or ``None`` for ``{}``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: '{key}' must be a dict, got {value!r}")
    return dict(value)


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
    """Raise :class:`ConfigError` for any key of ``given`` that ``target`` does not accept, or whose
    value does not fit the type annotation of the parameter it goes to (``iters='abc'``)."""
    allowed = allowed_keys(target) | set(extra)
    for key in given:
        if key not in allowed:
            raise ConfigError(f"{source}: unknown key '{section}.{key}'{_suggest(key, allowed)}; "
                              f"allowed: {sorted(allowed)}")
    hints = _hints(target)
    for key, value in given.items():
        if key in hints and _fits(value, hints[key]) is False:
            raise ConfigError(f"{source}: '{section}.{key}' must be {_describe(hints[key])}, got {value!r}")


def _hints(target: Callable | type) -> dict[str, Any]:
    """Resolved parameter annotations of ``target`` (``{}`` when they cannot be resolved)."""
    try:
        if dataclasses.is_dataclass(target) or not isinstance(target, type):
            return typing.get_type_hints(target)
        return typing.get_type_hints(target.__init__)
    except Exception:  # noqa: BLE001 - an annotation we cannot resolve is simply not checked
        return {}


def _fits(value: Any, ann: Any) -> bool | None:
    """Whether a config value fits an annotation: ``True``/``False``, or ``None`` when we cannot tell.

    Written here rather than taken from a validation library because config values are lenient on
    purpose: an ``int`` fits ``float``, any list or tuple fits a sequence type, any mapping a dataclass.
    """
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if ann is Any or ann is inspect.Parameter.empty:
        return None
    if ann is None or ann is type(None):
        return value is None
    if origin is typing.Union or origin is types.UnionType:
        fits = [_fits(value, a) for a in args]
        return True if True in fits else None if None in fits else False
    if origin is typing.Literal:
        return value in args
    if ann is bool:
        return isinstance(value, bool)
    if ann is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if ann is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ann is str:
        return isinstance(value, str)
    if origin in (tuple, list, abc.Sequence) or ann in (tuple, list, abc.Sequence):
        return isinstance(value, (list, tuple))
    if origin in (dict, abc.Mapping) or ann in (dict, abc.Mapping):
        return isinstance(value, Mapping)
    if isinstance(ann, type) and dataclasses.is_dataclass(ann):
        return isinstance(value, (Mapping, ann))
    return None


def _describe(ann: Any) -> str:
    """``int``, ``float or None``, ``a dict`` ...: an annotation for an error message."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if ann is None or ann is type(None):
        return "None"
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(_describe(a) for a in args)
    if origin is typing.Literal:
        return f"one of {list(args)}"
    if origin in (tuple, list, abc.Sequence) or ann in (tuple, list, abc.Sequence):
        return "a list"
    if isinstance(ann, type) and dataclasses.is_dataclass(ann) or origin in (dict, abc.Mapping):
        return "a dict"
    return getattr(ann, "__name__", str(ann))


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
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # the dataclass's own checks (ranges), named here
        raise ConfigError(f"{source}: '{section}': {e}") from None


def section(cfg, name: str, default: Any = None) -> dict[str, Any] | None:
    """A config section as a plain dict (``None`` stays ``None``)."""
    val = cfg.get(name, default)
    if val is None:
        return None
    if not isinstance(val, Mapping):
        raise ConfigError(f"{cfg.filename or 'config'}: '{name}' must be a dict, got {val!r}")
    return dict(val)
