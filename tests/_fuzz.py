"""Shared pieces of the dataset fuzz tests (``test_fuzz_data.py``, ``test_fuzz_det_data.py``): Hypothesis
settings, the "loads, or fails naming the file" check, scratch copies of fixture folders, split-list edits
and a JSON strategy."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck
from hypothesis import strategies as st

FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                   HealthCheck.data_too_large])
#: what Python / numpy say when a bad value reaches code that never expected it
DEEP = ("unhashable type", "object has no attribute", "not subscriptable", "is not iterable",
        "index out of range", "not supported between instances", "unsupported operand",
        "unexpected keyword argument", "invalid literal for", "cannot reshape", "could not broadcast",
        "object is not callable", "string indices must be integers")


def loads_or_fails_clearly(build: Callable[[], Any], root: Path, keys: tuple[str, ...] = ()) -> Any:
    """``build()``'s value, or ``None`` after checking its error is a clear one (names a file under
    ``root`` or one of the config ``keys``)."""
    try:
        return build()
    except (FileNotFoundError, ValueError) as e:
        msg = str(e)
        assert not any(p in msg for p in DEEP), f"{type(e).__name__} from inside: {msg}"
        assert str(root) in msg or any(k in msg for k in keys), \
            f"{type(e).__name__} names no file under {root} nor a key of {keys}: {msg}"
        return None


_COPIES: list[Path] = []
# hundreds of tiny folders are copied and removed: in memory where there is a tmpfs (10x faster than disk)
_SCRATCH = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


def copy_of(template: Path) -> Path:
    """A fresh copy of a fixture folder for one example (the previous example's copy is removed)."""
    while _COPIES:
        shutil.rmtree(_COPIES.pop(), ignore_errors=True)
    d = Path(tempfile.mkdtemp(prefix="fuzz_data_", dir=_SCRATCH))
    _COPIES.append(d)
    shutil.copytree(template, d / "root")
    return d / "root"


@pytest.fixture(scope="module", autouse=True)
def _remove_copies():
    yield
    while _COPIES:
        shutil.rmtree(_COPIES.pop(), ignore_errors=True)



SPLIT_EDITS = ("drop", "extra", "duplicate", "blank", "empty", "garbage", "traversal", "spaces")


def edit_split_list(data: st.DataObject, path: Path) -> None:
    ids = path.read_text().split()
    how = data.draw(st.sampled_from(SPLIT_EDITS))
    if how == "drop" and ids:
        ids.pop(data.draw(st.integers(0, len(ids) - 1)))
    elif how == "extra":
        ids.append(data.draw(st.sampled_from(["2007_999999", "missing", "x.jpg"]) | st.text(min_size=1, max_size=8)))
    elif how == "duplicate" and ids:
        ids.append(ids[0])
    elif how == "blank":
        ids = ["", "   ", *ids, "\t"]
    elif how == "empty":
        ids = []
    elif how == "traversal":
        ids.append("../JPEGImages/" + (ids[0] if ids else "x"))
    elif how == "spaces" and ids:
        ids = [f"{i} 1" for i in ids]  # VOC's Main/<class>_train.txt style: "<id> <flag>"
    else:
        path.write_bytes(data.draw(st.binary(max_size=40)))
        return
    path.write_text("\n".join(ids) + "\n")



JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 100) | st.floats() | st.text(max_size=6),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                    max_leaves=8)


def mutate_json(data: st.DataObject, doc: Any, depth: int = 0) -> Any:
    """One random change somewhere in a JSON document: drop, replace or add a member / element."""
    if isinstance(doc, dict) and doc and (depth == 0 or data.draw(st.booleans())):
        key = data.draw(st.sampled_from(sorted(doc)))
        how = data.draw(st.sampled_from(["into", "into", "into", "drop", "replace", "add"]))
        if how == "into" and isinstance(doc[key], (dict, list)) and doc[key]:
            doc[key] = mutate_json(data, doc[key], depth + 1)
        elif how == "drop":
            del doc[key]
        elif how == "add":
            doc[data.draw(st.text(max_size=6))] = data.draw(JSON)
        else:
            doc[key] = data.draw(JSON)
        return doc
    if isinstance(doc, list) and doc:
        i = data.draw(st.integers(0, len(doc) - 1))
        how = data.draw(st.sampled_from(["into", "into", "drop", "replace", "dup"]))
        if how == "into" and isinstance(doc[i], (dict, list)):
            doc[i] = mutate_json(data, doc[i], depth + 1)
        elif how == "drop":
            doc.pop(i)
        elif how == "dup":
            doc.append(json.loads(json.dumps(doc[i])))
        else:
            doc[i] = data.draw(JSON)
        return doc
    return data.draw(JSON)
