"""Readers for semantic-segmentation datasets in their real on-disk layouts (PASCAL VOC, Cityscapes).

``SegmentationFolder`` is a torch ``Dataset`` of ``(image float32 CHW in [0, 1], label int64 HW)`` and
``load_arrays`` loads a whole split resized into memory, ImageNet-normalised, for the search's in-memory
proxy training. Layouts::

    VOC:        root/JPEGImages/<id>.jpg
                root/SegmentationClass/<id>.png             (palette PNG: pixel = class index, 255 ignore)
                root/ImageSets/Segmentation/<split>.txt     (one id per line)
    Cityscapes: root/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png
                root/gtFine/<split>/<city>/<name>_gtFine_labelTrainIds.png   (19 classes, 255 ignore)
                (or only <name>_gtFine_labelIds.png: the 34 labelIds are mapped to trainIds here)

Every problem is reported with the offending path: a missing root, split list, image or label is a
``FileNotFoundError``; an unreadable file or a label value outside ``[0, num_classes) ∪ {255}`` is a
``ValueError``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = ["SegmentationFolder", "VOC_CLASSES", "CITYSCAPES_CLASSES", "CITYSCAPES_LABELID_TO_TRAINID",
           "IMAGENET_MEAN", "IMAGENET_STD", "IGNORE_INDEX", "labelids_to_trainids"]

IGNORE_INDEX = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor")
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
    "bicycle")
# labelId -> trainId from cityscapesScripts' labels.py (ids 0..33; 255 = ignored in evaluation).
CITYSCAPES_LABELID_TO_TRAINID: dict[int, int] = {
    0: 255, 1: 255, 2: 255, 3: 255, 4: 255, 5: 255, 6: 255, 7: 0, 8: 1, 9: 255, 10: 255, 11: 2, 12: 3,
    13: 4, 14: 255, 15: 255, 16: 255, 17: 5, 18: 255, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
    25: 12, 26: 13, 27: 14, 28: 15, 29: 255, 30: 255, 31: 16, 32: 17, 33: 18}

_LAYOUT_HELP = {
    "voc": "root/JPEGImages/<id>.jpg, root/SegmentationClass/<id>.png, "
           "root/ImageSets/Segmentation/<split>.txt",
    "cityscapes": "root/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png, "
                  "root/gtFine/<split>/<city>/<name>_gtFine_labelTrainIds.png (or _gtFine_labelIds.png)",
}
_IMG_SUFFIX = "_leftImg8bit.png"
_LUT = np.full(256, -1, np.int64)
for _lid, _tid in CITYSCAPES_LABELID_TO_TRAINID.items():
    _LUT[_lid] = _tid


def _read_text(path: Path) -> str:
    """A split list's text; a binary or wrongly encoded file is a ``ValueError`` naming it."""
    try:
        return path.read_text()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text file of ids ({err})") from None


def labelids_to_trainids(label_ids: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
    """Map a Cityscapes labelIds array (values 0..33) to trainIds (0..18, 255 ignore).

    Args:
        label_ids: integer array of Cityscapes labelIds.
        path: file name used in the error message.

    Returns:
        uint8 array of trainIds, same shape.

    Raises:
        ValueError: a value is not a Cityscapes labelId.
    """
    arr = np.asarray(label_ids).astype(np.int64)
    bad = np.unique(arr[(arr < 0) | (arr > 255)])
    if bad.size == 0:
        mapped = _LUT[arr]
        bad = np.unique(arr[mapped < 0])
    if bad.size:
        raise ValueError(f"{path}: values {bad.tolist()[:10]} are not Cityscapes labelIds (0..33)")
    return mapped.astype(np.uint8)


class SegmentationFolder(Dataset):
    """A semantic-segmentation split read from a VOC or Cityscapes folder.

    Args:
        root: dataset root folder.
        split: split name (``train``, ``val``, ...): a VOC split list or a Cityscapes split folder.
        layout: ``"voc"`` or ``"cityscapes"``.
        num_classes: number of classes; label values must be below it (or 255). Default: the number of
            classes in a densenas proxy manifest under ``root`` if there is one, else 21 (VOC) or 19
            (Cityscapes).

    Raises:
        FileNotFoundError: the root, split list/folder, or a listed image/label is missing.
        ValueError: unknown layout or empty split.
    """

    def __init__(self, root: str | Path, split: str = "train", layout: str = "voc",
                 num_classes: int | None = None) -> None:
        if layout not in _LAYOUT_HELP:
            raise ValueError(f"layout must be one of {sorted(_LAYOUT_HELP)}, got {layout!r}")
        self.root = Path(root)
        self.split = split
        self.layout = layout
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root {self.root} does not exist; expected the {layout} layout: "
                                    f"{_LAYOUT_HELP[layout]}")
        self.manifest = self._manifest()
        if layout == "voc":
            classes = tuple(self.manifest["classes"]) if self.manifest else VOC_CLASSES
            self.ids, self.images, self.labels = self._index_voc()
        else:
            classes = CITYSCAPES_CLASSES
            self.ids, self.images, self.labels = self._index_cityscapes()
        self.num_classes = int(num_classes) if num_classes is not None else len(classes)
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.classes = classes[:self.num_classes] if len(classes) >= self.num_classes else \
            tuple(f"class{i}" for i in range(self.num_classes))

    def _manifest(self) -> dict[str, Any] | None:
        path = self.root / "densenas_proxy.json"
        if not path.is_file():
            return None
        try:
            manifest = json.loads(path.read_text())
        except (ValueError, RecursionError) as err:  # bad JSON or bad UTF-8
            raise ValueError(f"{path}: unreadable densenas proxy manifest ({err})") from err
        classes = manifest.get("classes") if isinstance(manifest, dict) else None
        if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
            got = str(classes if isinstance(manifest, dict) else manifest)[:80]
            raise ValueError(f"{path}: a densenas proxy manifest must be a JSON object whose field 'classes' is a "
                             f"non-empty list of class names, got {got}")
        return manifest

    def _index_voc(self) -> tuple[list[str], list[Path], list[Path]]:
        split_file = self.root / "ImageSets" / "Segmentation" / f"{self.split}.txt"
        if not split_file.is_file():
            raise FileNotFoundError(f"split list {split_file} not found (VOC layout: {_LAYOUT_HELP['voc']})")
        ids = [line.split()[0] for line in _read_text(split_file).splitlines() if line.strip()]
        if not ids:
            raise ValueError(f"split list {split_file} lists no ids")
        images = [self.root / "JPEGImages" / f"{i}.jpg" for i in ids]
        labels = [self.root / "SegmentationClass" / f"{i}.png" for i in ids]
        for i, img, lab in zip(ids, images, labels):
            for path in (img, lab):
                if not path.is_file():
                    raise FileNotFoundError(f"{path} not found (id {i!r} listed in {split_file})")
        return ids, images, labels

    def _index_cityscapes(self) -> tuple[list[str], list[Path], list[Path]]:
        img_dir = self.root / "leftImg8bit" / self.split
        if not img_dir.is_dir():
            raise FileNotFoundError(f"split folder {img_dir} not found (Cityscapes layout: "
                                    f"{_LAYOUT_HELP['cityscapes']})")
        files = sorted(img_dir.glob(f"*/*{_IMG_SUFFIX}"))
        if not files:
            raise ValueError(f"split folder {img_dir} holds no <city>/*{_IMG_SUFFIX} images")
        ids, labels = [], []
        for img in files:
            name = img.name[:-len(_IMG_SUFFIX)]
            gt = self.root / "gtFine" / self.split / img.parent.name
            train_ids, label_ids = gt / f"{name}_gtFine_labelTrainIds.png", gt / f"{name}_gtFine_labelIds.png"
            if train_ids.is_file():
                labels.append(train_ids)
            elif label_ids.is_file():
                labels.append(label_ids)
            else:
                raise FileNotFoundError(f"{train_ids} not found (nor {label_ids.name}) for image {img}")
            ids.append(f"{img.parent.name}/{name}")
        return ids, files, labels

    def __len__(self) -> int:
        return len(self.ids)

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable summary: layout, root, split, size, classes and label source."""
        kinds = sorted({p.name.rsplit("_", 1)[-1] if self.layout == "cityscapes" else "palette-png"
                        for p in self.labels})
        return {"layout": self.layout, "root": str(self.root), "split": self.split, "num_items": len(self),
                "num_classes": self.num_classes, "classes": list(self.classes), "label_files": kinds,
                "ignore_index": IGNORE_INDEX, "proxy": self.manifest is not None}

    def __repr__(self) -> str:
        d = self.describe()
        return (f"SegmentationFolder(layout={d['layout']!r}, root={d['root']!r}, split={d['split']!r}, "
                f"num_items={d['num_items']}, num_classes={d['num_classes']})")

    def _read_image(self, index: int) -> Image.Image:
        path = self.images[index]
        try:
            with Image.open(path) as im:
                im.load()
                return im.convert("RGB")
        except FileNotFoundError:
            raise
        except (OSError, ValueError, SyntaxError) as err:
            raise ValueError(f"{path}: unreadable image ({err})") from err

    def _read_label(self, index: int) -> np.ndarray:
        """Class-index label as HxW uint8, validated against ``num_classes``."""
        path = self.labels[index]
        try:
            with Image.open(path) as im:
                im.load()
                mode = im.mode
                arr = np.asarray(im)  # palette indices for 'P', never the RGB colours
        except FileNotFoundError:
            raise
        except (OSError, ValueError, SyntaxError) as err:
            raise ValueError(f"{path}: unreadable annotation image ({err})") from err
        if mode not in ("P", "L", "I", "I;16"):
            raise ValueError(f"{path}: label image mode {mode!r}; expected a palette ('P') or "
                             f"grayscale ('L') PNG whose pixel values are class indices")
        if path.name.endswith("_gtFine_labelIds.png"):
            arr = labelids_to_trainids(arr, path)
        arr = arr.astype(np.int64)
        bad = np.unique(arr[((arr < 0) | (arr >= self.num_classes)) & (arr != IGNORE_INDEX)])
        if bad.size:
            raise ValueError(f"{path}: label values {bad.tolist()[:10]} are >= num_classes={self.num_classes} "
                             f"and not the ignore index {IGNORE_INDEX}")
        return arr.astype(np.uint8)

    def _pair(self, index: int) -> tuple[Image.Image, np.ndarray]:
        img, label = self._read_image(index), self._read_label(index)
        if (img.height, img.width) != label.shape:
            raise ValueError(f"{self.labels[index]}: label size {label.shape} differs from image "
                             f"{self.images[index]} size {(img.height, img.width)}")
        return img, label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(image float32 3xHxW in [0, 1], label int64 HxW)`` of item ``index``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        img, label = self._pair(index % len(self))
        image = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
        return image, torch.from_numpy(label.astype(np.int64))

    def load_arrays(self, size: int | tuple[int, int],
                    max_items: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Load the first ``max_items`` items resized into memory.

        Images are resized bilinearly (PIL, antialiased) and ImageNet-normalised; labels are resized
        with nearest neighbour so class indices and 255 stay exact.

        Args:
            size: output side (square) or ``(height, width)``.
            max_items: load at most this many items (in split order); ``None`` for all.

        Returns:
            ``(images float32 Nx3xHxW, labels int64 NxHxW)``.
        """
        h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if h < 1 or w < 1:
            raise ValueError(f"size must be positive, got {size}")
        n = len(self) if max_items is None else max(0, min(int(max_items), len(self)))
        images = np.empty((n, h, w, 3), np.float32)
        labels = np.empty((n, h, w), np.int64)
        for i in range(n):
            img, label = self._pair(i)
            images[i] = np.asarray(img.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
            labels[i] = np.asarray(Image.fromarray(label).resize((w, h), Image.Resampling.NEAREST))
        mean = np.asarray(IMAGENET_MEAN, np.float32)
        std = np.asarray(IMAGENET_STD, np.float32)
        x = torch.from_numpy((images - mean) / std).permute(0, 3, 1, 2).contiguous()
        return x, torch.from_numpy(labels)
