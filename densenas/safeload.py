"""Loading checkpoints without running code from them: ``torch.load(weights_only=True)`` everywhere.

A ``.pth`` file is a pickle, and a full unpickle runs whatever code the file names (a checkpoint whose pickle
calls ``os.system`` runs it on load). torch's weights-only unpickler builds only tensors, containers and
primitive values, plus the globals a program allow-lists. This module

* :func:`safe_torch_load` loads with ``weights_only=True`` *passed explicitly* (so a user's
  ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, which only overrides calls that leave ``weights_only`` unset,
  cannot turn it off) and the exact data types mmengine 0.10 checkpoints hold allow-listed
  (:data:`MMENGINE_GLOBALS`); anything else is refused with :class:`UnsafeCheckpointError`, which names the
  file and the offending globals, and a file that is not a checkpoint at all with
  :class:`CorruptCheckpointError`;
* :func:`install` makes mmengine use it for local and http(s) checkpoints (``load_from``, ``resume``,
  ``init_cfg=dict(type='Pretrained')``), refuses ``.pkl``/``.pickle`` files in ``mmengine.load`` (a
  ``BaseDataset`` would unpickle an ``ann_file`` ending in ``.pkl``) and reads YAML with a safe loader;
* :func:`check_state_dict_keys` refuses a checkpoint whose weights do not match a model (mmengine loads
  with ``strict=False`` and only logs a warning, so a model would be evaluated with random weights).

mmengine has no safe mode of its own (open-mmlab/mmengine#1655), hence this module rather than a setting.
"""
from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["CheckpointLoadError", "UnsafeCheckpointError", "CorruptCheckpointError", "CheckpointMismatchError",
           "safe_torch_load", "install", "check_state_dict_keys", "state_dict_of", "MMENGINE_GLOBALS"]


class CheckpointLoadError(ValueError):
    """A checkpoint (or other serialized file) that was not loaded; the message names the file."""

    def __init__(self, message: str, source: str = ""):
        super().__init__(message)
        self.source = source

    def __reduce__(self) -> tuple:  # crosses process boundaries (parallel search workers) intact
        return type(self), (str(self), self.source)


class UnsafeCheckpointError(CheckpointLoadError):
    """The file needs globals (classes / functions) that are not known to be plain data."""

    def __init__(self, message: str, source: str = "", globals_: list[str] | None = None):
        super().__init__(message, source)
        self.globals = list(globals_ or [])

    def __reduce__(self) -> tuple:
        return type(self), (str(self), self.source, self.globals)


class CorruptCheckpointError(CheckpointLoadError):
    """The file is not a readable torch checkpoint (truncated, another format, empty)."""


class CheckpointMismatchError(CheckpointLoadError):
    """The checkpoint's weights do not match the model's (missing, unexpected or differently shaped)."""


# ---------------------------------------------------------------------------------------- allow-list
#: names of the HistoryBuffer methods an mmengine checkpoint refers to (``HistoryBuffer._statistics_methods``)
_HISTORY_BUFFER_METHODS = frozenset({"min", "max", "mean", "current"})


def _history_buffer_method(obj: Any, name: str) -> Any:
    """A ``getattr`` that only fetches HistoryBuffer's statistics methods.

    mmengine's message hub pickles ``HistoryBuffer._statistics_methods``, whose values are the functions
    ``HistoryBuffer.min`` etc.; pickle protocol 2 writes each as ``getattr(HistoryBuffer, "min")``. A plain
    ``builtins.getattr`` on the allow-list would reach ``__class__.__subclasses__()`` and from there any code,
    so the pickle's ``builtins.getattr`` is mapped to this function instead. The functions it returns are
    only stored: the weights-only unpickler calls nothing that is not on the allow-list.
    """
    from mmengine.logging.history_buffer import HistoryBuffer

    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f"Unsupported global: GLOBAL builtins.getattr was not an allowed global by default (only "
        f"getattr(HistoryBuffer, {'|'.join(sorted(_HISTORY_BUFFER_METHODS))}) is allowed, not "
        f"getattr({getattr(obj, '__qualname__', type(obj).__name__)}, {name!r}))")


def _mmengine_globals() -> list[Any]:
    """The globals an mmengine 0.10 / mmseg 1.x / mmdet 3.x checkpoint needs besides torch's defaults.

    Found with ``torch.serialization.get_unsafe_globals_in_checkpoint`` on checkpoints written by
    ``tools/train.py`` (segmentation, detection, restoration): the message hub's log buffers.
    """
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    multiarray = (getattr(np, "_core", None) or np.core).multiarray
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25
    return [
        # a plain record (log values, counts, max_length): no __setstate__/__reduce__ of its own, so
        # unpickling sets attributes to values that were themselves unpickled under this allow-list
        HistoryBuffer,
        # numpy arrays and scalars (the log values): _reconstruct makes an empty array of a given dtype,
        # ndarray.__setstate__ fills it from bytes (object arrays from already-unpickled lists), dtype is
        # built from a type string and scalar from a dtype and bytes; none imports or calls user code.
        # torch's documentation allow-lists exactly these for numpy arrays.
        np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar,
        # the classes of dtype instances (numpy >= 1.25: np.dtype("f8") is a numpy.dtypes.Float64DType),
        # which the unpickler checks before calling dtype.__setstate__ (byte order, field layout)
        *(getattr(dtypes, n) for n in (dtypes.__all__ if dtypes else ()) if n.endswith("DType")),
        # the same under numpy 1.x module names (checkpoints written with numpy < 2)
        (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
        (multiarray.scalar, "numpy.core.multiarray.scalar"),
        # getattr(HistoryBuffer, "min" | "max" | "mean" | "current") only (see _history_buffer_method)
        (_history_buffer_method, "builtins.getattr"),
    ]


#: filled on first use (importing mmengine and numpy only when a checkpoint is loaded)
MMENGINE_GLOBALS: list[Any] = []
# torch's safe_globals context edits a process-wide set, and its exit removes what it added: two loads
# overlapping in threads would remove each other's entries, so loads with the allow-list take turns.
_LOCK = threading.RLock()

_REFUSED = (r"GLOBAL (\S+?) was not an allowed global", r"unsupported GLOBAL (\S+) whose module",
            r"Trying to call reduce for unrecognized function (.+?)(?: which belongs|$)",
            r"Can only build .*?, but got (.+)$", r"Can only create new object .*? but got (.+)$",
            r"(\S+) must be imported to load")


def _unsafe_globals(f: Any, message: str) -> list[str]:
    """The globals a refused file needs, from torch's message and a static scan of its pickles (opcodes are
    read, nothing is run), less those torch and this module allow."""
    found = {g.strip().rstrip(".") for pattern in _REFUSED for g in re.findall(pattern, message, flags=re.M)}
    try:
        if hasattr(f, "seek"):
            f.seek(0)
        found |= set(torch.serialization.get_unsafe_globals_in_checkpoint(f))
    except Exception:  # noqa: BLE001 - not a zip checkpoint: scan it as (a sequence of) plain pickles
        found |= _scan_pickles(f) - _allowed_names()
    return sorted({g if "." in g or g.startswith("<") else f"builtins.{g}" for g in found})


def _scan_pickles(f: Any) -> set[str]:
    """Globals named by the pickles at the start of ``f`` (a legacy ``torch.save`` file or ``pickle.dump``)."""
    try:
        if hasattr(f, "seek"):
            f.seek(0)
            data = f.read()
        else:
            data = Path(f).read_bytes()
    except Exception:  # noqa: BLE001 - unreadable: torch's message is all there is
        return set()
    out: set[str] = set()
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        strings: list[str] = []
        try:
            for op, arg, _ in pickletools.genops(stream):
                if op.name in ("GLOBAL", "INST"):
                    out.add(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    out.add(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
        except Exception:  # noqa: BLE001 - the end of the pickles (tensor bytes follow in legacy files)
            break
    renames = {"__builtin__": "builtins", "copy_reg": "copyreg"}
    return {renames.get(g.split(".", 1)[0], g.split(".", 1)[0]) + g[len(g.split(".", 1)[0]):] for g in out}


def _allowed_names() -> set[str]:
    try:
        from torch import _weights_only_unpickler as wou
        return set(wou._get_allowed_globals()) | set(wou._get_user_allowed_globals())
    except Exception:  # noqa: BLE001 - a private torch API: without it, every scanned global is listed
        return set()


def _name(f: Any, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(f, (str, os.PathLike)):
        return str(f)
    return str(getattr(f, "name", None) or "<in-memory checkpoint>")


def safe_torch_load(f: str | os.PathLike | IO[bytes], map_location: Any = "cpu", *, name: str | None = None,
                    mmengine_types: bool = True, advice: str | None = None) -> Any:
    """``torch.load(f, weights_only=True)`` with clear errors naming the file.

    Args:
        f: a path or a binary file object.
        map_location: as for :func:`torch.load`.
        name: how errors name the source (default: the path).
        mmengine_types: also allow the data types of mmengine checkpoints (:data:`MMENGINE_GLOBALS`);
            ``False`` for densenas' own files, which hold tensors and plain data only.
        advice: what the refusal suggests doing (default: re-saving the weights of a file you trust).

    Raises:
        UnsafeCheckpointError: the file needs a global that is not allow-listed (named in the message).
        CorruptCheckpointError: the file is not a readable checkpoint.
        FileNotFoundError: no such file.
    """
    source = _name(f, name)
    if isinstance(f, (str, os.PathLike)) and not Path(f).is_file():
        raise FileNotFoundError(f"{source}: no such checkpoint file")
    with _LOCK:
        if mmengine_types and not MMENGINE_GLOBALS:
            MMENGINE_GLOBALS.extend(_mmengine_globals())
        allowed = MMENGINE_GLOBALS if mmengine_types else []
        with torch.serialization.safe_globals(allowed):
            try:
                return torch.load(f, map_location=map_location, weights_only=True)
            except pickle.UnpicklingError as e:
                refused = _unsafe_globals(f, str(e))
                if not refused:  # e.g. a plain pickle.dump file ("Unsupported operand"), a damaged one
                    raise _corrupt(source, e) from None
                error = e
            except (FileNotFoundError, PermissionError, IsADirectoryError):
                raise
            except Exception as e:  # noqa: BLE001 - zip, EOF, struct errors of a damaged file alike
                raise _corrupt(source, e) from None
    if advice is None:  # no command that unpickles the file: whoever made it re-saves the weights alone
        advice = ("If you trust the file, ask whoever made it for the weights alone "
                  "(torch.save({'state_dict': model.state_dict()}, path)), which load without running code.")
    raise UnsafeCheckpointError(
        f"{source}: refused to load: it needs {', '.join(refused)}, which {'is' if len(refused) == 1 else 'are'} "
        f"not known to be plain data (loading it could run code from the file). {advice} "
        f"torch: {_first_line(error)}", source, refused)


def _first_line(e: BaseException) -> str:
    m = re.search(r"(Unsupported global: GLOBAL \S+ was not an allowed global by default(?: \([^\n]*\))?"
                  r"|Trying to[^\n]*|Can only[^\n]*)", str(e))
    return m.group(1) if m else str(e).strip().splitlines()[-1][:300]


def _corrupt(source: str, e: BaseException) -> CorruptCheckpointError:
    text = str(e).strip().splitlines()[-1][:300] if str(e).strip() else "unexpected end of file"
    return CorruptCheckpointError(f"{source}: not a readable PyTorch checkpoint (truncated, empty or another "
                                  f"format): {type(e).__name__}: {text}", source)


# -------------------------------------------------------------------------------------- state dicts
def state_dict_of(checkpoint: Any, source: str = "checkpoint") -> dict[str, Any]:
    """The weights of a checkpoint: its ``state_dict`` (or itself), ``module.`` prefixes stripped as
    mmengine's ``load_checkpoint`` does."""
    sd = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(sd, Mapping):
        raise CheckpointMismatchError(f"{source}: holds no state dict (a {type(checkpoint).__name__})", source)
    return {re.sub(r"^module\.", "", k): v for k, v in sd.items()}


def check_state_dict_keys(model: torch.nn.Module, checkpoint: Any, source: str, show: int = 20) -> None:
    """Refuse a checkpoint whose weights are not exactly the model's (names and shapes).

    Args:
        model: the model (an mmengine wrapper is unwrapped).
        checkpoint: a loaded checkpoint (``{"state_dict": ...}`` or a bare state dict).
        source: how to name the checkpoint.
        show: how many keys of each kind the message lists.

    Raises:
        CheckpointMismatchError: missing, unexpected or differently shaped weights (listed, with counts).
    """
    model = getattr(model, "module", model) if _is_wrapper(model) else model
    want = model.state_dict()
    have = state_dict_of(checkpoint, source)
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    shapes = [f"{k} (checkpoint {tuple(have[k].shape)}, model {tuple(v.shape)})" for k, v in want.items()
              if k in have and hasattr(have[k], "shape") and tuple(have[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or shapes):
        return
    parts = []
    for label, keys in (("missing from the checkpoint", missing), ("unexpected (not in the model)", unexpected),
                        ("with another shape", shapes)):
        if keys:
            more = f", ... ({len(keys) - show} more)" if len(keys) > show else ""
            parts.append(f"{len(keys)} weight(s) {label}: {', '.join(keys[:show])}{more}")
    raise CheckpointMismatchError(f"{source}: does not match the model ({len(want)} weights; the checkpoint has "
                                  f"{len(have)}); refusing to evaluate random weights.\n  " + "\n  ".join(parts),
                                  source)


def _is_wrapper(model: Any) -> bool:
    try:
        from mmengine.model import is_model_wrapper
    except ImportError:  # pragma: no cover - mmengine is a dependency
        return False
    return is_model_wrapper(model)


# ------------------------------------------------------------------------------------ mmengine hooks
def load_from_local_safe(filename: str, map_location: Any = None) -> Any:
    """mmengine's local-path checkpoint loader, weights-only (``CheckpointLoader`` scheme ``''``)."""
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"{filename} can not be found.")  # mmengine's own wording
    return safe_torch_load(filename, map_location)


def load_from_http_safe(filename: str, map_location: Any = None, model_dir: str | None = None,
                        progress: bool = False) -> Any:
    """mmengine's http(s) loader, weights-only: mmengine's calls ``torch.hub.load_state_dict_from_url``,
    which passes ``weights_only=False`` explicitly (also reached by ``torchvision://``, ``open-mmlab://``)."""
    from urllib.parse import urlparse

    model_dir = model_dir or os.path.join(torch.hub.get_dir(), "checkpoints")
    os.makedirs(model_dir, exist_ok=True)
    cached = os.path.join(model_dir, os.path.basename(urlparse(filename).path))
    if not os.path.exists(cached):
        sys.stderr.write(f'Downloading: "{filename}" to {cached}\n')
        torch.hub.download_url_to_file(filename, cached, None, progress=progress)
    return safe_torch_load(cached, map_location, name=f"{cached} (from {filename})")


def _refusing_pickle_handler() -> type:
    """``mmengine.load`` handler for ``.pkl``/``.pickle``: refuses to unpickle; dumping still works."""
    from mmengine.fileio.handlers import PickleHandler

    class RefusingPickleHandler(PickleHandler):
        def load_from_fileobj(self, file: Any, **kwargs: Any) -> Any:
            source = _loading_file() or getattr(file, "name", None) or "a pickle file"
            raise CheckpointLoadError(
                f"{source}: refused to load a pickle file (unpickling runs any code the file names); store "
                f"it as JSON (mmengine.dump(obj, 'file.json')) and point the config at that", str(source))
    return RefusingPickleHandler


def _loading_file() -> str | None:
    """The path ``mmengine.fileio.load`` was called with (it hands handlers an anonymous buffer)."""
    from mmengine.fileio import io as mm_io

    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is mm_io.load.__code__:
            file = frame.f_locals.get("file")
            return str(file) if isinstance(file, (str, os.PathLike)) else None
        frame = frame.f_back
    return None


def _safe_yaml_handler() -> type:
    """mmengine's YAML handler reads with ``yaml.Loader`` (``!!python/object/apply`` runs code): a safe
    loader that still reads the tuples mmengine's YAML dumper writes."""
    import yaml
    from mmengine.fileio.handlers import YamlHandler

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = type("SafeTupleLoader", (base,), {})
    loader.add_constructor("tag:yaml.org,2002:python/tuple",
                           lambda ld, node: tuple(ld.construct_sequence(node)))

    class SafeYamlHandler(YamlHandler):
        def load_from_fileobj(self, file: Any, **kwargs: Any) -> Any:
            kwargs["Loader"] = loader
            return yaml.load(file, **kwargs)
    return SafeYamlHandler


_INSTALLED = False


def install() -> None:
    """Route mmengine's checkpoint and file loading through the safe loaders (idempotent).

    After it, ``load_from``, ``--resume``, ``init_cfg=dict(type='Pretrained', checkpoint=...)`` (local paths
    and http(s) URLs) load weights-only, ``mmengine.load`` refuses pickle files and reads YAML safely.
    """
    global _INSTALLED
    if _INSTALLED:
        return
    from mmengine.fileio import register_handler
    from mmengine.runner import checkpoint as ckpt

    ckpt.CheckpointLoader.register_scheme(prefixes="", loader=load_from_local_safe, force=True)
    ckpt.CheckpointLoader.register_scheme(prefixes=("http://", "https://"), loader=load_from_http_safe, force=True)
    # torchvision://, open-mmlab://, mmcls:// call the module's load_from_http by name
    ckpt.load_from_http = load_from_http_safe
    register_handler(["pkl", "pickle"])(_refusing_pickle_handler())
    register_handler(["yaml", "yml"])(_safe_yaml_handler())
    _INSTALLED = True
