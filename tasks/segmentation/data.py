"""Segmentation data for a search: the proxy set (built from real photographs, VOC layout), VOC and
Cityscapes in their real on-disk layouts, loaded as in-memory tensors at the proxy image size."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import Tensor

from densenas.config import ConfigError, check_classes, check_image_size, check_int, check_keys, check_sub_dict
from densenas.datasets.proxy import build_proxy_voc
from densenas.datasets.segfolder import SegmentationFolder

DATA_KEYS = {"layout", "root", "train_split", "val_split", "image_size", "num_classes", "classes",
             "max_train", "max_val", "proxy"}


@dataclass
class SegData:
    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    num_classes: int
    root: Path


def build_data(data_cfg: dict[str, Any], source: str = "config", log: Callable = print) -> SegData:
    """Load (building the proxy set first if needed) the train/val splits as in-memory tensors."""
    check_keys("data", data_cfg, lambda **kw: None, extra=DATA_KEYS, source=source)
    layout = data_cfg.get("layout", "proxy")
    if "root" not in data_cfg:
        raise ConfigError(f"{source}: 'data.root' is required")
    root = Path(data_cfg["root"])
    num_classes = check_int(data_cfg.get("num_classes"), "data.num_classes", source, optional=True)
    size = check_image_size(data_cfg.get("image_size", 128), "data.image_size", source)
    max_train, max_val = (check_int(data_cfg.get(k), f"data.{k}", source, optional=True)
                          for k in ("max_train", "max_val"))
    classes = check_classes(data_cfg.get("classes"), "data.classes", source)
    if data_cfg.get("classes") is not None:  # class names (exported with the arch); they fix the count
        if num_classes is not None and int(num_classes) != len(data_cfg["classes"]):
            raise ConfigError(f"{source}: data.num_classes={num_classes} but data.classes names "
                              f"{len(data_cfg['classes'])} classes")
        num_classes = len(data_cfg["classes"])
    if layout == "proxy":
        proxy = check_sub_dict(data_cfg.get("proxy"), "data.proxy", source)
        check_keys("data.proxy", proxy, build_proxy_voc, source=source)
        manifest = build_proxy_voc(root, **proxy)
        num_classes = len(manifest["classes"])
        layout = "voc"
    elif layout not in ("voc", "cityscapes"):
        raise ConfigError(f"{source}: 'data.layout' is {layout!r}; use 'proxy', 'voc' or 'cityscapes'")
    if num_classes is None:
        num_classes = 19 if layout == "cityscapes" else 21
    train_split = data_cfg.get("train_split", "train")
    val_split = data_cfg.get("val_split", "val")
    t0 = time.perf_counter()
    train = SegmentationFolder(root, train_split, layout=layout, num_classes=num_classes).load_arrays(
        size, max_items=max_train)
    val = SegmentationFolder(root, val_split, layout=layout, num_classes=num_classes).load_arrays(
        size, max_items=max_val)
    log(f"data: {layout} at {root}: {len(train[0])} train / {len(val[0])} val images at {size}px, "
        f"{num_classes} classes ({time.perf_counter() - t0:.1f}s)")
    return SegData(train, val, int(num_classes), root)
