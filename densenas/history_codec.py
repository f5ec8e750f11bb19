"""Values and rows of the search history (:mod:`densenas.history`): stored states packed as plain data that
loads weights-only, every column checked when read back, and SQLite's errors named with the file.

SQLite stores whatever a hand edit, a bad disk or another program put into a column, so each value read
back is checked here and a damaged row is refused with the file, row and column named
(:class:`HistoryError`) instead of failing deep inside a strategy or a report.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import sqlite3
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import numpy as np
import torch

if TYPE_CHECKING:
    from .history import History

_F = TypeVar("_F", bound=Callable[..., Any])


class HistoryError(ValueError):
    """A history file that cannot be read or written (corrupt row, not SQLite, disk full, read-only);
    the message names the file, and the row where there is one."""


def _sqlite_errors(what: str) -> Callable[[_F], _F]:
    """Re-raise SQLite's errors of a :class:`History` method as :class:`HistoryError` naming the file.

    SQLite's own messages ("database or disk is full", "database disk image is malformed") name neither the
    file nor what was being done, nor whether anything was lost: a failed write is rolled back as a whole
    (see :meth:`History._tx`), so the rows committed before it stay intact and a resume goes on from them.
    """
    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        def inner(self: "History", *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(self, *args, **kwargs)
            except sqlite3.Error as e:
                hint = ("nothing of this write was kept and every row recorded before it is intact: free space "
                        "or make the work dir writable, then resume (--resume)"
                        if isinstance(e, sqlite3.OperationalError) and what.startswith("record") else
                        "the file is damaged or not a densenas history: restore it from a copy or start a new "
                        "work dir")
                raise HistoryError(f"history file {self.path}: cannot {what}: {e} ({hint})") from None
        return inner  # type: ignore[return-value]
    return wrap


_CORRUPT = "a corrupt row: restore the file from a copy or delete the row"


def _number(value: Any, where: str, column: str, optional: bool = False, integer: bool = False) -> Any:
    """A numeric column of a row, checked (SQLite stores whatever a hand edit or a bad disk put there)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        kind = "an integer" if integer else "a number"
        raise HistoryError(f"{where}: column {column} holds {value!r:.60}, not {kind}{' or NULL' * optional} "
                           f"({_CORRUPT})")
    return value


def _numbers_json(text: Any, where: str, column: str) -> dict[str, float]:
    """A ``metrics_json`` / ``cost_json`` column: a JSON object of numbers."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        data = None
    if not isinstance(data, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                             for v in data.values()):
        raise HistoryError(f"{where}: column {column} holds {text!r:.60}, not a JSON object of numbers "
                           f"({_CORRUPT})")
    return data



def _plain(obj: Any) -> Any:
    """Numpy values to plain python / tensors, so the state loads with ``weights_only=True``."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):  # OrderedDict stays one
        return type(obj)((k, _plain(v)) for k, v in obj.items())
    if type(obj) in (list, tuple):
        return type(obj)(_plain(v) for v in obj)
    return obj


def _pack(obj: Any, what: str = "value") -> bytes:
    buf = io.BytesIO()
    torch.save(_plain(obj), buf)
    blob = buf.getvalue()
    try:  # refuse now what could not be read back safely later
        torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the key named
        raise TypeError(f"history {what}: only plain data (dict, list, tuple, str, int, float, bool, None, "
                        f"bytes) and tensors can be stored: {e}") from None
    return blob


def _unpack(blob: bytes, where: str = "history value") -> Any:
    from .safeload import safe_torch_load  # refuses (naming ``where`` and the global) a pickle running code

    return safe_torch_load(io.BytesIO(blob), name=where, mmengine_types=False,
                           advice="densenas stores none such: resume from a history you trust, or start afresh.")


# ------------------------------------------------------------------------ strategy state, stored by parts
BLOBS = "__densenas_list__"
"""The key of the stand-in for a list stored by parts: its element hashes in ``state_lists`` (one row per
position), each element once in ``state_blobs``; the stand-in holds the length."""
MIN_SPLIT = 8  # lists shorter than this stay in the packed state
MIN_ELEMENT = 64  # lists of smaller elements (ints, arch keys) too: a hash would not be shorter


def _json_exact(obj: Any) -> str | None:
    """``obj`` as JSON text when it reads back equal (plain dicts with str keys, lists, str, finite numbers,
    bools, None: no tuples, NaN or tensors), else ``None``."""
    try:
        text = json.dumps(obj, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return None
    back = json.loads(text)
    return text if back == obj and _same_types(back, obj) else None


def _same_types(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return all(_same_types(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return all(_same_types(x, y) for x, y in zip(a, b))
    return True


def split_state(state: dict) -> tuple[dict, dict[str, list[str]], dict[str, str]]:
    """A strategy state split for storage by parts.

    A state grows by its lists (trials, observations, population); stored whole after every candidate,
    a search of n candidates writes O(n^2) bytes (265 kB per save for Optuna at 200 candidates). Split,
    each long top-level list of JSON-exact elements is replaced by a stand-in holding its length; the
    caller stores each position's content hash (a row per position, rewritten only where it changed) and
    each element's JSON text once, so saving the state after a candidate writes what changed.

    Returns:
        The skeleton (the state with stand-ins), ``{key: [element hash per position]}`` and
        ``{hash: JSON text}``.
    """
    skeleton: dict = {}
    lists: dict[str, list[str]] = {}
    blobs: dict[str, str] = {}
    for key, value in state.items():
        if type(value) is list and len(value) >= MIN_SPLIT:
            texts = [_json_exact(v) for v in value]
            if all(t is not None for t in texts) and sum(map(len, texts)) >= MIN_ELEMENT * len(texts):  # type: ignore[arg-type]
                hashes = [hashlib.sha1(t.encode()).hexdigest()[:20] for t in texts]  # type: ignore[union-attr]
                blobs.update(zip(hashes, texts))  # type: ignore[arg-type]
                lists[key] = hashes
                skeleton[key] = {BLOBS: len(hashes)}
                continue
        skeleton[key] = value
    return skeleton, lists, blobs


def join_state(skeleton: dict, read_list: Callable[[str], list[str]],
               read_blobs: Callable[[list[str]], dict[str, str]], where: str) -> dict:
    """The state :func:`split_state` split: ``read_list(key)`` gives a list's hashes by position,
    ``read_blobs(hashes)`` their JSON texts."""
    out: dict = {}
    for key, value in skeleton.items():
        if isinstance(value, dict) and set(value) == {BLOBS}:
            hashes = read_list(key)
            if len(hashes) != value[BLOBS]:
                raise HistoryError(f"{where}: strategy state list {key!r} should have {value[BLOBS]} element(s), "
                                   f"the state_lists table holds {len(hashes)} ({_CORRUPT})")
            found = read_blobs(hashes)
            missing = [h for h in hashes if h not in found]
            if missing:
                raise HistoryError(f"{where}: strategy state list {key!r} names {len(missing)} stored element(s) "
                                   f"missing from the state_blobs table, e.g. {missing[0]} ({_CORRUPT})")
            value = [json.loads(found[h]) for h in hashes]
        out[key] = value
    return out
