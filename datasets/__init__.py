"""densenas.datasets: proxy-set builders, readers for real dataset layouts, and fixture writers.

- :func:`build_proxy_voc` builds a deterministic proxy segmentation set from real photographs in VOC layout.
- :class:`SegmentationFolder` reads VOC / Cityscapes segmentation folders (torch ``Dataset`` and
  in-memory ``load_arrays``).
- :func:`write_voc_fixture` / :func:`write_cityscapes_fixture` write tiny datasets in those layouts.
- Detection: :func:`build_proxy_coco` (proxy set with exact boxes, COCO layout), :class:`DetectionFolder`
  (COCO json / VOC xml readers), :func:`mmdet_dataset_cfg`, :func:`write_coco_fixture`,
  :func:`write_voc_det_fixture`.
"""
from .det_fixtures import write_coco_fixture, write_voc_det_fixture
from .detfolder import VOC_DET_CLASSES, DetectionFolder, mmdet_dataset_cfg
from .fixtures import write_cityscapes_fixture, write_voc_fixture
from .proxy_det import DET_MANIFEST_NAME, build_proxy_coco, coco_classes, proxy_det_scenes
from .proxy import MANIFEST_NAME, PROXY_CLASSES, build_proxy_voc, voc_palette
from .segfolder import (CITYSCAPES_CLASSES, CITYSCAPES_LABELID_TO_TRAINID, IGNORE_INDEX, IMAGENET_MEAN,
                        IMAGENET_STD, VOC_CLASSES, SegmentationFolder, labelids_to_trainids)

__all__ = [
    "build_proxy_voc", "PROXY_CLASSES", "MANIFEST_NAME", "voc_palette",
    "SegmentationFolder", "VOC_CLASSES", "CITYSCAPES_CLASSES", "CITYSCAPES_LABELID_TO_TRAINID",
    "IGNORE_INDEX", "IMAGENET_MEAN", "IMAGENET_STD", "labelids_to_trainids",
    "write_voc_fixture", "write_cityscapes_fixture",
    "build_proxy_coco", "coco_classes", "proxy_det_scenes", "DET_MANIFEST_NAME", "DetectionFolder",
    "VOC_DET_CLASSES", "mmdet_dataset_cfg", "write_coco_fixture", "write_voc_det_fixture",
]
