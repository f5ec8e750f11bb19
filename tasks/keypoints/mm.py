"""OpenMMLab registrations of the keypoint task: the one module exported mmpose configs import.

``custom_imports=dict(imports=["densenas.tasks.keypoints.mm"], allow_failed_imports=False)`` registers, once
and without ``force=True``, in mmpose's ``MODELS``: the backbone ``DenseNASBackbone`` (any backbone of
:mod:`densenas.backbones`) and the heatmap head ``AuxCellHeatmapHead`` (the found decoder of Nekrasov et al.,
CVPR 2019, as an mmpose ``HeatmapHead``); in mmpose's ``DATASETS``: ``CocoHeadSizeDataset`` (``CocoDataset``
carrying head sizes for PCKh); and, through :mod:`densenas.mm_hooks`, the ``HeadFirstHook`` that exported
keypoint configs train with.
"""
from __future__ import annotations

from mmpose.registry import DATASETS, MODELS

import densenas.mm_hooks  # noqa: F401 (registers HeadFirstHook in mmengine's HOOKS, which mmpose's extends)
from densenas.backbones import DenseNASBackbone

from .head import AuxCellHeatmapHead, CocoHeadSizeDataset

for _cls in (DenseNASBackbone, AuxCellHeatmapHead):
    MODELS.register_module(module=_cls)
DATASETS.register_module(module=CocoHeadSizeDataset)
