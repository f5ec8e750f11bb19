"""Keypoint data for a search: top-down person crops in memory, heatmap targets from mmpose's codec.

The proxy keypoint set (:mod:`densenas.datasets.kpt_proxy`, COCO layout), COCO keypoints and MPII (readers in
:mod:`densenas.datasets.cocokpt`) are cut into person crops at ``input_size`` as mmpose's top-down pipeline
does (``GetBBoxCenterScale`` + ``TopdownAffine``, no augmentation), ImageNet-normalised, with heatmap targets
and target weights from one of mmpose's heatmap codecs at stride 4, and what the metrics need (keypoints in
image coordinates, visibility, box, area, head size, ids, the COCO annotations).

The codec (``data.codec``, one of :data:`CODECS`; ``msra`` when the section names none, ``udp`` in the shipped
search configs and in exports no keypoint search scored, :data:`DEFAULT_CODEC`) encodes the targets and decodes
the predictions, in the search (:mod:`.metrics`) and in the exported mmpose config (:mod:`.export`) alike:

* ``msra``: ``MSRAHeatmap`` (Xiao et al., "Simple Baselines for Human Pose Estimation and Tracking", ECCV
  2018): a Gaussian at the keypoint rounded to the heatmap grid, decoded by arg-max plus a quarter-pixel
  step towards the higher neighbour. On the ground truth's own heatmaps the step is zero, so a keypoint is
  only known to the heatmap cell (4 input pixels): at 128x96 crops of the proxy set this caps PCKh@0.1 at
  0.370 (:mod:`.ceiling`).
* ``dark``: ``MSRAHeatmap(unbiased=True)``, DARK (Zhang et al., "Distribution-Aware Coordinate Representation
  for Human Pose Estimation", CVPR 2020): a Gaussian at the exact sub-pixel position, decoded by a
  second-order Taylor step at the maximum of the heatmap modulated by a Gaussian blur of kernel
  :func:`blur_kernel_size` (``sigma``).
* ``udp``: ``UDPHeatmap``, UDP (Huang et al., "The Devil Is in the Details: Delving into Unbiased Data
  Processing for Human Pose Estimation", CVPR 2020): crops and heatmaps in unit-length pixel coordinates
  (``TopdownAffine(use_udp=True)``, heatmap = input scaled by ``(heatmap - 1) / (input - 1)``), so that a
  horizontal flip is exact, and the DARK step in those coordinates.
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
from densenas.datasets.cocokpt import (KeypointFormatError, PersonInstance, coco_paths, crop_persons,
                                       fix_aspect_ratio, mpii_paths, read_coco_keypoints, read_mpii)
from densenas.datasets.kpt_proxy import build_proxy_kpt

DATA_KEYS = {"layout", "root", "train_split", "val_split", "input_size", "sigma", "max_train", "max_val",
             "num_keypoints", "proxy", "codec"}
LAYOUTS = ("proxy", "coco", "mpii")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HEATMAP_STRIDE = 4
CODECS = ("msra", "dark", "udp")
DEFAULT_CODEC = "udp"
"""The codec of the shipped keypoint search configs and of exports no keypoint search scored: the best PCKh@0.1
of the search's candidates, flip-tested (10 trainings of ``configs/search/keypoints_proxy.py``'s proxy trainer,
same archs and seeds: PCKh@0.1 0.0180 with ``udp``, 0.0138 ``dark``, 0.0120 ``msra``; 0.0093 ``msra`` without
the flip test, the search's earlier scoring)."""
DATA_DEFAULT_CODEC = "msra"
"""What a data section without ``codec`` means: SimpleBaseline's codec, as before the option existed (a search
config written then keeps its targets, and its export keeps matching it)."""


@dataclass
class KptSplit:
    """One split: normalised crops, targets, and the ground truth of the metrics.

    Attributes:
        images: ``N x 3 x h x w`` float32, ImageNet-normalised.
        heatmaps: ``N x K x h/4 x w/4`` float32 targets of the codec (``data.codec``); weights: ``N x K``
            target weights.
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
    codec: str = DATA_DEFAULT_CODEC  # a key of CODECS


def check_codec(codec: Any, what: str = "data.codec") -> str:
    """``codec`` if it names one of :data:`CODECS`.

    Raises:
        ValueError: any other value (the message names ``what`` and the choices).
    """
    if codec not in CODECS:
        raise ValueError(f"{what}={codec!r}: use one of {list(CODECS)}")
    return str(codec)


def blur_kernel_size(sigma: float) -> int:
    """The Gaussian blur kernel of DARK's heatmap modulation for targets of ``sigma`` (odd): mmpose's formula
    ``sigma = 0.3 * ((ks - 1) * 0.5 - 1) + 0.8`` solved for ``ks`` (11 for sigma 2, 17 for sigma 3, as mmpose's
    DARK and UDP configs)."""
    return 2 * max(1, round((float(sigma) - 0.8) / 0.3 + 1)) + 1


def uses_udp(codec: str) -> bool:
    """Whether the crops are cut as UDP's (``TopdownAffine(use_udp=True)``)."""
    return check_codec(codec) == "udp"


def flip_shift(codec: str) -> bool:
    """``shift_heatmap`` of the flip test for ``codec``, as mmpose's configs set it: ``True`` for ``msra`` and
    ``dark`` (a flipped heatmap lands 0.75 cells left of the unflipped one in their coordinates; the one-cell
    shift leaves 0.25), ``False`` for ``udp`` (its flip is exact)."""
    return not uses_udp(codec)


def codec_cfg(input_size: tuple[int, int], sigma: float, codec: str = DATA_DEFAULT_CODEC) -> dict[str, Any]:
    """The mmpose codec config of ``codec`` (module docstring) at stride 4 for ``input_size = (w, h)``.

    Raises:
        ValueError: an unknown ``codec`` (names it).
    """
    w, h = input_size
    base = dict(input_size=(w, h), heatmap_size=(w // HEATMAP_STRIDE, h // HEATMAP_STRIDE), sigma=float(sigma))
    codec = check_codec(codec)
    if codec == "msra":  # SimpleBaseline (Xiao et al., ECCV 2018)
        return dict(type="MSRAHeatmap", **base)
    if codec == "dark":  # DARK (Zhang et al., CVPR 2020)
        return dict(type="MSRAHeatmap", **base, unbiased=True, blur_kernel_size=blur_kernel_size(sigma))
    # UDP (Huang et al., CVPR 2020)
    return dict(type="UDPHeatmap", **base, heatmap_type="gaussian", blur_kernel_size=blur_kernel_size(sigma))


def build_codec(input_size: tuple[int, int], sigma: float, codec: str = DATA_DEFAULT_CODEC) -> Any:
    """mmpose's codec object of :func:`codec_cfg`, built by mmpose's ``KEYPOINT_CODECS`` registry."""
    from mmpose.registry import KEYPOINT_CODECS

    return KEYPOINT_CODECS.build(codec_cfg(input_size, sigma, codec))


def crop_persons_udp(persons: list[PersonInstance], input_size: tuple[int, int]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`densenas.datasets.cocokpt.crop_persons` with UDP's warp (Huang et al., CVPR 2020; mmpose's
    ``TopdownAffine(use_udp=True)``: the box maps onto the pixel centres ``0 .. w - 1``, not ``-0.5 .. w - 0.5``).

    Returns:
        ``(images N x h x w x 3 uint8 RGB, centers N x 2, scales N x 2 (aspect fixed), keypoints N x K x 2
        in crop coordinates)``.
    """
    import cv2
    from mmpose.structures.bbox import get_udp_warp_matrix
    from PIL import Image

    w, h = int(input_size[0]), int(input_size[1])
    image, path = None, None
    imgs, centers, scales, kps = [], [], [], []
    for p in persons:
        if p.img_path != path:
            if not p.img_path.is_file():
                raise FileNotFoundError(f"image {p.img_path} (annotation id {p.ann_id}) not found")
            image, path = np.asarray(Image.open(p.img_path).convert("RGB")), p.img_path
        scale = fix_aspect_ratio(p.scale, w / h)
        mat = get_udp_warp_matrix(np.asarray(p.center, np.float32), scale, 0.0, output_size=(w, h))
        imgs.append(cv2.warpAffine(image, mat, (w, h), flags=cv2.INTER_LINEAR))
        kps.append(cv2.transform(p.keypoints[None].astype(np.float32), mat)[0])
        centers.append(p.center)
        scales.append(scale)
    k = persons[0].keypoints.shape[0] if persons else 0
    return (np.stack(imgs) if imgs else np.zeros((0, h, w, 3), np.uint8),
            np.asarray(centers, np.float32).reshape(-1, 2), np.asarray(scales, np.float32).reshape(-1, 2),
            np.asarray(kps, np.float32).reshape(-1, k, 2))


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


def _split(persons: list[PersonInstance], info: dict[str, Any], input_size: tuple[int, int], codec: Any,
           udp: bool = False) -> KptSplit:
    persons = sorted(persons, key=lambda p: (str(p.img_path), p.ann_id))  # crop_persons keeps one image
    crops, centers, scales, kp_in = (crop_persons_udp if udp else crop_persons)(persons, input_size)
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
    try:
        codec_name = check_codec(data_cfg.get("codec", DATA_DEFAULT_CODEC))
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None
    max_train, max_val, k = (check_int(data_cfg.get(key), f"data.{key}", source, optional=True)
                             for key in ("max_train", "max_val", "num_keypoints"))
    if layout == "proxy":
        proxy = check_sub_dict(data_cfg.get("proxy"), "data.proxy", source)
        check_keys("data.proxy", proxy, build_proxy_kpt, source=source)
        build_proxy_kpt(root, **proxy)
    t0 = time.perf_counter()
    codec = build_codec((w, h), float(sigma), codec_name)
    splits = {}
    for name, split in (("train", data_cfg.get("train_split", "train")), ("val", data_cfg.get("val_split", "val"))):
        persons, info = read_split(layout, root, split, k, max_train if name == "train" else max_val)
        if not persons:
            raise KeypointFormatError(f"{root}: split {split!r} holds no annotated person")
        k = int(info["num_keypoints"])
        splits[name] = _split(persons, info, (w, h), codec, uses_udp(codec_name))
    meta = metainfo(layout, root, int(k))
    log(f"data: {layout} at {root}: {len(splits['train'])} train / {len(splits['val'])} val persons, {k} "
        f"keypoints, crops {h}x{w}, heatmaps {h // HEATMAP_STRIDE}x{w // HEATMAP_STRIDE}, codec {codec_name} "
        f"({time.perf_counter() - t0:.1f}s)")
    return KptData(splits["train"], splits["val"], int(k), (w, h), tuple(codec.heatmap_size), float(sigma),
                   np.asarray(meta["sigmas"], np.float64), list(meta["flip_indices"]), root, layout, codec_name)
