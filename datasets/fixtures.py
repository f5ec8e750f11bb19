"""Tiny datasets written in the exact real on-disk layouts (PASCAL VOC, Cityscapes), for tests.

They exercise :class:`densenas.datasets.segfolder.SegmentationFolder` and, later, mmseg's own
``PascalVOCDataset`` / ``CityscapesDataset`` with their default suffixes and prefixes. Images are smooth
random colour fields and labels are random rectangles, so content is meaningless but the formats are
exact: VOC labels are palette ('P') PNGs, Cityscapes labels are 8-bit grayscale PNGs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .proxy import voc_palette
from .segfolder import CITYSCAPES_LABELID_TO_TRAINID, labelids_to_trainids

__all__ = ["write_voc_fixture", "write_cityscapes_fixture"]


def smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random RGB image (HxWx3 uint8): an upsampled 4x4 colour grid plus a little noise."""
    grid = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    base = np.asarray(grid.resize((w, h), Image.Resampling.BILINEAR), dtype=np.int16)
    return np.clip(base + rng.integers(-12, 13, (h, w, 3)), 0, 255).astype(np.uint8)


def _rectangles(rng: np.random.Generator, h: int, w: int, values: np.ndarray, n: int,
                fill: int) -> np.ndarray:
    """An HxW uint8 map of ``fill`` with ``n`` random rectangles of values drawn from ``values``."""
    out = np.full((h, w), fill, np.uint8)
    for _ in range(n):
        y0, y1 = np.sort(rng.integers(0, h + 1, 2))
        x0, x1 = np.sort(rng.integers(0, w + 1, 2))
        out[y0:max(y1, y0 + 2), x0:max(x1, x0 + 2)] = rng.choice(values)
    return out


def write_voc_fixture(root: str | Path, n: int = 4, size: tuple[int, int] = (40, 48), num_classes: int = 3,
                      seed: int = 0) -> dict[str, Any]:
    """Write a tiny PASCAL VOC segmentation dataset.

    Writes ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNG, values in
    ``[0, num_classes)`` plus a one-pixel 255 ignore border around each image) and
    ``ImageSets/Segmentation/{train,val,trainval}.txt``; the first ``ceil(n / 2)`` ids are train.

    Args:
        root: output folder (created).
        n: number of images in all.
        size: ``(height, width)`` of every image.
        num_classes: number of classes including background 0.
        seed: random seed.

    Returns:
        ``{"root", "layout", "splits": {split: [ids]}, "num_classes", "size"}``.
    """
    if n < 1 or num_classes < 1:
        raise ValueError(f"need n >= 1 and num_classes >= 1, got n={n}, num_classes={num_classes}")
    root = Path(root)
    h, w = size
    rng = np.random.default_rng(seed)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    palette = voc_palette()
    ids = [f"2007_{i:06d}" for i in range(n)]
    for i in ids:
        Image.fromarray(smooth_image(rng, h, w)).save(root / "JPEGImages" / f"{i}.jpg", quality=95)
        label = _rectangles(rng, h, w, np.arange(num_classes), 4, 0)
        if num_classes > 1:  # make sure at least one foreground class is present
            label[h // 4:h // 2, w // 4:w // 2] = 1 + int(rng.integers(0, num_classes - 1))
        label[0, :] = label[-1, :] = label[:, 0] = label[:, -1] = 255
        im = Image.frombytes("P", (w, h), label.tobytes())
        im.putpalette(palette)
        im.save(root / "SegmentationClass" / f"{i}.png")
    n_train = (n + 1) // 2
    splits = {"train": ids[:n_train], "val": ids[n_train:], "trainval": ids}
    for split, names in splits.items():
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{x}\n" for x in names))
    return {"root": str(root), "layout": "voc", "splits": splits, "num_classes": num_classes, "size": (h, w)}


def write_cityscapes_fixture(root: str | Path, n: int = 3, size: tuple[int, int] = (32, 64), seed: int = 0,
                             city: str = "aachen", trainids: bool = True,
                             splits: tuple[str, ...] = ("train", "val")) -> dict[str, Any]:
    """Write a tiny Cityscapes dataset (``leftImg8bit`` + ``gtFine``), ``n`` images per split.

    Every image gets ``<name>_gtFine_labelIds.png`` (the 34 Cityscapes labelIds, including ignored ids
    such as 0 "unlabeled" and 4 "static"); with ``trainids=True`` also ``<name>_gtFine_labelTrainIds.png``
    derived from it with the standard table, as cityscapesScripts' ``createTrainIdLabelImgs`` does.

    Args:
        root: output folder (created).
        n: images per split.
        size: ``(height, width)`` of every image.
        seed: random seed.
        city: city folder name.
        trainids: also write the ``_gtFine_labelTrainIds.png`` files.
        splits: split folders to write.

    Returns:
        ``{"root", "layout", "splits": {split: [names]}, "num_classes": 19, "size"}``.
    """
    if n < 1:
        raise ValueError(f"need n >= 1, got {n}")
    root = Path(root)
    h, w = size
    rng = np.random.default_rng(seed)
    label_ids = np.array(sorted(CITYSCAPES_LABELID_TO_TRAINID), dtype=np.uint8)
    names: dict[str, list[str]] = {}
    for s, split in enumerate(splits):
        img_dir = root / "leftImg8bit" / split / city
        gt_dir = root / "gtFine" / split / city
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        names[split] = []
        for k in range(n):
            name = f"{city}_{100 * s + k:06d}_{19 + k:06d}"  # unique across splits
            Image.fromarray(smooth_image(rng, h, w)).save(img_dir / f"{name}_leftImg8bit.png")
            ids = _rectangles(rng, h, w, label_ids, 5, 7)  # road (labelId 7) everywhere, then rectangles
            ids[-2:, :] = 1  # ego vehicle at the bottom, as in real frames (ignored)
            Image.fromarray(ids).save(gt_dir / f"{name}_gtFine_labelIds.png")
            if trainids:
                Image.fromarray(labelids_to_trainids(ids)).save(
                    gt_dir / f"{name}_gtFine_labelTrainIds.png")
            names[split].append(name)
    return {"root": str(root), "layout": "cityscapes", "splits": names, "num_classes": 19, "size": (h, w)}
