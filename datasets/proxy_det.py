"""A deterministic proxy object-detection dataset made from real photographs, in COCO layout.

The detection twin of :mod:`densenas.datasets.proxy`: no detection benchmark can be downloaded here, so the
NAS-FCOS / NAS-FPN searches score candidates on scenes composed from real images shipped inside installed
wheels. Each class is one source photograph (its texture and colour define the class, e.g. ``coffee``,
``cat``); each image is a background mosaic cut from *other* photographs with 1-4 objects pasted on top.
An object is a crop of its class photograph cut out by an ellipse, star-convex polygon or rectangle mask.
Object sizes are drawn from three bins laid on COCO's area thresholds (small < 32², medium, large > 96²)
so that ``bbox_mAP_s/m/l`` are all measured once ``size >= 116`` (below that no object can be large).

Objects are pasted largest first; a candidate that would leave an earlier object less than
``MIN_VISIBILITY`` of its pixels visible is dropped (never pasted), so every visible object is
annotated. Each annotation is exact because we drew it: ``segmentation`` is the RLE of the *visible*
mask after occlusion, ``area`` its pixel count and ``bbox`` its exact extent ``[x, y, w, h]``.

Layout (the real COCO one, readable by :class:`densenas.datasets.detfolder.DetectionFolder` and by mmdet's
``CocoDataset``)::

    root/train/<name>.jpg, root/val/<name>.jpg
    root/annotations/instances_{train,val}.json
    root/densenas_proxy_coco.json      # manifest: params, classes, sources, per-split size counts

Example:
    >>> build_proxy_coco("/tmp/proxy_coco")                    # doctest: +SKIP
    ('coffee', 'cat', 'tissue', 'galaxy')
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from .proxy import ID_PREFIX, background_mosaic, prepare_source, random_crop, select_sources, shape_mask

__all__ = ["build_proxy_coco", "coco_classes", "proxy_det_scenes", "ProxyScene", "area_bin",
           "DET_MANIFEST_NAME", "MIN_VISIBILITY", "COCO_SMALL_AREA", "COCO_LARGE_AREA"]

DET_MANIFEST_NAME = "densenas_proxy_coco.json"
FORMAT_VERSION = 1
MIN_VISIBILITY = 0.5          # fraction of an object's own mask that must stay visible
COCO_SMALL_AREA = 32 ** 2     # pycocotools' areaRng boundaries
COCO_LARGE_AREA = 96 ** 2
_MIN_SIDE = 3                 # smallest visible box side in pixels
_MAX_TRIES = 12               # candidate placements per object before giving up on it


@dataclass(frozen=True)
class ProxyScene:
    """One composed image and its exact ground truth.

    Attributes:
        image: HxWx3 uint8 composite (before JPEG compression).
        background: HxWx3 uint8 mosaic the objects were pasted on.
        instances: HxW int16 map; 0 is background, ``k`` the k-th object (1-based) visible there.
        labels: 0-based class index of each object, in paste order.
        areas: each object's full (unoccluded) mask area in pixels.
    """

    image: np.ndarray
    background: np.ndarray
    instances: np.ndarray
    labels: tuple[int, ...]
    areas: tuple[int, ...]


def area_bin(area: float) -> str:
    """COCO's size category of an object with mask area ``area``: ``small``, ``medium`` or ``large``.

    pycocotools' ranges are closed, so an area of exactly 32² or 96² also counts in the lower range.
    """
    return "small" if area < COCO_SMALL_AREA else "medium" if area < COCO_LARGE_AREA else "large"


def _area_ranges(size: int) -> dict[str, tuple[float, float]]:
    """Target mask areas per size bin that fit a ``size`` x ``size`` image (bins that cannot fit are left out)."""
    full = float(size * size)
    bins = {"small": (12.0 ** 2, 26.0 ** 2), "medium": (40.0 ** 2, min(84.0 ** 2, 0.45 * full)),
            "large": (1.15 * COCO_LARGE_AREA, 0.8 * full)}
    return {k: (lo, hi) for k, (lo, hi) in bins.items() if lo < hi}


def _object_mask(rng: np.random.Generator, size: int, area: float) -> np.ndarray:
    """An ellipse, star-convex polygon or rectangle of roughly ``area`` pixels, fully inside the image."""
    kind = int(rng.integers(0, 3))
    aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))  # height / width
    fill = (np.pi, np.pi * 0.62, 4.0)[kind]                        # area of a unit-radius shape
    rw = np.sqrt(area / (fill * aspect))
    rh = min(aspect * rw, size / 2 - 1)
    rw = min(rw, size / 2 - 1)
    cx, cy = rng.uniform(rw, size - rw), rng.uniform(rh, size - rh)
    return shape_mask(rng, size, size, cx, cy, rw, rh, kind, inclusive=False)


def _extent(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of a non-empty mask, ``x1``/``y1`` exclusive."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _visible_ok(mask: np.ndarray, own: int) -> bool:
    """Whether a visible mask keeps enough of its object: ``MIN_VISIBILITY`` of its ``own`` pixels, its COCO
    size category, and a box side of at least ``_MIN_SIDE`` pixels."""
    area = int(mask.sum())
    if area == 0 or area < MIN_VISIBILITY * own or area_bin(area) != area_bin(own):
        return False
    x0, y0, x1, y1 = _extent(mask)
    return min(x1 - x0, y1 - y0) >= _MIN_SIDE


def _scene(rng: np.random.Generator, fgs: list[Image.Image], bgs: list[Image.Image], size: int) -> ProxyScene:
    """Compose one image: a background mosaic and 1-4 textured objects, largest pasted first."""
    ranges = _area_ranges(size)
    names = list(ranges)
    weights = np.array([{"small": 0.4, "medium": 0.4, "large": 0.25}[k] for k in names])
    while True:
        background = background_mosaic(rng, bgs, size)
        n = int(rng.integers(1, 5))
        bins = [names[i] for i in rng.choice(len(names), size=n, p=weights / weights.sum())]
        if bins.count("large") > 1:  # at most one large object per image
            bins = ["large"] + [b for b in bins if b != "large"]
        areas = sorted((float(rng.uniform(*ranges[b])) for b in bins), reverse=True)
        image, instances = background.copy(), np.zeros((size, size), np.int16)
        own: list[int] = []
        labels: list[int] = []
        for area in areas:
            cls = int(rng.integers(0, len(fgs)))
            for _ in range(_MAX_TRIES):
                mask = _object_mask(rng, size, area)
                if not mask.any():
                    continue
                trial = np.where(mask, len(own) + 1, instances).astype(np.int16)
                if all(_visible_ok(trial == k + 1, own[k]) for k in range(len(own))) and \
                        _visible_ok(mask, int(mask.sum())):
                    break
            else:
                continue  # no placement keeps the others visible: drop this object
            x0, y0, x1, y1 = _extent(mask)
            patch = random_crop(rng, fgs[cls], y1 - y0, x1 - x0)
            sub = mask[y0:y1, x0:x1]
            image[y0:y1, x0:x1][sub] = patch[sub]
            instances, own = trial, own + [int(mask.sum())]
            labels.append(cls)
        if labels:
            return ProxyScene(image, background, instances, tuple(labels), tuple(own))


def proxy_det_scenes(num_train: int = 64, num_val: int = 24, size: int = 128, num_classes: int = 4,
                     seed: int = 0) -> Iterator[tuple[str, str, ProxyScene]]:
    """Yield ``(split, file_name, scene)`` for every image :func:`build_proxy_coco` writes, in order.

    Same arguments, same scenes: ``build_proxy_coco`` writes exactly these (images as JPEG).

    Raises:
        ValueError: invalid counts/size or more classes than available source images.
    """
    if num_train < 0 or num_val < 0 or num_train + num_val == 0:
        raise ValueError(f"need num_train >= 0, num_val >= 0 and some images, got {num_train}, {num_val}")
    if size < 32:
        raise ValueError(f"size must be >= 32 pixels, got {size}")
    chosen, bg_keys, loaded = select_sources(num_classes)
    fgs = [prepare_source(loaded[k], k, size) for _, k in chosen]
    bgs = [prepare_source(loaded[k], k, size) for k in bg_keys]
    rng = np.random.default_rng(seed)
    for i in range(num_train + num_val):
        yield ("train" if i < num_train else "val"), f"{ID_PREFIX}{i:06d}.jpg", _scene(rng, fgs, bgs, size)


def _rle(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None


def _complete(root: Path, manifest: dict[str, Any]) -> bool:
    """Whether both annotation files exist, hold the manifest's image counts, and every image exists."""
    splits = manifest.get("splits")
    for split in ("train", "val"):
        coco = _read_json(root / "annotations" / f"instances_{split}.json")
        images = coco.get("images") if isinstance(coco, dict) else None
        if not isinstance(images, list) or not isinstance(splits, dict) or len(images) != splits.get(split):
            return False
        if not all(isinstance(im, dict) and isinstance(im.get("file_name"), str) and
                   (root / split / im["file_name"]).is_file() for im in images):
            return False
    return True


def coco_classes(root: str | Path, split: str = "train") -> tuple[str, ...]:
    """Class names of a COCO-layout dataset, ordered by category id (mmdet's label order).

    Args:
        root: dataset root holding ``annotations/instances_<split>.json``.
        split: which annotation file to read.

    Raises:
        FileNotFoundError: the annotation file is missing.
        ValueError: it is not JSON or has no valid ``categories`` list.
    """
    path = Path(root) / "annotations" / f"instances_{split}.json"
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file {path} not found")
    try:
        cats = json.loads(path.read_text()).get("categories")
    except (ValueError, AttributeError) as err:
        raise ValueError(f"{path}: malformed COCO JSON ({err})") from err
    if not isinstance(cats, list) or not cats or not all(isinstance(c, dict) and "id" in c and "name" in c
                                                         for c in cats):
        raise ValueError(f"{path}: field 'categories' must be a non-empty list of {{'id', 'name'}} objects")
    return tuple(str(c["name"]) for c in sorted(cats, key=lambda c: c["id"]))


def build_proxy_coco(root: str | Path, num_train: int = 64, num_val: int = 24, size: int = 128,
                     num_classes: int = 4, seed: int = 0, log: Callable[[str], Any] | None = print,
                     force: bool = False) -> tuple[str, ...]:
    """Build (or reuse) the proxy detection dataset under ``root`` in COCO layout.

    Idempotent: when ``root/densenas_proxy_coco.json`` records the same parameters and sources and all
    listed files exist, nothing is written. Otherwise earlier proxy files are removed and everything is
    regenerated; the same arguments give byte-identical images and annotation files.

    Args:
        root: output folder (created if missing).
        num_train: number of training images.
        num_val: number of validation images.
        size: side of the square images in pixels (>= 32; large objects need >= 116).
        num_classes: number of object classes (category ids ``1..num_classes``).
        seed: random seed for the scene composition.
        log: where progress lines go (``None`` for silence).
        force: regenerate even when the manifest matches.

    Returns:
        The class names, in category-id (= mmdet label) order.

    Raises:
        ValueError: invalid sizes or more classes than available source images.
        RuntimeError: no background source image could be loaded.
    """
    say = log or (lambda _msg: None)
    root = Path(root)
    chosen, bg_keys, _ = select_sources(num_classes)
    classes = tuple(n for n, _ in chosen)
    params = {"num_train": num_train, "num_val": num_val, "size": size, "num_classes": num_classes,
              "seed": seed, "min_visibility": MIN_VISIBILITY}
    manifest: dict[str, Any] = {
        "format": "densenas_proxy_coco", "version": FORMAT_VERSION, "params": params, "classes": list(classes),
        "class_sources": {n: k for n, k in chosen}, "background_sources": bg_keys,
        "splits": {"train": num_train, "val": num_val}, "layout": "coco",
    }
    old = _read_json(root / DET_MANIFEST_NAME)
    if not force and isinstance(old, dict) and all(old.get(k) == manifest[k] for k in (
            "format", "version", "params", "class_sources", "background_sources")) and _complete(root, old):
        say(f"proxy COCO set at {root} is up to date ({num_train} train / {num_val} val images)")
        return tuple(old["classes"])

    say(f"building proxy COCO set at {root}: {num_train} train / {num_val} val images of {size}px, "
        f"classes {list(classes)}")
    (root / DET_MANIFEST_NAME).unlink(missing_ok=True)  # written last: a crash leaves no valid manifest
    for split in ("train", "val"):
        (root / split).mkdir(parents=True, exist_ok=True)
        for stale in (root / split).glob(f"{ID_PREFIX}*.jpg"):
            stale.unlink()
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [{"id": c + 1, "name": n, "supercategory": "texture"} for c, n in enumerate(classes)]
    coco = {s: {"info": {"description": f"densenas proxy detection set ({s})", "version": str(FORMAT_VERSION)},
                "licenses": [], "images": [], "annotations": [], "categories": categories}
            for s in ("train", "val")}
    counts = {s: {"objects": 0, "small": 0, "medium": 0, "large": 0} for s in ("train", "val")}
    ann_id = 0
    for img_id, (split, name, scene) in enumerate(
            proxy_det_scenes(num_train, num_val, size, num_classes, seed), start=1):
        Image.fromarray(scene.image).save(root / split / name, format="JPEG", quality=92)
        coco[split]["images"].append({"id": img_id, "file_name": name, "width": size, "height": size})
        for k, cls in enumerate(scene.labels):
            mask = scene.instances == k + 1
            x0, y0, x1, y1 = _extent(mask)
            area = int(mask.sum())
            ann_id += 1
            coco[split]["annotations"].append({
                "id": ann_id, "image_id": img_id, "category_id": cls + 1,
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "area": area, "iscrowd": 0,
                "segmentation": _rle(mask)})
            counts[split]["objects"] += 1
            counts[split][area_bin(area)] += 1
    for split in ("train", "val"):
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco[split]) + "\n")
    manifest["counts"] = counts
    (root / DET_MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    say(f"proxy COCO set written: {counts}")
    return classes
