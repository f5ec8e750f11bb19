"""Tiny object-detection datasets written in the exact real on-disk layouts (COCO json, PASCAL VOC xml).

They exercise :class:`densenas.datasets.detfolder.DetectionFolder` and mmdet's own ``CocoDataset`` /
``VOCDataset``. Images are smooth random colour fields with each object painted as a flat-coloured
rectangle over its box, so content is simple but the formats are exact:

- COCO: ``annotations/instances_{train,val}.json`` with real COCO category ids and names (they have gaps:
  person 1, car 3, stop sign 13, dog 18, bottle 44), float ``[x, y, w, h]`` boxes, polygon segmentations,
  and one ``iscrowd`` object with an uncompressed RLE in the first image; images in ``{train,val}/``.
- VOC2012-like: ``JPEGImages/``, ``Annotations/*.xml`` (``<size>``, ``<object><name><difficult><bndbox>``,
  1-based inclusive pixel coordinates) and ``ImageSets/Main/{train,val,trainval}.txt``; the last image gets
  one extra ``difficult`` object.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .detfolder import VOC_DET_CLASSES
from .fixtures import smooth_image

__all__ = ["write_coco_fixture", "write_voc_det_fixture", "COCO_FIXTURE_CATEGORIES"]

COCO_FIXTURE_CATEGORIES: tuple[tuple[int, str], ...] = (
    (1, "person"), (3, "car"), (13, "stop sign"), (18, "dog"), (44, "bottle"))


_Box = tuple[int, int, int, int, int]  # (class, x0, y0, x1, y1)


def _objects(rng: np.random.Generator, h: int, w: int, num_classes: int, k: int) -> list[_Box]:
    """``k`` random ``(class, x0, y0, x1, y1)`` boxes (integer pixels, ``x1``/``y1`` exclusive, sides >= 4)."""
    out = []
    for _ in range(k):
        bw, bh = int(rng.integers(4, max(5, w // 2))), int(rng.integers(4, max(5, h // 2)))
        x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        out.append((int(rng.integers(0, num_classes)), x0, y0, x0 + bw, y0 + bh))
    return out


def _paint(rng: np.random.Generator, h: int, w: int, objects: list[_Box]) -> np.ndarray:
    """A background image with each object's box filled with its class colour."""
    img = smooth_image(rng, h, w)
    colours = np.array([[220, 40, 40], [40, 200, 60], [40, 60, 220], [230, 200, 30], [200, 40, 200]], np.uint8)
    for c, x0, y0, x1, y1 in objects:
        img[y0:y1, x0:x1] = colours[c % len(colours)]
    return img


def _uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's uncompressed RLE of a bool mask (column-major run lengths, starting with zeros)."""
    flat = mask.astype(np.uint8).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    if flat[0]:
        runs = [0] + runs
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(r) for r in runs]}


def write_coco_fixture(root: str | Path, n: int = 4, size: tuple[int, int] = (48, 64), num_classes: int = 3,
                       seed: int = 0) -> dict[str, Any]:
    """Write a tiny COCO detection dataset; the first ``ceil(n / 2)`` images are train, the rest val.

    Args:
        root: output folder (created).
        n: number of images in all.
        size: ``(height, width)`` of every image.
        num_classes: number of categories (at most ``len(COCO_FIXTURE_CATEGORIES)``).
        seed: random seed.

    Returns:
        ``{"root", "layout", "splits": {split: [file names]}, "classes", "category_ids", "size"}``.
    """
    if n < 1 or not 1 <= num_classes <= len(COCO_FIXTURE_CATEGORIES):
        raise ValueError(f"need n >= 1 and 1 <= num_classes <= {len(COCO_FIXTURE_CATEGORIES)}, "
                         f"got n={n}, num_classes={num_classes}")
    root = Path(root)
    h, w = size
    rng = np.random.default_rng(seed)
    cats = COCO_FIXTURE_CATEGORIES[:num_classes]
    n_train = (n + 1) // 2
    splits: dict[str, list[str]] = {"train": [], "val": []}
    coco = {s: {"info": {"description": f"densenas COCO fixture ({s})"}, "licenses": [], "images": [],
                "annotations": [], "categories": [{"id": i, "name": nm, "supercategory": "thing"} for i, nm in cats]}
            for s in splits}
    ann_id = 100
    for k in range(n):
        split = "train" if k < n_train else "val"
        img_id, name = k + 1, f"{k + 1:012d}.jpg"
        objects = _objects(rng, h, w, num_classes, int(rng.integers(1, 4)))
        crowd = k == 0
        if crowd:
            objects.append((0, 0, h - 6, w // 3, h))  # a crowd strip along the bottom-left
        (root / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(_paint(rng, h, w, objects)).save(root / split / name, quality=95)
        coco[split]["images"].append({"id": img_id, "file_name": name, "width": w, "height": h})
        for j, (c, x0, y0, x1, y1) in enumerate(objects):
            is_crowd = crowd and j == len(objects) - 1
            # float boxes as in real COCO: shrink by a fraction that stays inside the painted pixels
            x, y, bw, bh = x0 + 0.25, y0 + 0.5, x1 - x0 - 0.5, y1 - y0 - 0.75
            if is_crowd:
                mask = np.zeros((h, w), bool)
                mask[y0:y1, x0:x1] = True
                seg: Any = _uncompressed_rle(mask)
                x, y, bw, bh = float(x0), float(y0), float(x1 - x0), float(y1 - y0)
            else:
                seg = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
            ann_id += 1
            coco[split]["annotations"].append({
                "id": ann_id, "image_id": img_id, "category_id": cats[c][0], "bbox": [x, y, bw, bh],
                "area": float(bw * bh), "iscrowd": int(is_crowd), "segmentation": seg})
        splits[split].append(name)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, data in coco.items():
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data, indent=1))
    return {"root": str(root), "layout": "coco", "splits": splits, "classes": tuple(nm for _, nm in cats),
            "category_ids": tuple(i for i, _ in cats), "size": (h, w)}


def _sub(parent: ET.Element, tag: str, text: Any = None) -> ET.Element:
    node = ET.SubElement(parent, tag)
    if text is not None:
        node.text = str(text)
    return node


def write_voc_det_fixture(root: str | Path, n: int = 4, size: tuple[int, int] = (48, 64), num_classes: int = 3,
                          seed: int = 0) -> dict[str, Any]:
    """Write a tiny VOC2012-like detection dataset; the first ``ceil(n / 2)`` ids are train, the rest val.

    Class names are the first ``num_classes`` VOC classes (``aeroplane``, ``bicycle``, ...). Box
    ``(x0, y0, x1, y1)`` (0-based, exclusive end) is written as ``<xmin>x0+1</xmin> ... <xmax>x1</xmax>``,
    VOC's 1-based inclusive pixel coordinates.

    Args:
        root: output folder (created).
        n: number of images in all.
        size: ``(height, width)`` of every image.
        num_classes: number of classes (at most 20).
        seed: random seed.

    Returns:
        ``{"root", "layout", "splits": {split: [ids]}, "classes", "size"}``.
    """
    if n < 1 or not 1 <= num_classes <= len(VOC_DET_CLASSES):
        raise ValueError(f"need n >= 1 and 1 <= num_classes <= 20, got n={n}, num_classes={num_classes}")
    root = Path(root)
    h, w = size
    rng = np.random.default_rng(seed)
    classes = VOC_DET_CLASSES[:num_classes]
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = [f"2012_{k:06d}" for k in range(n)]
    for k, sid in enumerate(ids):
        objects = _objects(rng, h, w, num_classes, int(rng.integers(1, 4)))
        difficult = [False] * len(objects)
        if k == n - 1:
            objects.append(_objects(rng, h, w, num_classes, 1)[0])
            difficult.append(True)
        Image.fromarray(_paint(rng, h, w, objects)).save(root / "JPEGImages" / f"{sid}.jpg", quality=95)
        ann = ET.Element("annotation")
        _sub(ann, "folder", "VOC2012")
        _sub(ann, "filename", f"{sid}.jpg")
        src = _sub(ann, "source")
        _sub(src, "database", "The VOC2012 Database")
        sz = _sub(ann, "size")
        for tag, v in (("width", w), ("height", h), ("depth", 3)):
            _sub(sz, tag, v)
        _sub(ann, "segmented", 0)
        for (c, x0, y0, x1, y1), diff in zip(objects, difficult):
            obj = _sub(ann, "object")
            _sub(obj, "name", classes[c])
            _sub(obj, "pose", "Unspecified")
            _sub(obj, "truncated", 0)
            _sub(obj, "difficult", int(diff))
            box = _sub(obj, "bndbox")
            for tag, v in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
                _sub(box, tag, v)
        ET.indent(ann)
        ET.ElementTree(ann).write(root / "Annotations" / f"{sid}.xml", encoding="unicode")
    n_train = (n + 1) // 2
    splits = {"train": ids[:n_train], "val": ids[n_train:], "trainval": ids}
    for split, names in splits.items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{x}\n" for x in names))
    return {"root": str(root), "layout": "voc", "splits": splits, "classes": classes, "size": (h, w)}
