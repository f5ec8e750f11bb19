"""Fuzzing arch JSON (issue 16): for every registered space, random JSON values, random bytes and
mutations of valid arch dicts either load and check, or fail with :class:`InvalidArch` naming the source
and the field -- never a ``KeyError`` / ``TypeError`` / ``RecursionError`` from deep inside.

An arch that passes ``space.check`` must also build and run on tiny shapes (a check that lets ``1.0``
through as index ``1`` would fail deep inside the forward pass), and must round-trip through JSON with an
unchanged key (the history de-duplicates candidates by it). ``tools/export.py`` gets a few mutated archs
of every space and must answer with exit code 0 or 2 and a message naming the arch file.

Hypothesis runs derandomized and without an example database, so every run (and CI) sees the same cases.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from densenas.arch import Arch, InvalidArch
from densenas.datasets.det_fixtures import write_coco_fixture
from densenas.plugins import SPACES, load
from densenas.space import SearchSpace
from densenas.task import pick_task
from test_space_contract import IMAGE, SPACE_NAMES, _case, _inputs, _shapes, _space
from test_tools import _tool

FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SOURCE = "fuzzed_arch.json"
#: what Python says when a bad value reaches code that never expected it (tools catch TypeError and print it)
DEEP = ("Traceback", "unexpected keyword argument", "object has no attribute", "not subscriptable",
        "unhashable type", "is not iterable", "index out of range", "KeyError", "unsupported operand",
        "not supported between instances")

_SPACES: dict[str, SearchSpace] = {}


def space_of(name: str) -> SearchSpace:
    """The tiny space of the contract tests (built once per module)."""
    if name not in _SPACES:
        _SPACES[name] = _space(name)
    return _SPACES[name]


SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.integers(-3, 40)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
JSON_VALUES = st.recursive(SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                                        max_size=4),
                           max_leaves=12)


def _kind(v: Any) -> str:
    return "bool" if isinstance(v, bool) else "int" if isinstance(v, int) else type(v).__name__


def is_option(space: SearchSpace, name: str, value: Any) -> bool:
    """``value`` is one of the options of decision ``name``, of the same JSON kind (``1.0`` is not ``1``)."""
    d = next((d for d in space.decisions() if d.name == name), None)
    return d is not None and any(o == value and _kind(o) == _kind(value) for o in d.options)


def load_and_check(space: SearchSpace, text: str | bytes) -> Arch | None:
    """Parse and check; only :class:`InvalidArch` may come out. Returns the arch when it is valid."""
    try:
        arch = Arch.from_json(text, source=SOURCE)
    except InvalidArch as e:
        assert SOURCE in str(e), f"parse error does not name the file: {e}"
        return None
    try:
        space.check(arch)
    except InvalidArch:
        return None
    return arch


def assert_works(space: SearchSpace, name: str, arch: Arch) -> None:
    """A valid arch round-trips through JSON with its key, every value is a typed option, and it builds
    and runs a tiny forward pass."""
    back = Arch.from_json(arch.to_json())
    assert back == arch and back.key == arch.key
    for k, v in arch.choices:
        assert is_option(space, k, v), f"{name}: check passed {k}={v!r}, which is not one of its options"
    case = _case(name)
    torch.manual_seed(0)
    net = space.build(arch, _shapes(case) if case.levels is not None else IMAGE).eval()
    with torch.no_grad():
        net(_inputs(case, batch=1))


# ------------------------------------------------------------------------------------ random input
@settings(max_examples=150, **FUZZ)
@given(value=JSON_VALUES)
def test_random_json_values(value):
    """Any JSON value (as text) is refused with InvalidArch by the parser or by every space's check."""
    text = json.dumps(value)
    for name in SPACE_NAMES:
        assert load_and_check(space_of(name), text) is None


@settings(max_examples=100, **FUZZ)
@given(blob=st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_random_bytes(blob):
    for name in SPACE_NAMES:
        assert load_and_check(space_of(name), blob) is None


@pytest.mark.parametrize("text", ["[" * 100_000, b"\xff\xfe\x00{", '{"space": "auxcell", "choices": {"a": NaN}}',
                                  '{"space": "auxcell", "choices": {}, "format": true}', "\ud800"])
def test_pathological_json_is_invalid_arch(text):
    """Absurd nesting, bad UTF-8, NaN and ``format: true`` (== 1 in Python) are InvalidArch naming the file."""
    with pytest.raises(InvalidArch, match=SOURCE):
        Arch.from_json(text, source=SOURCE)


def test_binary_arch_file_names_the_file(tmp_path):
    p = tmp_path / "arch.json"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe garbage")
    with pytest.raises(InvalidArch, match=str(p)):
        Arch.load(p)


# ---------------------------------------------------------------------------- mutated valid archs
MUTATIONS = ("drop", "add", "value", "kind", "option", "space", "format", "choices", "top")


def _mutate(data: st.DataObject, space: SearchSpace, d: dict[str, Any], how: str) -> tuple[dict | Any, str]:
    """Apply one mutation to the arch dict ``d`` (in place when possible); returns it and the name of the
    field an error must mention."""
    ch = d.get("choices") if isinstance(d, dict) else None
    names = [x.name for x in space.decisions()]
    if how in ("drop", "value", "kind", "option") and not (isinstance(ch, dict) and ch):
        how = "add" if isinstance(ch, dict) else "top"
    if how == "drop":
        k = data.draw(st.sampled_from(sorted(ch)))
        del ch[k]
        return d, k
    if how == "add":
        k = data.draw(st.sampled_from([f"{n}x" for n in names] + ["cell99.in0", "extra"]) | st.text(max_size=6))
        if not isinstance(ch, dict) or k in ch:
            return d, ""
        ch[k] = data.draw(SCALARS)
        return d, k
    if how in ("value", "kind", "option"):
        k = data.draw(st.sampled_from(sorted(ch)))
        if how == "value":
            ch[k] = data.draw(JSON_VALUES)
        elif how == "kind":  # equal in Python, another JSON kind: 1 -> 1.0 / True, "a" -> ["a"]
            v = ch[k]
            ch[k] = data.draw(st.sampled_from([float(v), bool(v)] if isinstance(v, (int, float)) and not
                                              isinstance(v, bool) else [[v], {"v": v}]))
        else:  # any option of any decision: out-of-range indices and ops of the wrong decision
            pool = sorted({o for x in space.decisions() for o in x.options}, key=repr) + [-1, 99]
            ch[k] = data.draw(st.sampled_from(pool))
        return d, k
    if how in ("space", "format", "choices") and not isinstance(d, dict):
        return d, ""
    if how == "space":
        d["space"] = data.draw(st.sampled_from(SPACE_NAMES) | JSON_VALUES)
        return d, "space"
    if how == "format":
        d["format"] = data.draw(JSON_VALUES)
        return d, "format"
    if how == "choices":
        d["choices"] = data.draw(JSON_VALUES.filter(lambda v: not isinstance(v, dict)) | st.just({}))
        return d, "choices" if d["choices"] != {} else ""  # {}: the error lists the missing decisions
    return data.draw(JSON_VALUES.filter(lambda v: not isinstance(v, dict))), "JSON object"


@pytest.mark.parametrize("name", SPACE_NAMES)
@settings(max_examples=80, **FUZZ)
@given(seed=st.integers(0, 2**32 - 1), hows=st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3),
       data=st.data())
def test_mutated_arch(name, seed, hows, data):
    """1-3 mutations of a valid arch: InvalidArch naming the field, or a valid arch that really works."""
    space = space_of(name)
    arch = space.sample(np.random.default_rng(seed))
    d: Any = arch.to_dict()
    fields = []
    for how in hows:
        d, f = _mutate(data, space, d, how)
        fields.append(f)
    text = json.dumps(d)
    try:
        got = Arch.from_json(text, source=SOURCE)
        space.check(got)
    except InvalidArch as e:
        if len(fields) == 1 and fields[0]:
            f, msg = fields[0], str(e)
            unchanged = isinstance(d, dict) and f in arch.as_dict() and f in d.get("choices", {}) and \
                is_option(space, f, d["choices"][f])
            if not unchanged:  # a still-valid option may trip a cross-field rule naming another field
                assert f in msg or repr(f) in msg, f"{name}: error does not name {f!r}: {msg}"
        return
    assert_works(space, name, got)


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_every_decision_refuses_look_alike_values(name):
    """Exhaustively, not by chance: ``1.0`` / ``True`` for option ``1``, ``"1"`` and ``[v]`` are refused
    for every decision of every space with an error naming it (they compare equal in Python, and
    ``1.0`` used to pass some checks and then fail deep inside the forward pass as a list index)."""
    space = space_of(name)
    arch = space.sample(np.random.default_rng(5))
    for d in space.decisions():
        v = arch[d.name]
        look_alikes = [[v], {"value": v}] + ([str(v), float(v), bool(v)] if isinstance(v, int) else [])
        for bad in look_alikes:
            text = json.dumps({**arch.to_dict(), "choices": {**arch.as_dict(), d.name: bad}})
            with pytest.raises(InvalidArch, match=rf"\b{d.name}\b"):
                space.check(Arch.from_json(text, source=SOURCE))


@pytest.mark.parametrize("name", SPACE_NAMES)
@settings(max_examples=15, **FUZZ)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(0, 4))
def test_valid_archs_round_trip_and_build(name, seed, steps):
    space = space_of(name)
    rng = np.random.default_rng(seed)
    arch = space.sample(rng)
    for _ in range(steps):
        arch = space.mutate(arch, rng)
    space.check(Arch.from_json(arch.to_json(indent=None)))
    assert_works(space, name, arch)


# ------------------------------------------------------------------------------------ tools/export.py
@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """One root every task's exporter accepts: a COCO fixture plus a segmentation proxy manifest."""
    root = tmp_path_factory.mktemp("data")
    write_coco_fixture(root, n=2, size=(32, 32))
    (root / "densenas_proxy.json").write_text(json.dumps({"classes": ["background", "a", "b"]}))
    return root


EXPORTED = {"nasfpn": dict(num_cells=6, levels=(3, 4, 5, 6, 7))}
"""Tiny-space settings the exporters need on top of the contract tests' (mmdet's RetinaNet: P3-P7)."""


def _export(name: str, mutate: Callable[[SearchSpace, Arch], Any], tmp_path: Path, data_root: Path,
            capsys) -> tuple[int, str, Path, Path]:
    """Write a (mutated) arch of a tiny space with its search's config.py next to it, as a search leaves
    them, and run tools/export.py on it; returns ``(exit code, stderr, arch file, output config)``."""
    kwargs = {**_case(name).kwargs, **EXPORTED.get(name, {})}
    space = load(SPACES, name, "space.type")(**kwargs)
    arch = space.sample(np.random.default_rng(0))
    arch_file, out = tmp_path / "best_arch.json", tmp_path / f"{name}_cfg.py"
    out.unlink(missing_ok=True)
    arch_file.write_text(json.dumps(mutate(space, arch)))
    search_cfg = {"task": {"type": pick_task(None, arch).name}, "space": {"type": name, **kwargs}}
    (tmp_path / "config.py").write_text("".join(f"{k} = {v!r}\n" for k, v in search_cfg.items()))
    rc = _tool("export")([str(arch_file), "--out", str(out), "--data-root", str(data_root)])
    return rc, capsys.readouterr().err, arch_file, out


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_export_tool_on_valid_arch(name, tmp_path, data_root, capsys):
    rc, err, _, out = _export(name, lambda space, arch: arch.to_dict(), tmp_path, data_root, capsys)
    assert rc == 0 and out.is_file() and out.stat().st_size > 0, err


@pytest.mark.parametrize("name", SPACE_NAMES)
@settings(max_examples=5, **FUZZ)
@given(how=st.sampled_from(MUTATIONS), data=st.data())
def test_export_tool_on_mutated_arch(name, how, data, tmp_path, data_root, capsys):
    """tools/export.py answers 0 (config written) or 2 with a message naming the arch file; no traceback
    and no Python-internal message (the tool prints any TypeError it catches)."""
    rc, err, arch_file, out = _export(name, lambda space, arch: _mutate(data, space, arch.to_dict(), how)[0],
                                      tmp_path, data_root, capsys)
    assert rc in (0, 2), err
    if rc == 2:
        assert str(arch_file) in err and not any(p in err for p in DEEP), err
        assert not out.exists()
    else:
        assert out.is_file() and out.stat().st_size > 0
