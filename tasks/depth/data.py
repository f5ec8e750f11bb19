"""Depth data for a search: the proxy depth set (real photographs, exact depth, NYU layout) or NYU Depth V2
in its real layout, loaded as in-memory tensors at the proxy image size."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import Tensor

from densenas.config import ConfigError, check_image_size, check_int, check_keys, check_sub_dict
from densenas.datasets.depth_proxy import build_proxy_nyu
from densenas.datasets.nyu import NYUDepthFolder

DATA_KEYS = {"layout", "root", "train_split", "val_split", "image_size", "max_train", "max_val", "proxy"}
LAYOUTS = ("proxy", "nyu")


@dataclass
class DepthData:
    """``train`` / ``val``: ``(images N x 3 x H x W normalised, depth N x 1 x H x W metres, 0 = invalid)``."""

    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    root: Path


def build_depth_data(data_cfg: dict[str, Any], source: str = "config", log: Callable = print) -> DepthData:
    """Load (building the proxy set first if needed) the train and val splits.

    ``data`` keys: ``layout`` (``proxy``: build :func:`build_proxy_nyu` at ``root`` with ``proxy`` options,
    then read it; ``nyu``: read ``root`` as is), ``root``, ``train_split`` (default ``train``),
    ``val_split`` (default ``test``), ``image_size`` (int or ``(height, width)``; default 96x128),
    ``max_train`` / ``max_val``.

    Raises:
        ConfigError: an unknown key or value (named with the file); the readers' FileNotFoundError /
            ValueError name the file and field of bad data.
    """
    check_keys("data", data_cfg, lambda **kw: None, extra=DATA_KEYS, source=source)
    layout = data_cfg.get("layout", "proxy")
    if layout not in LAYOUTS:
        raise ConfigError(f"{source}: 'data.layout' is {layout!r}; use one of {list(LAYOUTS)}")
    if "root" not in data_cfg:
        raise ConfigError(f"{source}: 'data.root' is required")
    root = Path(data_cfg["root"])
    size = check_image_size(data_cfg.get("image_size", (96, 128)), "data.image_size", source)
    max_train, max_val = (check_int(data_cfg.get(k), f"data.{k}", source, optional=True)
                          for k in ("max_train", "max_val"))
    if layout == "proxy":
        proxy = check_sub_dict(data_cfg.get("proxy"), "data.proxy", source)
        check_keys("data.proxy", proxy, build_proxy_nyu, source=source)
        try:
            build_proxy_nyu(root, **proxy)
        except ValueError as e:
            raise ConfigError(f"{source}: data.proxy: {e}") from None
    t0 = time.perf_counter()
    train = NYUDepthFolder(root, data_cfg.get("train_split", "train")).load_arrays(size, max_items=max_train)
    val = NYUDepthFolder(root, data_cfg.get("val_split", "test")).load_arrays(size, max_items=max_val)
    log(f"data: {layout} depth at {root}: {len(train[0])} train / {len(val[0])} val images at "
        f"{tuple(train[0].shape[-2:])}px ({time.perf_counter() - t0:.1f}s)")
    return DepthData(train, val, root)
