"""Detection data for a search (NAS-FCOS, Wang et al. CVPR 2020; NAS-FPN, Ghiasi et al. CVPR 2019): the
proxy COCO set built from real photographs, COCO json or VOC xml in their real layouts, loaded as
in-memory tensors with per-image boxes and labels. Every key of the ``data`` section is checked."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import Tensor

from densenas.config import ConfigError, check_classes, check_image_size, check_int, check_keys, check_sub_dict
from densenas.datasets.detfolder import DetectionFolder
from densenas.datasets.proxy_det import build_proxy_coco

DET_DATA_KEYS = {"layout", "root", "train_split", "val_split", "image_size", "max_train", "max_val",
                 "proxy", "classes"}
DetSplit = tuple[Tensor, list[Tensor], list[Tensor]]


@dataclass
class DetData:
    """In-memory detection splits: ``(images, boxes per image, labels per image)``."""

    train: DetSplit
    val: DetSplit
    classes: tuple[str, ...]
    root: Path


def build_det_data(data_cfg: dict[str, Any], source: str = "config", log: Callable = print) -> DetData:
    """Load (building the proxy COCO set first if needed) the train/val splits as tensors.

    Layouts: ``proxy_coco`` (default; real-image objects with exact boxes, COCO layout), ``coco`` and
    ``voc`` in their real on-disk layouts.
    """
    check_keys("data", data_cfg, lambda **kw: None, extra=DET_DATA_KEYS, source=source)
    if "root" not in data_cfg:
        raise ConfigError(f"{source}: 'data.root' is required")
    root, layout = Path(data_cfg["root"]), data_cfg.get("layout", "proxy_coco")
    size = check_image_size(data_cfg.get("image_size", 128), "data.image_size", source)
    max_train, max_val = (check_int(data_cfg.get(k), f"data.{k}", source, optional=True)
                          for k in ("max_train", "max_val"))
    classes = check_classes(data_cfg.get("classes"), "data.classes", source)
    if layout == "proxy_coco":
        proxy = check_sub_dict(data_cfg.get("proxy"), "data.proxy", source)
        check_keys("data.proxy", proxy, build_proxy_coco, source=source)
        build_proxy_coco(root, log=log, **{"size": size, **proxy})
        layout = "coco"
    elif layout not in ("coco", "voc"):
        raise ConfigError(f"{source}: 'data.layout' is {layout!r}; use 'proxy_coco', 'coco' or 'voc'")
    t0 = time.perf_counter()
    train = DetectionFolder(root, data_cfg.get("train_split", "train"), layout, classes=classes)
    val = DetectionFolder(root, data_cfg.get("val_split", "val"), layout, classes=train.classes)
    data = DetData(train.load_arrays(size, max_train), val.load_arrays(size, max_val), tuple(train.classes), root)
    boxes = sum(len(b) for b in data.train[1])
    log(f"data: {layout} at {root}: {len(data.train[0])} train ({boxes} boxes) / {len(data.val[0])} val "
        f"images at {size}px, {len(data.classes)} classes ({time.perf_counter() - t0:.1f}s)")
    return data
