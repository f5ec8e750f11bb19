"""What every exported OpenMMLab config shares: the mmengine runtime block and the config writer.

Task exporters (``tasks/<name>/export.py``) build the model and data sections; this module adds the loops,
hooks, environment and logging of the mmengine ``Runner`` and writes the config file.

Written configs compose ``_base_`` files the way mmseg / mmdet configs do (:func:`compose_config`): each task
ships one base file per dataset layout (``datasets/``), one per schedule (``schedules/``) and its runtime
(``tasks/<name>/configs/_base_/``); an export copies the ones it uses next to the config (``<dir>/_base_/``)
and writes only what differs from them: the model (its space's fragment), the data root and classes, the
iterations, seed and work dir. The composed file is loaded back and checked against the complete config
before the export returns, so composing never changes what is trained.
"""
from __future__ import annotations

import keyword
import math
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

BASE_DIR = "_base_"
"""Folder of an exported config's base files, next to it (as ``configs/_base_`` in mmseg / mmdet)."""


def fill_defaults(options: dict[str, Any], **defaults: Any) -> None:
    """Set each of ``defaults`` in ``options`` that the user left unset (absent or ``None``); a task's
    exporter uses it for the command-line options it was not given."""
    for k, v in defaults.items():
        if options.get(k) is None:
            options[k] = v


def runtime_config(iters: int, interval: int, save_best: str, *, seed: int, work_dir: str,
                   rule: str | None = None, visualizer: str | None = None,
                   vis_hook: str | None = None) -> dict[str, Any]:
    """The loops, hooks, environment and logging every exported config shares (mmengine ``Runner``).

    Args:
        iters: training iterations (``IterBasedTrainLoop``).
        interval: validation and checkpoint interval.
        save_best: metric key whose best value keeps a checkpoint.
        seed: ``randomness.seed``.
        work_dir: the runner's work dir.
        rule: ``"greater"`` / ``"less"`` for ``save_best`` (default: mmengine infers it from the key).
        visualizer: visualizer type (e.g. ``"SegLocalVisualizer"``); ``None``: no visualizer section.
        vis_hook: visualization hook type added to the default hooks, if any.
    """
    checkpoint = dict(type="CheckpointHook", by_epoch=False, interval=interval, max_keep_ckpts=1,
                      save_best=save_best, **({"rule": rule} if rule else {}))
    hooks = dict(timer=dict(type="IterTimerHook"),
                 logger=dict(type="LoggerHook", interval=max(iters // 20, 1), log_metric_by_epoch=False),
                 param_scheduler=dict(type="ParamSchedulerHook"), checkpoint=checkpoint,
                 sampler_seed=dict(type="DistSamplerSeedHook"))
    if vis_hook:
        hooks["visualization"] = dict(type=vis_hook)
    cfg = dict(
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=iters, val_interval=interval),
        val_cfg=dict(type="ValLoop"), test_cfg=dict(type="TestLoop"), default_hooks=hooks,
        env_cfg=dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
                     dist_cfg=dict(backend="nccl")),
        randomness=dict(seed=seed),
        log_processor=dict(by_epoch=False), log_level="INFO", load_from=None, resume=False, work_dir=work_dir)
    if visualizer:
        cfg.update(vis_backends=[dict(type="LocalVisBackend")],
                   visualizer=dict(type=visualizer, vis_backends=[dict(type="LocalVisBackend")],
                                   name="visualizer"))
    return cfg


def dump_config(cfg: dict[str, Any], path: str | Path, bases: Sequence[str | Path] = (),
                base_root: str | Path | None = None, header: str = "") -> Path:
    """Write ``cfg`` as an mmengine python config at ``path`` (parents created); returns the path.

    With ``bases`` (files under ``base_root``, a task's ``configs/_base_``) the file composes them
    (:func:`compose_config`); without, it is self-contained."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if bases:
        if base_root is None:
            raise ValueError("dump_config: bases need base_root (the folder they are relative to)")
        return compose_config(cfg, path, [Path(base_root) / b for b in bases], Path(base_root), header)
    path.write_text(header + format_config(cfg))
    return path


def compose_config(cfg: Mapping[str, Any], path: Path, bases: Sequence[Path], base_root: Path,
                   header: str = "") -> Path:
    """Write ``cfg`` as a config that inherits ``bases`` and states only what differs from them.

    Each base file is copied to ``<path's dir>/_base_/<its path under base_root>`` (densenas' own files: an
    export rewrites them), and ``_base_`` names them in order. The overrides are computed against the merged
    bases: a dict that matches is merged key by key; a list, a value, or a dict whose base holds keys
    ``cfg`` lacks (``_delete_=True``) is stated whole. The written file is loaded back with mmengine's
    ``Config.fromfile`` and must give ``cfg`` exactly.

    Raises:
        FileNotFoundError: a base file is missing (a broken install).
        ValueError: the bases hold a top-level key ``cfg`` lacks (a base file that does not fit the task).
        RuntimeError: the composed file does not load back as ``cfg`` (a bug; nothing is left at ``path``).
    """
    from mmengine.config import Config

    merged: dict[str, Any] = {}
    rel = []
    for base in bases:
        if not base.is_file():
            raise FileNotFoundError(f"config base {base} is missing (reinstall densenas)")
        name = base.relative_to(base_root).as_posix()
        dest = path.parent / BASE_DIR / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.is_file() or dest.read_bytes() != base.read_bytes():
            shutil.copyfile(base, dest)
        merged.update(Config.fromfile(str(base)).to_dict())
        rel.append(f"./{BASE_DIR}/{name}")
    extra = sorted(set(merged) - set(cfg))
    if extra:
        raise ValueError(f"config bases {[b.name for b in bases]} set {extra}, which this config does not have")
    child = overrides(cfg, merged)
    header = header or (f"# Written by densenas (tools/export.py): the data, schedule and runtime of ./{BASE_DIR}/ and\n"
                        f"# what this model changes. Train: python3 tools/train.py {path.name}; "
                        f"test: python3 tools/test.py {path.name} CHECKPOINT\n")
    path.write_text(header + format_config({"_base_": rel, **child}))
    loaded = Config.fromfile(str(path)).to_dict()
    if _plain(loaded) != _plain(dict(cfg)):
        path.unlink()
        diff = sorted(k for k in set(cfg) | set(loaded) if _plain(cfg.get(k)) != _plain(loaded.get(k)))
        raise RuntimeError(f"composing {path.name} on {rel} changed {diff} (a densenas bug: please report it)")
    return path


def overrides(cfg: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    """What a config inheriting ``base`` must state to become ``cfg`` under mmengine's merge rules (dicts
    merge key by key, anything else replaces; ``_delete_=True`` replaces a dict whole)."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if k not in base:
            out[k] = v
        elif isinstance(v, Mapping) and isinstance(base[k], Mapping):
            if set(base[k]) - set(v):
                out[k] = {"_delete_": True, **v}
            else:
                sub = overrides(v, base[k])
                if sub:
                    out[k] = sub
        elif _plain(v) != _plain(base[k]):
            out[k] = v
    return out


def _plain(x: Any) -> Any:
    """``x`` with tuples as lists and mappings as dicts, for comparing a config with its loaded form."""
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def format_config(cfg: Mapping[str, Any], width: int = 110) -> str:
    """``cfg`` as python config source, in its own key order, ``dict(type=..., ...)`` the way mmseg / mmdet
    configs are written (mmengine's ``Config.dump`` sorts keys and spreads every tuple over lines)."""
    return "".join(f"{k} = {_fmt(v, len(k) + 3, width)}\n" for k, v in cfg.items())


def _fmt(v: Any, col: int, width: int, indent: int = 0) -> str:
    """``v`` as a python literal starting at column ``col``: on one line if it fits, else one item per line."""
    flat = _flat(v)
    if col + len(flat) <= width or not isinstance(v, (Mapping, list, tuple)) or not v:
        return flat
    pad = " " * (indent + 4)
    if isinstance(v, (list, tuple)) and all(len(_flat(x)) <= 24 and not isinstance(x, Mapping) for x in v):
        # a long list of names, numbers or short lists: packed, as many items per line as fit
        lines, cur = [], pad
        for x in map(_flat, v):
            if len(cur) + len(x) + 2 > width and cur.strip():
                lines.append(cur.rstrip())
                cur = pad
            cur += x + ", "
        lines.append(cur.rstrip())
        open_, close = ("[", "]") if isinstance(v, list) else ("(", ")")
        return open_ + "\n" + "\n".join(lines) + "\n" + " " * indent + close
    if isinstance(v, Mapping):
        named = all(isinstance(k, str) and k.isidentifier() and not keyword.iskeyword(k) for k in v)
        items = [(f"{k}=" if named else f"{k!r}: ", x) for k, x in v.items()]
        open_, close = ("dict(", ")") if named else ("{", "}")
    else:
        items = [("", x) for x in v]
        open_, close = ("[", "]") if isinstance(v, list) else ("(", ",)" if len(v) == 1 else ")")
    lines = [f"{pad}{p}{_fmt(x, len(pad) + len(p), width, indent + 4)}," for p, x in items]
    return open_ + "\n" + "\n".join(lines) + "\n" + " " * indent + close.lstrip(",")


def _flat(v: Any) -> str:
    if isinstance(v, Mapping):
        if all(isinstance(k, str) and k.isidentifier() and not keyword.iskeyword(k) for k in v):
            return "dict(" + ", ".join(f"{k}={_flat(x)}" for k, x in v.items()) + ")"
        return "{" + ", ".join(f"{k!r}: {_flat(x)}" for k, x in v.items()) + "}"
    if isinstance(v, tuple):
        return "(" + ", ".join(map(_flat, v)) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, list):
        return "[" + ", ".join(map(_flat, v)) + "]"
    if isinstance(v, Path):
        return repr(str(v))
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):  # numpy scalars
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return f"float({str(v)!r})"
    return repr(v)
