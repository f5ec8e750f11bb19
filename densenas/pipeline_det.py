"""Build the objects of a detection neck/head search from a config (NAS-FCOS, Wang et al. CVPR 2020;
NAS-FPN, Ghiasi et al. CVPR 2019): data (proxy COCO set, COCO json or VOC xml), the two-stage detection
evaluator (Nekrasov et al. CVPR 2019 early stopping, cached frozen backbone features in stage 1), and the
report columns. Every key is checked against what it configures. Used by ``tools/search.py``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .config import ConfigError, build_dataclass, check_keys, section
from .evaluation.detection import DetEvalCfg, DetectionEvaluator, detector_model_fn
from .space import SearchSpace, ShapeSpec

DET_DATA_KEYS = {"layout", "root", "train_split", "val_split", "image_size", "max_train", "max_val",
                 "proxy", "classes"}
DET_TASK_KEYS = {"type", "detector", "stacked_convs", "feat_channels"}
DET_METRICS = (("ap", "AP"), ("ap50", "AP50"), ("neg_loss", "-loss"))
DetSplit = tuple[Tensor, list[Tensor], list[Tensor]]


@dataclass
class DetData:
    """In-memory detection splits: ``(images, boxes per image, labels per image)``."""

    train: DetSplit
    val: DetSplit
    classes: tuple[str, ...]
    root: Path


def is_detection(cfg) -> bool:
    """Whether the config's ``task`` section asks for a detection search."""
    return (section(cfg, "task", {}) or {}).get("type") == "detection"


def build_det_data(data_cfg: dict[str, Any], source: str = "config", log: Callable = print) -> DetData:
    """Load (building the proxy COCO set first if needed) the train/val splits as tensors.

    Layouts: ``proxy_coco`` (default; real-image objects with exact boxes, COCO layout), ``coco`` and
    ``voc`` in their real on-disk layouts.
    """
    from .datasets.detfolder import DetectionFolder
    from .datasets.proxy_det import build_proxy_coco

    check_keys("data", data_cfg, lambda **kw: None, extra=DET_DATA_KEYS, source=source)
    if "root" not in data_cfg:
        raise ConfigError(f"{source}: 'data.root' is required")
    root, layout = Path(data_cfg["root"]), data_cfg.get("layout", "proxy_coco")
    size = data_cfg.get("image_size", 128)
    if layout == "proxy_coco":
        proxy = dict(data_cfg.get("proxy", {}))
        check_keys("data.proxy", proxy, build_proxy_coco, source=source)
        build_proxy_coco(root, log=log, **{"size": size, **proxy})
        layout = "coco"
    elif layout not in ("coco", "voc"):
        raise ConfigError(f"{source}: 'data.layout' is {layout!r}; use 'proxy_coco', 'coco' or 'voc'")
    t0 = time.perf_counter()
    classes = data_cfg.get("classes")
    train = DetectionFolder(root, data_cfg.get("train_split", "train"), layout, classes=classes)
    val = DetectionFolder(root, data_cfg.get("val_split", "val"), layout, classes=train.classes)
    data = DetData(train.load_arrays(size, data_cfg.get("max_train")),
                   val.load_arrays(size, data_cfg.get("max_val")), tuple(train.classes), root)
    boxes = sum(len(b) for b in data.train[1])
    log(f"data: {layout} at {root}: {len(data.train[0])} train ({boxes} boxes) / {len(data.val[0])} val "
        f"images at {size}px, {len(data.classes)} classes ({time.perf_counter() - t0:.1f}s)")
    return data


def det_evaluator_config(cfg) -> tuple[DetEvalCfg, dict[str, Any]]:
    """The checked ``evaluator`` section and the detector options of the ``task`` section."""
    source = cfg.filename or "config"
    ecfg = build_dataclass("evaluator", DetEvalCfg, section(cfg, "evaluator", {}), source)
    task = dict(section(cfg, "task", {}) or {})
    check_keys("task", task, lambda **kw: None, extra=DET_TASK_KEYS, source=source)
    task.pop("type", None)
    return ecfg, task


def build_det_evaluator(cfg, space: SearchSpace, encoder: nn.Module, shapes: list[ShapeSpec], data: DetData,
                        device: torch.device, work_dir: Path, log: Callable = print) -> DetectionEvaluator:
    """The two-stage detection evaluator; backbone features are cached once for the whole search."""
    ecfg, task = det_evaluator_config(cfg)
    model_fn = detector_model_fn(space, len(data.classes), in_channels=[s.channels for s in shapes],
                                 out_indices=tuple(encoder.out_indices), **task)
    ev = DetectionEvaluator(space, model_fn, encoder.to(device), data.train, data.val, ecfg, device=device,
                            cache_dir=work_dir / "cache", log=log)
    log(f"backbone features cached for {len(data.train[0])}+{len(data.val[0])} images "
        f"({ev.cache_seconds:.1f}s)")
    return ev
