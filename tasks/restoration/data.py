"""Restoration data for a one-shot search (IR-NAS, Zhang et al.): the proxy set of crops of real
photographs shipped in installed packages, BSD500-style clean image folders (degraded on the fly and
deterministically) and Rain100-style rainy/clean pairs, loaded as in-memory tensors in [0, 1]."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from torch import Tensor

from densenas.config import ConfigError, check_image_size, check_int, check_keys, check_sub_dict
from densenas.datasets.imagefolder import CleanImageFolder, RainPairFolder, build_proxy_restoration

RESTORE_DATA_KEYS = {"layout", "root", "train_split", "val_split", "image_size", "max_train", "max_val",
                     "proxy"}


def restoration_data(data_cfg: dict[str, Any], task, source: str = "config", log: Callable = print
                     ) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """``((degraded, clean) train, (degraded, clean) val)`` tensors in [0, 1] from a ``data`` section.

    Layouts: ``proxy`` (crops of real photographs shipped in packages, built on first use),
    ``bsd`` (BSD500-style clean images, degraded by ``task``) and ``rain100`` (rainy/clean pairs).
    Test-time degradations use fixed seeds, so every epoch and every run scores the same inputs.
    """
    check_keys("data", data_cfg, lambda **kw: None, extra=RESTORE_DATA_KEYS, source=source)
    if "root" not in data_cfg:
        raise ConfigError(f"{source}: 'data.root' is required")
    root, layout = Path(data_cfg["root"]), data_cfg.get("layout", "proxy")
    size = check_image_size(data_cfg.get("image_size", 64), "data.image_size", source)
    limits = [check_int(data_cfg.get(k), f"data.{k}", source, optional=True) for k in ("max_train", "max_val")]
    if layout == "proxy":
        proxy = check_sub_dict(data_cfg.get("proxy"), "data.proxy", source)
        check_keys("data.proxy", proxy, build_proxy_restoration, source=source)
        build_proxy_restoration(root, **{"rain": task.kind == "derain", **proxy})
        layout, root = ("rain100", root / "derain") if task.kind == "derain" else ("bsd", root)
    t0 = time.perf_counter()
    out = []
    for split, limit, seed in ((data_cfg.get("train_split", "train"), limits[0], 0),
                               (data_cfg.get("val_split", "val"), limits[1], 1)):
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
