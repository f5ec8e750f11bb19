"""Build a differentiable search (DARTS, Liu et al. ICLR 2019) from a config, for ``tools/search.py``.

Two tasks share the path: segmentation with the Auto-DeepLab lattice (Liu et al., CVPR 2019) on the
segmentation data of :func:`densenas.pipeline.build_data`, and image restoration (denoising, deraining)
with IR-NAS (Zhang et al., "Memory-Efficient Hierarchical Neural Architecture Search for Image
Restoration") on clean image folders (BSD500 layout, degraded on the fly and deterministically) or
Rain100-style pairs. Every section key is checked, so a typo fails before any training.

Config sections read here: ``task`` (``type="segmentation"`` or ``"restoration"`` with ``kind``,
``sigma``, ``lam``, ``reward_metric``), ``data``, ``space`` (a differentiable space), ``strategy``
(``type="darts"`` + :class:`~densenas.strategies.darts.DartsCfg` fields) and ``search`` (``epochs``,
``time_budget_s``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import Tensor

from .config import ConfigError, check_keys, section
from .strategies.darts import DartsCfg
from .supernet import DifferentiableSpace

RESTORE_DATA_KEYS = {"layout", "root", "train_split", "val_split", "image_size", "max_train", "max_val",
                     "proxy"}
TASK_KEYS = {"type", "kind", "sigma", "lam", "reward_metric"}
SEARCH_KEYS = {"epochs", "time_budget_s"}


@dataclass
class DifferentiableJob:
    """Everything :func:`~densenas.evaluation.supernet_search.search_supernet` needs."""

    space: DifferentiableSpace
    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    loss_fn: Callable
    score_fn: Callable
    darts: dict[str, Any]
    epochs: int
    time_budget_s: float | None
    summary: str


def is_differentiable(cfg) -> bool:
    """Whether the config asks for a differentiable (supernet) search."""
    return (section(cfg, "strategy", {}) or {}).get("type") == "darts"


def restoration_data(data_cfg: dict[str, Any], task, source: str = "config", log: Callable = print
                     ) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """``((degraded, clean) train, (degraded, clean) val)`` tensors in [0, 1] from a ``data`` section.

    Layouts: ``proxy`` (crops of real photographs shipped in packages, built on first use),
    ``bsd`` (BSD500-style clean images, degraded by ``task``) and ``rain100`` (rainy/clean pairs).
    Test-time degradations use fixed seeds, so every epoch and every run scores the same inputs.
    """
    from .datasets.imagefolder import CleanImageFolder, RainPairFolder, build_proxy_restoration

    check_keys("data", data_cfg, lambda **kw: None, extra=RESTORE_DATA_KEYS, source=source)
    if "root" not in data_cfg:
        raise ConfigError(f"{source}: 'data.root' is required")
    root, layout = Path(data_cfg["root"]), data_cfg.get("layout", "proxy")
    if layout == "proxy":
        proxy = dict(data_cfg.get("proxy", {}))
        check_keys("data.proxy", proxy, build_proxy_restoration, source=source)
        build_proxy_restoration(root, **{"rain": task.kind == "derain", **proxy})
        layout, root = ("rain100", root / "derain") if task.kind == "derain" else ("bsd", root)
    size, t0 = data_cfg.get("image_size", 64), time.perf_counter()
    out = []
    for split, limit, seed in ((data_cfg.get("train_split", "train"), data_cfg.get("max_train"), 0),
                               (data_cfg.get("val_split", "val"), data_cfg.get("max_val"), 1)):
        if layout == "bsd":
            clean = CleanImageFolder(root, split).load_arrays(size, max_items=limit)
            out.append((task.degrade(clean, seed), clean))
        elif layout == "rain100":
            out.append(tuple(RainPairFolder(root, split).load_arrays(size, max_items=limit)))
        else:
            raise ConfigError(f"{source}: 'data.layout' is {layout!r}; use 'proxy', 'bsd' or 'rain100'")
    log(f"data: {layout} at {root}: {len(out[0][0])} train / {len(out[1][0])} val images at {size}px, "
        f"task {task.kind}{f' sigma {task.sigma:g}' if task.kind == 'denoise' else ''} "
        f"({time.perf_counter() - t0:.1f}s)")
    return out[0], out[1]


def build_job(cfg, log: Callable = print) -> DifferentiableJob:
    """Check every section of a differentiable-search config and load its data.

    Raises:
        ConfigError: an unknown key or value, naming the file and the dotted key.
    """
    from .evaluation.supernet_search import seg_score_fn
    from .pipeline import build_data, build_space, space_registry

    source = cfg.filename or "config"
    kind = (section(cfg, "space") or {}).get("type")
    diff = sorted(k for k, v in space_registry().items() if issubclass(v, DifferentiableSpace))
    if kind not in diff:  # before any data is loaded
        raise ConfigError(f"{source}: strategy 'darts' needs a differentiable space {diff}; "
                          f"'space.type' is {kind!r}")
    darts = {k: v for k, v in section(cfg, "strategy").items() if k != "type"}
    check_keys("strategy", darts, DartsCfg, source=source)
    search = section(cfg, "search", {})
    check_keys("search", search, lambda **kw: None, extra=SEARCH_KEYS, source=source)
    task_cfg = dict(section(cfg, "task", {}) or {})
    check_keys("task", task_cfg, lambda **kw: None, extra=TASK_KEYS, source=source)
    kind = task_cfg.pop("type", "segmentation")
    if kind == "segmentation":
        if task_cfg:
            raise ConfigError(f"{source}: 'task' keys {sorted(task_cfg)} apply to restoration only")
        data = build_data(section(cfg, "data"), source=source, log=log)
        from densenas.tasks.segmentation.losses import seg_loss

        train, val, loss_fn = data.train, data.val, seg_loss
        score_fn = seg_score_fn(data.num_classes, int(darts.get("batch_size", 8)))
        num_classes = data.num_classes
    elif kind == "restoration":
        from densenas.tasks.restoration.functional import RestorationTask, restoration_score_fn

        try:
            task = RestorationTask(**task_cfg)
        except ValueError as e:
            raise ConfigError(f"{source}: task: {e}") from None
        train, val = restoration_data(section(cfg, "data"), task, source=source, log=log)
        loss_fn, num_classes = task.loss, None
        score_fn = restoration_score_fn(task.reward_metric, int(darts.get("batch_size", 8)))
    else:
        raise ConfigError(f"{source}: 'task.type' is {kind!r}; use 'segmentation' or 'restoration'")
    space = build_space(section(cfg, "space"), num_classes, source=source)
    if "epochs" not in search:
        raise ConfigError(f"{source}: 'search.epochs' is required for a darts search")
    summary = (f"search: space {space.name} ({len(space.decisions())} decisions), strategy darts "
               f"(first-order), task {kind}, {search['epochs']} epochs")
    return DifferentiableJob(space, train, val, loss_fn, score_fn, darts, int(search["epochs"]),
                             search.get("time_budget_s"), summary)

