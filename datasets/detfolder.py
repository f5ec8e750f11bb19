"""Readers for object-detection datasets in their real on-disk layouts (COCO json, PASCAL VOC xml).

:class:`DetectionFolder` validates a split up front and then serves ``(image HxWx3 uint8, boxes float32
Nx4 xyxy, labels int64 N)``; ``load_arrays`` loads a split resized into memory, ImageNet-normalised like
:class:`densenas.datasets.segfolder.SegmentationFolder`, for the search's in-memory proxy training.
:func:`mmdet_dataset_cfg` gives the matching mmdet ``CocoDataset`` / ``VOCDataset`` config so exported
fine-tune configs read the same files with mmdet's own readers. Layouts::

    COCO: root/annotations/instances_<split>.json    (images, annotations with bbox [x, y, w, h], categories)
          root/<split>/<file_name>                   (e.g. split "train2017" for the real COCO 2017)
    VOC:  root/JPEGImages/<id>.jpg
          root/Annotations/<id>.xml                  (<size>, <object><name>, <difficult>, <bndbox>)
          root/ImageSets/Main/<split>.txt            (one id per line)

Boxes follow mmdet's readers exactly: COCO ``[x, y, x + w, y + h]``; VOC ``[xmin, ymin, xmax, ymax] - 1``
(mmdet's legacy VOC convention). Labels are 0-based indices into ``classes``; COCO classes are ordered by
category id. Crowd (``iscrowd``) and ``difficult`` objects are kept apart as ignored boxes, and COCO boxes
under 1 pixel wide or high are dropped, as mmdet does. Missing files raise ``FileNotFoundError`` and
malformed content ``ValueError``, each naming the file and the field at fault.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .segfolder import IMAGENET_MEAN, IMAGENET_STD, VOC_CLASSES

__all__ = ["DetectionFolder", "DetRecord", "VOC_DET_CLASSES", "mmdet_dataset_cfg"]

VOC_DET_CLASSES: tuple[str, ...] = VOC_CLASSES[1:]  # detection has no background class
_LAYOUT_HELP = {
    "coco": "root/annotations/instances_<split>.json, root/<split>/<file_name>",
    "voc": "root/JPEGImages/<id>.jpg, root/Annotations/<id>.xml, root/ImageSets/Main/<split>.txt",
}
_TOL = 0.5  # pixels a COCO box may stick out of its image (converter rounding); it is clipped


@dataclass(frozen=True)
class DetRecord:
    """The validated annotation of one image (boxes xyxy in pixels of the original image)."""

    image_id: int | str
    path: Path
    height: int
    width: int
    boxes: np.ndarray    # float32 [N, 4]
    labels: np.ndarray   # int64 [N]
    ignored: np.ndarray  # float32 [M, 4]: crowd / difficult boxes


def _boxes(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, np.float32).reshape(-1, 4)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def _is_id(v: Any) -> bool:
    """An id field: an integer or a string (not a bool, which Python takes for 0 / 1, nor a list)."""
    return isinstance(v, (int, str)) and not isinstance(v, bool)


def _coco_records(ann: Path, img_dir: Path, classes: Sequence[str] | None) -> tuple[tuple[str, ...], list[DetRecord]]:
    """Parse and validate one COCO annotation file."""
    try:
        data = json.loads(ann.read_text())
    except (ValueError, RecursionError) as err:  # bad JSON, bad UTF-8, absurd nesting
        raise ValueError(f"{ann}: malformed JSON ({str(err)[:200]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{ann}: top level must be a JSON object with 'images', 'annotations', 'categories'")
    for field in ("images", "annotations", "categories"):
        if not isinstance(data.get(field), list):
            raise ValueError(f"{ann}: field {field!r} is missing or not a list")
    cats: dict[int, str] = {}
    for i, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not _is_id(c.get("id")) or isinstance(c["id"], str) or \
                not isinstance(c.get("name"), str):
            raise ValueError(f"{ann}: categories[{i}] needs an integer 'id' and a string 'name', got {c!r}")
        if c["id"] in cats:
            raise ValueError(f"{ann}: categories[{i}] repeats category id {c['id']}")
        cats[c["id"]] = c["name"]
    names = tuple(cats[k] for k in sorted(cats))
    classes = tuple(classes) if classes is not None else names
    if missing := [n for n in classes if n not in names]:
        raise ValueError(f"{ann}: classes {missing} are not among the file's categories {list(names)}")
    label = {k: classes.index(cats[k]) for k in sorted(cats) if cats[k] in classes}
    images: dict[int, dict[str, Any]] = {}
    for i, im in enumerate(data["images"]):
        where = f"{ann}: images[{i}]"
        if not isinstance(im, dict):
            raise ValueError(f"{where} is not an object")
        for field in ("id", "file_name", "width", "height"):
            if field not in im:
                raise ValueError(f"{where} has no field {field!r}")
        if not _is_id(im["id"]):
            raise ValueError(f"{where}: field 'id' must be an integer or a string, got {im['id']!r}")
        if not all(isinstance(im[f], int) and not isinstance(im[f], bool) and im[f] > 0 for f in ("width", "height")):
            raise ValueError(f"{where} (id {im['id']}): 'width'/'height' must be positive integers")
        if im["id"] in images:
            raise ValueError(f"{where} repeats image id {im['id']}")
        path = img_dir / str(im["file_name"])
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (image id {im['id']}, {where})")
        images[im["id"]] = {**im, "path": path, "boxes": [], "labels": [], "ignored": []}
    seen: set[Any] = set()
    for i, a in enumerate(data["annotations"]):
        where = f"{ann}: annotations[{i}]"
        if not isinstance(a, dict):
            raise ValueError(f"{where} is not an object")
        for field in ("id", "image_id", "category_id", "bbox", "area"):
            if field not in a:
                raise ValueError(f"{where} has no field {field!r}")
        for field in ("id", "image_id", "category_id"):
            if not _is_id(a[field]):
                raise ValueError(f"{where}: field {field!r} must be an integer or a string, got {a[field]!r}")
        where = f"{where} (id {a['id']})"
        if a["id"] in seen:
            raise ValueError(f"{where}: annotation id {a['id']} is not unique")
        seen.add(a["id"])
        if a["image_id"] not in images:
            raise ValueError(f"{where}: field 'image_id' {a['image_id']!r} points to no entry of 'images'")
        if a["category_id"] not in cats:
            raise ValueError(f"{where}: field 'category_id' {a['category_id']!r} is not a category id "
                             f"(known: {sorted(cats)})")
        im = images[a["image_id"]]
        bbox = a["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_num(v) for v in bbox)):
            raise ValueError(f"{where}: field 'bbox' must be [x, y, w, h] numbers, got {bbox!r}")
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            raise ValueError(f"{where}: field 'bbox' {bbox} has non-positive size (w={w}, h={h})")
        if x < -_TOL or y < -_TOL or x + w > im["width"] + _TOL or y + h > im["height"] + _TOL:
            raise ValueError(f"{where}: field 'bbox' {bbox} lies outside its image {im['path'].name} "
                             f"({im['width']}x{im['height']})")
        if not _is_num(a["area"]) or a["area"] <= 0:
            raise ValueError(f"{where}: field 'area' must be a positive number, got {a['area']!r}")
        if w < 1 or h < 1 or a.get("ignore", False) or a["category_id"] not in label:
            continue  # what mmdet's CocoDataset skips
        box = [max(x, 0.0), max(y, 0.0), min(x + w, im["width"]), min(y + h, im["height"])]
        if a.get("iscrowd", 0):
            im["ignored"].append(box)
        else:
            im["boxes"].append(box)
            im["labels"].append(label[a["category_id"]])
    records = [DetRecord(k, im["path"], im["height"], im["width"], _boxes(im["boxes"]),
                         np.asarray(im["labels"], np.int64), _boxes(im["ignored"])) for k, im in images.items()]
    return classes, records


def _text(node: ET.Element | None, tag: str) -> str | None:
    child = node.find(tag) if node is not None else None
    return child.text.strip() if child is not None and child.text and child.text.strip() else None


def _voc_record(xml: Path, img: Path, sid: str, classes: tuple[str, ...]) -> DetRecord:
    """Parse and validate one VOC annotation file."""
    try:
        tree = ET.parse(xml).getroot()
    except ET.ParseError as err:
        raise ValueError(f"{xml}: malformed XML ({err})") from err
    size = tree.find("size")
    try:
        width, height = int(_text(size, "width") or ""), int(_text(size, "height") or "")
    except ValueError:
        width = height = 0
    if size is None or width <= 0 or height <= 0:
        raise ValueError(f"{xml}: <size> with positive integer <width> and <height> is missing or invalid")
    boxes, labels, ignored = [], [], []
    for k, obj in enumerate(tree.findall("object")):
        name = _text(obj, "name")
        if name is None:
            raise ValueError(f"{xml}: <object> {k} has no <name>")
        if name not in classes:
            raise ValueError(f"{xml}: <object> {k} <name> {name!r} is not a known class {list(classes)}")
        bnd = obj.find("bndbox")
        try:
            xmin, ymin, xmax, ymax = (float(_text(bnd, t) or "nan") for t in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            xmin = ymin = xmax = ymax = float("nan")
        if bnd is None or not all(np.isfinite(v) for v in (xmin, ymin, xmax, ymax)):
            raise ValueError(f"{xml}: <object> {k} ({name}) has a bad <bndbox>: needs numeric "
                             f"<xmin> <ymin> <xmax> <ymax>")
        if not (xmin < xmax and ymin < ymax):
            raise ValueError(f"{xml}: <object> {k} ({name}) <bndbox> ({xmin}, {ymin}, {xmax}, {ymax}) has "
                             f"non-positive size")
        if xmin < 0 or ymin < 0 or xmax > width or ymax > height:
            raise ValueError(f"{xml}: <object> {k} ({name}) <bndbox> ({xmin}, {ymin}, {xmax}, {ymax}) lies "
                             f"outside the <size> {width}x{height}")
        box = [int(v) - 1 for v in (xmin, ymin, xmax, ymax)]  # mmdet: int(float(text)) - 1
        difficult = _text(obj, "difficult")
        if difficult is not None and difficult not in ("0", "1"):
            raise ValueError(f"{xml}: <object> {k} ({name}) <difficult> must be 0 or 1, got {difficult!r}")
        if difficult == "1":
            ignored.append(box)
        else:
            boxes.append(box)
            labels.append(classes.index(name))
    return DetRecord(sid, img, height, width, _boxes(boxes), np.asarray(labels, np.int64), _boxes(ignored))


class DetectionFolder(Dataset):
    """An object-detection split read from a COCO or VOC folder, validated when constructed.

    Args:
        root: dataset root folder.
        split: COCO: ``annotations/instances_<split>.json`` with images in ``<split>/``; VOC: the list
            ``ImageSets/Main/<split>.txt``.
        layout: ``"coco"`` or ``"voc"``.
        classes: class names in label order. COCO default: every category by id (categories not listed
            are skipped, as in mmdet); VOC default: the 20 VOC classes (an unlisted name is an error).

    Raises:
        FileNotFoundError: the root, annotation file, split list, or an image / xml is missing.
        ValueError: unknown layout, empty split, or malformed annotations (the message names the file and
            the field).
    """

    def __init__(self, root: str | Path, split: str = "train", layout: str = "coco",
                 classes: Sequence[str] | None = None) -> None:
        if layout not in _LAYOUT_HELP:
            raise ValueError(f"layout must be one of {sorted(_LAYOUT_HELP)}, got {layout!r}")
        self.root, self.split, self.layout = Path(root), split, layout
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root {self.root} does not exist; expected the {layout} layout: "
                                    f"{_LAYOUT_HELP[layout]}")
        if layout == "coco":
            self.ann_file = self.root / "annotations" / f"instances_{split}.json"
            if not self.ann_file.is_file():
                raise FileNotFoundError(f"annotation file {self.ann_file} not found (COCO layout: "
                                        f"{_LAYOUT_HELP['coco']})")
            self.classes, self.records = _coco_records(self.ann_file, self.root / split, classes)
        else:
            self.ann_file = self.root / "ImageSets" / "Main" / f"{split}.txt"
            if not self.ann_file.is_file():
                raise FileNotFoundError(f"split list {self.ann_file} not found (VOC layout: {_LAYOUT_HELP['voc']})")
            self.classes = tuple(classes) if classes is not None else VOC_DET_CLASSES
            self.records = []
            try:
                lines = self.ann_file.read_text().splitlines()
            except UnicodeDecodeError as err:
                raise ValueError(f"{self.ann_file}: not a text file of ids ({err})") from None
            for sid in (ln.split()[0] for ln in lines if ln.strip()):
                xml, img = self.root / "Annotations" / f"{sid}.xml", self.root / "JPEGImages" / f"{sid}.jpg"
                for path in (xml, img):
                    if not path.is_file():
                        raise FileNotFoundError(f"{path} not found (id {sid!r} listed in {self.ann_file})")
                self.records.append(_voc_record(xml, img, sid, self.classes))
        if not self.records:
            raise ValueError(f"{self.ann_file} lists no images")

    def __len__(self) -> int:
        return len(self.records)

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable summary: layout, root, split, sizes, classes and object counts."""
        return {"layout": self.layout, "root": str(self.root), "split": self.split, "num_items": len(self),
                "classes": list(self.classes), "ann_file": str(self.ann_file),
                "num_objects": int(sum(len(r.labels) for r in self.records)),
                "num_ignored": int(sum(len(r.ignored) for r in self.records))}

    def __repr__(self) -> str:
        d = self.describe()
        return (f"DetectionFolder(layout={d['layout']!r}, root={d['root']!r}, split={d['split']!r}, "
                f"num_items={d['num_items']}, num_classes={len(self.classes)})")

    def _read_image(self, index: int) -> Image.Image:
        rec = self.records[index]
        try:
            with Image.open(rec.path) as im:
                im.load()
                img = im.convert("RGB")
        except FileNotFoundError:
            raise
        except (OSError, ValueError, SyntaxError) as err:
            raise ValueError(f"{rec.path}: unreadable image ({err})") from err
        if (img.height, img.width) != (rec.height, rec.width):
            raise ValueError(f"{rec.path}: image is {img.width}x{img.height} but its annotation "
                             f"({self.ann_file.name if self.layout == 'coco' else 'xml <size>'}) says "
                             f"{rec.width}x{rec.height}")
        return img

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(image uint8 HxWx3, boxes float32 Nx4 xyxy, labels int64 N)`` of item ``index``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index %= len(self)
        rec = self.records[index]
        return np.asarray(self._read_image(index), np.uint8), rec.boxes.copy(), rec.labels.copy()

    def load_arrays(self, size: int | tuple[int, int], max_items: int | None = None
                    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Load the first ``max_items`` items resized (not letterboxed) into memory.

        Images are resized bilinearly and ImageNet-normalised; boxes are scaled by the same factors.

        Args:
            size: output side (square) or ``(height, width)``.
            max_items: load at most this many items (in split order); ``None`` for all.

        Returns:
            ``(images float32 Nx3xHxW, [boxes float32 n_i x 4 xyxy], [labels int64 n_i])``.
        """
        h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if h < 1 or w < 1:
            raise ValueError(f"size must be positive, got {size}")
        n = len(self) if max_items is None else max(0, min(int(max_items), len(self)))
        images = np.empty((n, h, w, 3), np.float32)
        boxes, labels = [], []
        for i in range(n):
            rec = self.records[i]
            img = self._read_image(i)
            images[i] = np.asarray(img.resize((w, h), Image.Resampling.BILINEAR), np.float32) / 255.0
            scale = np.asarray([w / rec.width, h / rec.height] * 2, np.float32)
            boxes.append(torch.from_numpy(rec.boxes * scale))
            labels.append(torch.from_numpy(rec.labels.copy()))
        x = (images - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
        return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), boxes, labels


def mmdet_dataset_cfg(root: str | Path, split: str = "train", layout: str = "coco",
                      pipeline: Sequence[dict] = (), classes: Sequence[str] | None = None,
                      test_mode: bool = False) -> dict[str, Any]:
    """The mmdet dataset config reading the same split with mmdet's own ``CocoDataset`` / ``VOCDataset``.

    Args:
        root: dataset root (as for :class:`DetectionFolder`).
        split: split name.
        layout: ``"coco"`` or ``"voc"``.
        pipeline: mmdet transforms.
        classes: ``metainfo.classes``; default: the COCO file's categories by id, or the 20 VOC classes.
        test_mode: mmdet's ``test_mode`` (no filtering of empty images).

    Returns:
        A dict for ``mmdet.registry.DATASETS.build``.
    """
    if layout not in _LAYOUT_HELP:
        raise ValueError(f"layout must be one of {sorted(_LAYOUT_HELP)}, got {layout!r}")
    root = Path(root)
    if layout == "coco":
        from .proxy_det import coco_classes

        names = tuple(classes) if classes is not None else coco_classes(root, split)
        return dict(type="CocoDataset", data_root=str(root), ann_file=f"annotations/instances_{split}.json",
                    data_prefix=dict(img=f"{split}/"), metainfo=dict(classes=names), pipeline=list(pipeline),
                    test_mode=test_mode)
    names = tuple(classes) if classes is not None else VOC_DET_CLASSES
    return dict(type="VOCDataset", data_root=str(root), ann_file=f"ImageSets/Main/{split}.txt",
                data_prefix=dict(sub_data_root=""), metainfo=dict(classes=names), pipeline=list(pipeline),
                test_mode=test_mode)
