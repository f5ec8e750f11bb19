"""Segmentation data for a search: the proxy set (built from real photographs, VOC layout), VOC and
Cityscapes in their real on-disk layouts, loaded as in-memory tensors at the proxy image size; and the scan of a
VOC-layout set's label masks from which an export takes its classes (:func:`scan_voc_labels`)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from torch import Tensor

from densenas.config import ConfigError, check_classes, check_image_size, check_int, check_keys, check_sub_dict
from densenas.datasets.proxy import build_proxy_voc
from densenas.datasets.segfolder import IGNORE_INDEX, SegmentationFolder

DATA_KEYS = {"layout", "root", "train_split", "val_split", "image_size", "num_classes", "classes",
             "max_train", "max_val", "proxy"}


@dataclass
class SegData:
    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    num_classes: int
    root: Path


def build_data(data_cfg: dict[str, Any], source: str = "config", log: Callable = print) -> SegData:
    """Load (building the proxy set first if needed) the train/val splits as in-memory tensors."""
    check_keys("data", data_cfg, lambda **kw: None, extra=DATA_KEYS, source=source)
    layout = data_cfg.get("layout", "proxy")
    if "root" not in data_cfg:
        raise ConfigError(f"{source}: 'data.root' is required")
    root = Path(data_cfg["root"])
    num_classes = check_int(data_cfg.get("num_classes"), "data.num_classes", source, optional=True)
    size = check_image_size(data_cfg.get("image_size", 128), "data.image_size", source)
    max_train, max_val = (check_int(data_cfg.get(k), f"data.{k}", source, optional=True)
                          for k in ("max_train", "max_val"))
    classes = check_classes(data_cfg.get("classes"), "data.classes", source)
    if data_cfg.get("classes") is not None:  # class names (exported with the arch); they fix the count
        if num_classes is not None and int(num_classes) != len(data_cfg["classes"]):
            raise ConfigError(f"{source}: data.num_classes={num_classes} but data.classes names "
                              f"{len(data_cfg['classes'])} classes")
        num_classes = len(data_cfg["classes"])
    if layout == "proxy":
        proxy = check_sub_dict(data_cfg.get("proxy"), "data.proxy", source)
        check_keys("data.proxy", proxy, build_proxy_voc, source=source)
        manifest = build_proxy_voc(root, **proxy)
        num_classes = len(manifest["classes"])
        layout = "voc"
    elif layout not in ("voc", "cityscapes"):
        raise ConfigError(f"{source}: 'data.layout' is {layout!r}; use 'proxy', 'voc' or 'cityscapes'")
    if num_classes is None:
        num_classes = 19 if layout == "cityscapes" else 21
    train_split = data_cfg.get("train_split", "train")
    val_split = data_cfg.get("val_split", "val")
    t0 = time.perf_counter()
    train = SegmentationFolder(root, train_split, layout=layout, num_classes=num_classes).load_arrays(
        size, max_items=max_train)
    val = SegmentationFolder(root, val_split, layout=layout, num_classes=num_classes).load_arrays(
        size, max_items=max_val)
    log(f"data: {layout} at {root}: {len(train[0])} train / {len(val[0])} val images at {size}px, "
        f"{num_classes} classes ({time.perf_counter() - t0:.1f}s)")
    return SegData(train, val, int(num_classes), root)


@dataclass(frozen=True)
class LabelScan:
    """What the label masks of a VOC-layout set hold (:func:`scan_voc_labels`).

    Attributes:
        root: the dataset root.
        splits: the split lists read.
        files: label masks read.
        labels: the distinct label values found, the ignore index 255 left out, ascending.
    """

    root: Path
    splits: tuple[str, ...]
    files: int
    labels: tuple[int, ...]

    @property
    def num_classes(self) -> int:
        """Classes the model needs: the largest label + 1 (a label id never seen still needs its output)."""
        return self.labels[-1] + 1

    @property
    def missing(self) -> tuple[int, ...]:
        """Label ids below the largest that no mask holds."""
        present = set(self.labels)
        return tuple(i for i in range(self.num_classes) if i not in present)

    def describe(self) -> str:
        """One line: how many classes, from which labels, read from how many files."""
        text = (f"{self.num_classes} classes from the data: labels {list(self.labels)} (255 ignored) in "
                f"{self.files} masks of {self.root / 'SegmentationClass'} ({', '.join(self.splits)} lists)")
        if self.missing:
            text += f"; label ids {list(self.missing)} occur in no mask but still get an output"
        return text


def scan_voc_labels(root: str | Path, splits: Sequence[str] = ("train", "val")) -> LabelScan:
    """The distinct class labels of a VOC-layout segmentation set, read from the label PNGs of ``splits``.

    Every mask listed in ``root/ImageSets/Segmentation/<split>.txt`` is read (palette or grayscale PNG whose
    pixel values are class indices, as mmseg's ``LoadAnnotations`` reads them); 255 is the ignore index.

    Args:
        root: dataset root holding ``SegmentationClass/`` and ``ImageSets/Segmentation/``.
        splits: the split lists whose masks are read.

    Returns:
        The labels found (:class:`LabelScan`; ``num_classes`` is the largest label + 1).

    Raises:
        FileNotFoundError: the root, the label folder, a split list or a listed mask is missing.
        ValueError: an unreadable or colour (RGB) mask, a label outside 0..255, or no label other than 255.
    """
    from PIL import Image

    root = Path(root)
    label_dir = root / "SegmentationClass"
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist")
    if not label_dir.is_dir():
        raise FileNotFoundError(f"no label folder {label_dir}: a VOC layout keeps its masks in "
                                f"SegmentationClass/<id>.png")
    counts = np.zeros(256, np.int64)
    files = 0
    for split in splits:
        split_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not split_file.is_file():
            raise FileNotFoundError(f"split list {split_file} not found")
        try:
            lines = split_file.read_text().splitlines()
        except UnicodeDecodeError as err:
            raise ValueError(f"{split_file}: not a text file of ids ({err})") from None
        for line in lines:
            if not line.strip():
                continue
            path = label_dir / f"{line.split()[0]}.png"
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found (listed in {split_file})")
            try:
                with Image.open(path) as im:
                    mode, arr = im.mode, np.asarray(im)  # palette indices for 'P', never the colours
            except (OSError, ValueError, SyntaxError) as err:
                raise ValueError(f"{path}: unreadable label mask ({err})") from err
            if mode not in ("P", "L", "I", "I;16"):
                raise ValueError(f"{path}: label mask mode {mode!r}; expected a palette ('P') or grayscale ('L') "
                                 f"PNG whose pixel values are class indices")
            if arr.dtype != np.uint8:  # 16/32-bit grayscale: class ids must still fit 0..254 (+ 255 ignore)
                lo, hi = int(arr.min()), int(arr.max())
                if lo < 0 or hi > IGNORE_INDEX:
                    raise ValueError(f"{path}: label values {lo}..{hi}; class ids must lie in 0..254, "
                                     f"{IGNORE_INDEX} = ignore")
                arr = arr.astype(np.uint8)
            counts += np.bincount(arr.ravel(), minlength=256)
            files += 1
    if files == 0:
        raise ValueError(f"the split lists {list(splits)} under {root / 'ImageSets' / 'Segmentation'} list no ids")
    labels = [int(v) for v in np.flatnonzero(counts) if v != IGNORE_INDEX]
    if not labels:
        raise ValueError(f"the {files} masks of {label_dir} hold only the ignore index {IGNORE_INDEX}")
    return LabelScan(root, tuple(splits), files, tuple(labels))
