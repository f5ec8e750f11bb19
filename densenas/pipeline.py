"""Build the objects of a segmentation decoder search from a config (data → encoder → space →
strategy → evaluator), checking every key. Used by ``tools/search.py`` and the benchmarks."""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .config import ConfigError, build_dataclass, check_keys, section
from .evaluation.two_stage import TwoStageCfg, TwoStageEvaluator
from .space import SearchSpace, ShapeSpec

DATA_KEYS = {"layout", "root", "train_split", "val_split", "image_size", "num_classes",
             "max_train", "max_val", "proxy"}
TEACHER_KEYS = {"iters", "batch_size", "lr", "width"}


@dataclass
class SegData:
    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    num_classes: int
    root: Path


def resolve_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_data(data_cfg: dict[str, Any], source: str = "config", log: Callable = print) -> SegData:
    """Load (building the proxy set first if needed) the train/val splits as in-memory tensors."""
    from .datasets.proxy import build_proxy_voc
    from .datasets.segfolder import SegmentationFolder

    check_keys("data", data_cfg, lambda **kw: None, extra=DATA_KEYS, source=source)
    layout = data_cfg.get("layout", "proxy")
    if "root" not in data_cfg:
        raise ConfigError(f"{source}: 'data.root' is required")
    root = Path(data_cfg["root"])
    num_classes = data_cfg.get("num_classes")
    if layout == "proxy":
        proxy = dict(data_cfg.get("proxy", {}))
        check_keys("data.proxy", proxy, build_proxy_voc, source=source)
        manifest = build_proxy_voc(root, **proxy)
        num_classes = len(manifest["classes"])
        layout = "voc"
    elif layout not in ("voc", "cityscapes"):
        raise ConfigError(f"{source}: 'data.layout' is {layout!r}; use 'proxy', 'voc' or 'cityscapes'")
    if num_classes is None:
        num_classes = 19 if layout == "cityscapes" else 21
    size = data_cfg.get("image_size", 128)
    train_split = data_cfg.get("train_split", "train")
    val_split = data_cfg.get("val_split", "val")
    t0 = time.perf_counter()
    train = SegmentationFolder(root, train_split, layout=layout, num_classes=num_classes).load_arrays(
        size, max_items=data_cfg.get("max_train"))
    val = SegmentationFolder(root, val_split, layout=layout, num_classes=num_classes).load_arrays(
        size, max_items=data_cfg.get("max_val"))
    log(f"data: {layout} at {root}: {len(train[0])} train / {len(val[0])} val images at {size}px, "
        f"{num_classes} classes ({time.perf_counter() - t0:.1f}s)")
    return SegData(train, val, int(num_classes), root)


def build_backbone(cfg: dict[str, Any] | None, source: str = "config") -> tuple[nn.Module, list[ShapeSpec]]:
    from .backbones import MobileNetV2Encoder

    cfg = dict(cfg or {})
    kind = cfg.pop("type", "mobilenet_v2")
    if kind != "mobilenet_v2":
        raise ConfigError(f"{source}: 'backbone.type' is {kind!r}; available: ['mobilenet_v2']")
    check_keys("backbone", cfg, MobileNetV2Encoder, source=source)
    enc = MobileNetV2Encoder(**cfg).eval()
    return enc, enc.feature_shapes()


def space_registry() -> dict[str, type]:
    from .decoders.autodeeplab import AutoDeepLabSpace
    from .decoders.auxcell import AuxCellSpace
    from .decoders.irnas import IRNASSpace
    from .decoders.nasfcos import NASFCOSSpace
    from .decoders.nasfpn import NASFPNSpace

    return {"auxcell": AuxCellSpace, "autodeeplab": AutoDeepLabSpace, "irnas": IRNASSpace,
            "nasfcos": NASFCOSSpace, "nasfpn": NASFPNSpace}


def build_space(cfg: dict[str, Any], num_classes: int | None, source: str = "config") -> SearchSpace:
    """The search space of a ``space`` section; ``num_classes`` fills in for spaces that take it."""
    cfg = dict(cfg)
    reg = space_registry()
    kind = cfg.pop("type", None)
    if kind not in reg:
        raise ConfigError(f"{source}: 'space.type' is {kind!r}; available: {sorted(reg)}")
    check_keys("space", cfg, reg[kind], source=source)
    if num_classes is not None and "num_classes" in inspect.signature(reg[kind]).parameters:
        cfg.setdefault("num_classes", num_classes)
    try:
        return reg[kind](**cfg)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: space ({kind}): {e}") from None


def evaluator_config(cfg) -> tuple[TwoStageCfg, dict[str, Any] | None]:
    """The checked ``evaluator`` and ``teacher`` sections (raises :class:`ConfigError` on a bad key)."""
    source = cfg.filename or "config"
    ecfg = build_dataclass("evaluator", TwoStageCfg, section(cfg, "evaluator", {}), source)
    tcfg = section(cfg, "teacher", None)
    if tcfg is not None:
        check_keys("teacher", tcfg, lambda **kw: None, extra=TEACHER_KEYS, source=source)
    return ecfg, tcfg


def build_evaluator(cfg, space: SearchSpace, encoder: nn.Module, shapes: list[ShapeSpec],
                    data: SegData, device: torch.device, work_dir: Path, seed: int = 0,
                    log: Callable = print) -> TwoStageEvaluator:
    """The two-stage evaluator, with the KD teacher trained (or loaded) once for the whole search."""
    from densenas.tasks.segmentation.teacher import train_teacher

    ecfg, tcfg = evaluator_config(cfg)
    teacher_logits = None
    if tcfg is not None and ecfg.kd_weight > 0:
        t0 = time.perf_counter()
        teacher = train_teacher(encoder, shapes, *data.train, data.num_classes, seed=seed,
                                device=device, path=work_dir / "cache" / "teacher.pth", log=log, **tcfg)
        with torch.no_grad():
            teacher_logits = torch.cat([teacher(data.train[0][i:i + 16].to(device)).cpu()
                                        for i in range(0, len(data.train[0]), 16)])
        log(f"teacher ready ({time.perf_counter() - t0:.1f}s)")
        del teacher
    ev = TwoStageEvaluator(space, encoder.to(device), shapes, data.train, data.val, ecfg,
                           teacher_logits=teacher_logits, device=device,
                           cache_dir=work_dir / "cache", log=log)
    log(f"encoder features cached for {len(data.train[0])}+{len(data.val[0])} images "
        f"({ev.cache_seconds:.1f}s)")
    return ev
