"""Keypoint data for a search: top-down person crops in memory, heatmap targets from mmpose's codec.

The proxy keypoint set (:mod:`densenas.datasets.kpt_proxy`, COCO layout), COCO keypoints and MPII (readers in
:mod:`densenas.datasets.cocokpt`) are cut into person crops at ``input_size`` as mmpose's top-down pipeline
does (``GetBBoxCenterScale`` + ``TopdownAffine``, no augmentation), ImageNet-normalised, with heatmap targets
and target weights from mmpose's ``MSRAHeatmap`` codec (Xiao et al., "Simple Baselines for Human Pose
Estimation and Tracking", ECCV 2018) at stride 4, and what the metrics need (keypoints in image
coordinates, visibility, box, area, head size, ids, the COCO annotations).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from densenas.config import ConfigError, check_image_size, check_int, check_keys, check_sub_dict
from densenas.datasets.cocokpt import (KeypointFormatError, PersonInstance, coco_paths, crop_persons, mpii_paths,
                                       read_coco_keypoints, read_mpii)
from densenas.datasets.kpt_proxy import build_proxy_kpt

DATA_KEYS = {"layout", "root", "train_split", "val_split", "input_size", "sigma", "max_train", "max_val",
             "num_keypoints", "proxy"}
LAYOUTS = ("proxy", "coco", "mpii")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HEATMAP_STRIDE = 4


@dataclass
class KptSplit:
    """One split: normalised crops, targets, and the ground truth of the metrics.

    Attributes:
        images: ``N x 3 x h x w`` float32, ImageNet-normalised.
        heatmaps: ``N x K x h/4 x w/4`` float32 MSRA targets; weights: ``N x K`` target weights.
        centers, scales: ``N x 2`` crop boxes (mmpose's ``input_center`` / ``input_scale``).
        keypoints: ``N x K x 2`` image coordinates; visible: ``N x K`` flags (0/1/2).
        head_size: ``N`` PCKh normalisers (NaN when unknown); bbox_size: ``N`` max side of the box.
        anns: COCO annotations (one per person); images: COCO image entries of the split.
    """

    images: Tensor
    heatmaps: Tensor
    weights: Tensor
    centers: np.ndarray
    scales: np.ndarray
    keypoints: np.ndarray
    visible: np.ndarray
    head_size: np.ndarray
    bbox_size: np.ndarray
    anns: list[dict[str, Any]]
    images_info: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class KptData:
    train: KptSplit
    val: KptSplit
    num_keypoints: int
    input_size: tuple[int, int]  # (w, h), mmpose's order
    heatmap_size: tuple[int, int]  # (w, h)
    sigma: float
    sigmas: np.ndarray  # OKS sigmas
    flip_indices: list[int]
    root: Path
    layout: str


def codec_cfg(input_size: tuple[int, int], sigma: float) -> dict[str, Any]:
    """mmpose's ``MSRAHeatmap`` codec at stride 4 for ``input_size = (w, h)``."""
    w, h = input_size
    return dict(type="MSRAHeatmap", input_size=(w, h), heatmap_size=(w // HEATMAP_STRIDE, h // HEATMAP_STRIDE),
                sigma=float(sigma))


def build_codec(input_size: tuple[int, int], sigma: float) -> Any:
    from mmpose.codecs import MSRAHeatmap

    cfg = codec_cfg(input_size, sigma)
    cfg.pop("type")
    return MSRAHeatmap(**cfg)


def metainfo(layout: str, root: Path, num_keypoints: int) -> dict[str, Any]:
    """mmpose's parsed metainfo of the data: the set's ``metainfo.py`` (proxy), mmpose's COCO (K=17) or
    MPII (K=16) dataset info.

    Raises:
        ConfigError: a COCO-layout set of another ``K`` without a ``metainfo.py`` (OKS needs sigmas).
    """
    from mmpose.datasets.datasets.utils import parse_pose_metainfo

    own = root / "metainfo.py"
    if own.is_file():
        meta = parse_pose_metainfo(dict(from_file=str(own)))
    elif layout == "mpii":
        meta = parse_pose_metainfo(dict(from_file="configs/_base_/datasets/mpii.py"))
    elif num_keypoints == 17:
        meta = parse_pose_metainfo(dict(from_file="configs/_base_/datasets/coco.py"))
    else:
        raise ConfigError(f"{root}: {num_keypoints} keypoints and no metainfo.py (mmpose dataset_info with "
                          f"sigmas and flip pairs) next to the annotations")
    if meta["num_keypoints"] != num_keypoints:
        raise ConfigError(f"{root}: the metainfo names {meta['num_keypoints']} keypoints, the annotations "
                          f"hold {num_keypoints}")
    return meta


def _split(persons: list[PersonInstance], info: dict[str, Any], input_size: tuple[int, int], codec: Any
           ) -> KptSplit:
    persons = sorted(persons, key=lambda p: (str(p.img_path), p.ann_id))  # crop_persons keeps one image
    crops, centers, scales, kp_in = crop_persons(persons, input_size)
    k = int(info["num_keypoints"])
    heat, weights = [], []
    for kp, p in zip(kp_in, persons):
        enc = codec.encode(kp[None], (p.visible > 0).astype(np.float32)[None])
        heat.append(enc["heatmaps"])
        weights.append(enc["keypoint_weights"][0])
    mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
    images = torch.from_numpy(((crops.astype(np.float32) / 255.0 - mean) / std).transpose(0, 3, 1, 2).copy())
    wh = codec.heatmap_size
    used = {p.img_id for p in persons}
    return KptSplit(images, torch.from_numpy(np.asarray(heat, np.float32).reshape(-1, k, wh[1], wh[0])),
                    torch.from_numpy(np.asarray(weights, np.float32).reshape(-1, k)), centers, scales,
                    np.asarray([p.keypoints for p in persons], np.float32).reshape(-1, k, 2),
                    np.asarray([p.visible for p in persons], np.int64).reshape(-1, k),
                    np.asarray([np.nan if p.head_size is None else p.head_size for p in persons], np.float64),
                    np.asarray([float(np.max(p.bbox[2:] - p.bbox[:2])) for p in persons], np.float64),
                    [p.raw for p in persons], [im for i, im in info["images"].items() if i in used])


def read_split(layout: str, root: Path, split: str, num_keypoints: int | None, max_items: int | None
               ) -> tuple[list[PersonInstance], dict[str, Any]]:
    """The persons of one split of ``layout`` (``max_items``: the first persons only)."""
    if layout == "mpii":
        ann, imgs, heads = mpii_paths(root, split)
        persons, info = read_mpii(ann, imgs, heads if heads.is_file() and split != "train" else None,
                                  num_keypoints=num_keypoints or 16)
    else:
        ann, imgs = coco_paths(root, split)
        persons, info = read_coco_keypoints(ann, imgs, num_keypoints)
    return persons[:max_items] if max_items else persons, info


def build_data(data_cfg: dict[str, Any], source: str = "config", log: Callable = print) -> KptData:
    """Load (building the proxy set first if needed) the train/val persons as in-memory crops and targets.

    Raises:
        ConfigError: an unknown key or value (names ``data.<key>``); KeypointFormatError, FileNotFoundError:
            a malformed or missing annotation file (names the file and field).
    """
    check_keys("data", data_cfg, lambda **kw: None, extra=DATA_KEYS, source=source)
    layout = data_cfg.get("layout", "proxy")
    if layout not in LAYOUTS:
        raise ConfigError(f"{source}: 'data.layout' is {layout!r}; use one of {list(LAYOUTS)}")
    root = Path(data_cfg.get("root", "data/proxy_kpt"))
    size = check_image_size(data_cfg.get("input_size", (128, 96)), "data.input_size", source)
    h, w = (size, size) if isinstance(size, int) else size
    if h % HEATMAP_STRIDE or w % HEATMAP_STRIDE:
        raise ConfigError(f"{source}: 'data.input_size' {(h, w)} must be multiples of {HEATMAP_STRIDE} (the "
                          f"heatmap stride)")
    sigma = data_cfg.get("sigma", 2.0)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or sigma <= 0:
        raise ConfigError(f"{source}: 'data.sigma' must be a positive number, got {sigma!r}")
    max_train, max_val, k = (check_int(data_cfg.get(key), f"data.{key}", source, optional=True)
                             for key in ("max_train", "max_val", "num_keypoints"))
    if layout == "proxy":
        proxy = check_sub_dict(data_cfg.get("proxy"), "data.proxy", source)
        check_keys("data.proxy", proxy, build_proxy_kpt, source=source)
        build_proxy_kpt(root, **proxy)
    t0 = time.perf_counter()
    codec = build_codec((w, h), float(sigma))
    splits = {}
    for name, split in (("train", data_cfg.get("train_split", "train")), ("val", data_cfg.get("val_split", "val"))):
        persons, info = read_split(layout, root, split, k, max_train if name == "train" else max_val)
        if not persons:
            raise KeypointFormatError(f"{root}: split {split!r} holds no annotated person")
        k = int(info["num_keypoints"])
        splits[name] = _split(persons, info, (w, h), codec)
    meta = metainfo(layout, root, int(k))
    log(f"data: {layout} at {root}: {len(splits['train'])} train / {len(splits['val'])} val persons, {k} "
        f"keypoints, crops {h}x{w}, heatmaps {h // HEATMAP_STRIDE}x{w // HEATMAP_STRIDE} "
        f"({time.perf_counter() - t0:.1f}s)")
    return KptData(splits["train"], splits["val"], int(k), (w, h), tuple(codec.heatmap_size), float(sigma),
                   np.asarray(meta["sigmas"], np.float64), list(meta["flip_indices"]), root, layout)
