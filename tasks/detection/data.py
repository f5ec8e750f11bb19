"""Detection data for a search (NAS-FCOS, Wang et al. CVPR 2020; NAS-FPN, Ghiasi et al. CVPR 2019): the
proxy COCO set built from real photographs, COCO json or VOC xml in their real layouts, loaded as
in-memory tensors with per-image boxes and labels. Every key of the ``data`` section is checked."""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import Tensor

from densenas.config import ConfigError, check_classes, check_image_size, check_int, check_keys, check_sub_dict
from densenas.datasets.detfolder import DetectionFolder
from densenas.datasets.proxy_det import build_proxy_coco

DET_DATA_KEYS = {"layout", "root", "train_split", "val_split", "image_size", "max_train", "max_val",
                 "proxy", "classes"}
DetSplit = tuple[Tensor, list[Tensor], list[Tensor]]
#: Fields of a COCO json that hand-made files often lack but pycocotools reads, with the neutral value that stands
#: in for each. Top level: 2.0.9 and 2.0.10 copy ``dataset['info']`` in ``COCO.loadRes`` (``KeyError: 'info'``
#: at mmdet's first ``CocoMetric`` evaluation; 2.0.11 reads it with ``.get``); ``licenses`` is read by no
#: version (checked 2.0.9 to 2.0.11).
COCO_STAND_INS: dict[str, Any] = {"info": {}}
#: Per annotation: every version's ``COCOeval.evaluateImg`` reads ``int(ann['iscrowd'])`` of the ground truth
#: (mmdet's ``CocoDataset`` and densenas's reader take a missing one as 0, a plain object).
COCO_ANN_STAND_INS: dict[str, Any] = {"iscrowd": 0}


@dataclass
class DetData:
    """In-memory detection splits: ``(images, boxes per image, labels per image)``."""

    train: DetSplit
    val: DetSplit
    classes: tuple[str, ...]
    root: Path


def build_det_data(data_cfg: dict[str, Any], source: str = "config", log: Callable = print) -> DetData:
    """Load (building the proxy COCO set first if needed) the train/val splits as tensors.

    Layouts: ``proxy_coco`` (default; real-image objects with exact boxes, COCO layout), ``coco`` and
    ``voc`` in their real on-disk layouts.
    """
    check_keys("data", data_cfg, lambda **kw: None, extra=DET_DATA_KEYS, source=source)
    if "root" not in data_cfg:
        raise ConfigError(f"{source}: 'data.root' is required")
    root, layout = Path(data_cfg["root"]), data_cfg.get("layout", "proxy_coco")
    size = check_image_size(data_cfg.get("image_size", 128), "data.image_size", source)
    max_train, max_val = (check_int(data_cfg.get(k), f"data.{k}", source, optional=True)
                          for k in ("max_train", "max_val"))
    classes = check_classes(data_cfg.get("classes"), "data.classes", source)
    if layout == "proxy_coco":
        proxy = check_sub_dict(data_cfg.get("proxy"), "data.proxy", source)
        check_keys("data.proxy", proxy, build_proxy_coco, source=source)
        build_proxy_coco(root, log=log, **{"size": size, **proxy})
        layout = "coco"
    elif layout not in ("coco", "voc"):
        raise ConfigError(f"{source}: 'data.layout' is {layout!r}; use 'proxy_coco', 'coco' or 'voc'")
    t0 = time.perf_counter()
    train = DetectionFolder(root, data_cfg.get("train_split", "train"), layout, classes=classes)
    val = DetectionFolder(root, data_cfg.get("val_split", "val"), layout, classes=train.classes)
    data = DetData(train.load_arrays(size, max_train), val.load_arrays(size, max_val), tuple(train.classes), root)
    if layout == "coco" and (gaps := coco_file_gaps(val.ann_file)):  # what mmdet's CocoMetric will read
        log(coco_gaps_note(val.ann_file, gaps))
    boxes = sum(len(b) for b in data.train[1])
    log(f"data: {layout} at {root}: {len(data.train[0])} train ({boxes} boxes) / {len(data.val[0])} val "
        f"images at {size}px, {len(data.classes)} classes ({time.perf_counter() - t0:.1f}s)")
    return data


def coco_gaps(dataset: dict[str, Any]) -> list[str]:
    """The fields of :data:`COCO_STAND_INS` / :data:`COCO_ANN_STAND_INS` that a loaded COCO json lacks, each
    as a readable phrase (``"top-level 'info'"``, ``"'iscrowd' in 3 of 5 annotations"``); ``[]``: none."""
    gaps = [f"top-level {k!r}" for k in COCO_STAND_INS if k not in dataset]
    anns = [a for a in dataset.get("annotations") or [] if isinstance(a, dict)]
    for key in COCO_ANN_STAND_INS:
        if n := sum(key not in a for a in anns):
            gaps.append(f"{key!r} in {n} of {len(anns)} annotations")
    return gaps


def fill_coco_gaps(dataset: dict[str, Any]) -> None:
    """Fill, in place, the fields :func:`coco_gaps` names with their neutral values (the loaded ground truth of
    an evaluation; the file is never rewritten)."""
    for key, value in COCO_STAND_INS.items():
        dataset.setdefault(key, copy.deepcopy(value))
    for ann in dataset.get("annotations") or []:
        if isinstance(ann, dict):
            for key, value in COCO_ANN_STAND_INS.items():
                ann.setdefault(key, copy.deepcopy(value))


def coco_file_gaps(ann_file: str | Path) -> list[str]:
    """:func:`coco_gaps` of the COCO json ``ann_file``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a JSON object (names the file).
    """
    path = Path(ann_file)
    try:
        data = json.loads(path.read_text())
    except (ValueError, RecursionError) as err:
        raise ValueError(f"{path}: malformed JSON ({str(err)[:200]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a JSON object with 'images', 'annotations', 'categories'")
    return coco_gaps(data)


def coco_gaps_note(ann_file: str | Path, gaps: list[str]) -> str:
    """What a COCO file lacking the fields ``gaps`` means, and how to complete the file."""
    return (f"note: {ann_file} lacks {'; '.join(gaps)}. The search does not read them and configs written by "
            f"tools/export.py evaluate the file with DenseNASCocoMetric (it fills them in memory), but mmdet's own "
            f"CocoMetric crashes on it: pycocotools 2.0.9 / 2.0.10 need 'info' (KeyError: 'info' in COCO.loadRes; "
            f"2.0.11, which densenas pins, does not) and every version's COCOeval needs each annotation's "
            f"'iscrowd'. To use the file anywhere add \"info\": {{}} at its top level and \"iscrowd\": 0 to each "
            f"annotation that has none")
