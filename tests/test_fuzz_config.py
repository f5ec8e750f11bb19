"""Fuzzing ``--cfg-options`` (issue 16): random ``KEY=VALUE`` overrides of every search config either give
a config that :func:`densenas.build.plan_search` accepts, or a :class:`ConfigError` naming the file and the
key -- never a ``TypeError`` / ``AssertionError`` / ``KeyError`` from mmengine's merge or from a lookup.

Keys are the config's own dotted paths, typos of them and new keys below them; values are numbers, words,
lists, tuples, ``None`` / booleans, unbalanced brackets and random text. After ``plan_search`` the cheap
objects of a search are built as :func:`densenas.build.build_search` builds them, without reading data
(task, space with a made-up class count, strategy): their errors must be clear too. Overriding a key
with its own value changes nothing.

Hypothesis runs derandomized and without an example database, so every run (and CI) sees the same cases.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from densenas.arch import InvalidArch
from densenas.build import build_search, plan_search
from densenas.config import ConfigError, load_config
from densenas.plugins import PluginError

FUZZ = dict(deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs/search").glob("*.py"))
#: what Python says when a bad value reaches code that never expected it
DEEP = ("unhashable type", "object has no attribute", "not subscriptable", "is not iterable",
        "index out of range", "not supported between instances", "unsupported operand",
        "unexpected keyword argument", "invalid literal for")


def _paths(d: Any, prefix: str = "") -> dict[str, Any]:
    """Every dotted key path of a config dict and its value (dicts included, lists as leaves)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        p = f"{prefix}{k}"
        out[p] = v
        if isinstance(v, dict):
            out.update(_paths(v, p + "."))
    return out


_PATHS = {c.name: _paths(load_config(c).to_dict()) for c in CONFIGS}


def _typo(draw: st.DrawFn, key: str) -> str:
    """``key`` with one slip: a dropped, doubled or swapped character, or the wrong case."""
    i = draw(st.integers(0, max(len(key) - 1, 0)))
    how = draw(st.sampled_from(["drop", "double", "swap", "case"]))
    if how == "drop":
        return key[:i] + key[i + 1:]
    if how == "double":
        return key[:i] + key[i:i + 1] * 2 + key[i + 1:]
    if how == "swap" and i + 1 < len(key):
        return key[:i] + key[i + 1] + key[i] + key[i + 2:]
    return key.upper()


VALUES = st.one_of(
    st.integers(-10, 10_000).map(str), st.floats(-1e6, 1e6, allow_nan=False).map(repr),
    st.sampled_from(["None", "True", "False", "nan", "inf", "-inf", "abc", "[1,2]", "(1,2)", "[]", "()", "''",
                     "[1,[2]", "(1,", "]", "a,b", "[None]", "auxcell", "proxy", "supernet", "darts", "random",
                     "cpu", "cuda:x", "naswot", "segmentation", "mobilenet_v2", "{}", "dict(a=1)", "=", "x=y"]),
    st.text(max_size=10))


def _like(v: Any) -> st.SearchStrategy[str]:
    """Values of the same kind as a config value ``v`` (often out of its range), as override text."""
    if isinstance(v, bool):
        return st.sampled_from(["True", "False", "0", "1"])
    if isinstance(v, int):
        return st.integers(-3, 2 * abs(v) + 3).map(str)
    if isinstance(v, float):
        return st.floats(-2.0, 2 * abs(v) + 2.0, allow_nan=False).map(repr)
    if isinstance(v, str):
        words = sorted({w for p in _PATHS.values() for w in p.values() if isinstance(w, str) and w.isidentifier()})
        return st.sampled_from(words)
    return VALUES


@st.composite
def overrides(draw: st.DrawFn, config: str) -> list[str]:
    """1-2 ``KEY=VALUE`` strings: real key paths (with values of their kind or of any kind), typos of them,
    new keys below them, junk keys, or no ``=`` at all."""
    paths = _PATHS[config]
    out = []
    for _ in range(draw(st.integers(1, 2))):
        key = draw(st.sampled_from(sorted(paths)))
        how = draw(st.sampled_from(["like", "like", "like", "path", "path", "typo", "below", "junk", "nokey"]))
        if how == "typo":
            key = _typo(draw, key)
        elif how == "below":
            key = f"{key}.{draw(st.sampled_from(['type', 'x', 'iters', '0']))}"
        elif how == "junk":
            key = draw(st.text(max_size=8))
        if how == "nokey":
            out.append(draw(st.text(max_size=12)))
        else:
            out.append(f"{key}={draw(_like(paths[key]) if how == 'like' else VALUES)}")
    return out


def build_without_data(cfg) -> None:
    """:func:`build_search` up to the evaluator (task, space, strategy), with the task's data reading
    replaced by a made-up class count: everything a search checks before its first candidate."""
    tcls = plan_search(cfg)["task"][0]
    with mock.patch.object(tcls, "build_data", lambda self, *a, **k: None), \
            mock.patch.object(tcls, "space_defaults", lambda self: {"num_classes": 3}):
        build_search(cfg, build_evaluator=False, log=lambda *_: None)


def _assert_clear(e: Exception, config: Path, ov: list[str]) -> None:
    msg = str(e)
    assert not any(p in msg for p in DEEP), f"{config.name} {ov}: {type(e).__name__}: {msg}"
    if isinstance(e, ConfigError):
        assert str(config) in msg or config.name in msg, f"{config.name} {ov}: error does not name the file: {msg}"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
@settings(max_examples=40, **FUZZ)
@given(data=st.data())
def test_random_overrides(config, data):
    ov = data.draw(overrides(config.name), label="cfg-options")
    try:
        cfg = load_config(config, ov)
        build_without_data(cfg)
    except (ConfigError, PluginError, InvalidArch) as e:
        _assert_clear(e, config, ov)
    except FileNotFoundError as e:  # nasfcos_head_proxy's fixed_fpn is the FPN search's best_arch.json
        assert ".json" in str(e), e
    except (ValueError, TypeError) as e:  # a constructor's own range check: must say what is wrong
        _assert_clear(e, config, ov)
        assert any(k.split("=")[0].split(".")[-1] in str(e) for k in ov), \
            f"{config.name} {ov}: {type(e).__name__} names no overridden key: {e}"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
@settings(max_examples=15, **FUZZ)
@given(data=st.data())
def test_overriding_a_key_with_its_own_value_changes_nothing(config, data):
    scalars = {k: v for k, v in _PATHS[config.name].items()
               if v is None or isinstance(v, (bool, int, float)) or isinstance(v, str) and v.isidentifier()}
    key = data.draw(st.sampled_from(sorted(scalars)))
    base, cfg = load_config(config), load_config(config, [f"{key}={scalars[key]}"])
    assert cfg.to_dict() == base.to_dict()
    plan_search(cfg)


@pytest.mark.parametrize("override, match", [
    ("evaluator.stage1.iters=abc", r"'evaluator\.stage1\.iters' must be int, got 'abc'"),
    ("evaluator.stage1=3", r"'evaluator\.stage1' must be a dict"),
    ("space.type=[1,2]", r"'space\.type' must be a string"),
    ("strategy.type=[1]", r"'strategy\.type' must be a string"),
    ("strategy.warm_start.proxy=[1]", r"'strategy\.warm_start\.proxy' is \[1\]"),
    ("task.type.x=1", r"cannot apply --cfg-options .*task\.type\.x"),
    ("evaluator.stage1.lr=(1,2", r"cannot apply --cfg-options .*\(1,2"),
    ("no_equals_sign", r"'no_equals_sign' is not KEY=VALUE"),
    ("search.num_candidates=abc", r"'search\.num_candidates' must be a positive integer"),
    ("search.num_candidates=0", r"'search\.num_candidates' must be a positive integer"),
    ("search.time_budget_s=-1", r"'search\.time_budget_s' must be a positive number or None"),
    ("seed=abc", r"'seed' must be an integer"),
    ("device=cuda:x", r"'device' must be"),
    ("evaluator.polyak=abc", r"'evaluator\.polyak' must be float"),
    ("evaluator.polyak=2.0", r"'evaluator'.*polyak must be in \[0, 1\)"),
])
def test_known_bad_overrides(override, match):
    """Each of these used to escape as a TypeError / AssertionError / ValueError without the file or key,
    or to pass the checks and fail after the data was read (``iters='abc'`` in the first training step)."""
    cfg_path = ROOT / "configs/search/auxcell_proxy.py"
    with pytest.raises(ConfigError, match=match) as e:
        plan_search(load_config(cfg_path, [override]))
    assert str(cfg_path) in str(e.value)
