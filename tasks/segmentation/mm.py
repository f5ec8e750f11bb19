"""OpenMMLab registrations of the segmentation task: the one module exported mmseg configs import.

``custom_imports=dict(imports=["densenas.tasks.segmentation.mm"], allow_failed_imports=False)`` registers,
once and without ``force=True``, in mmseg's ``MODELS``: the backbones ``DenseNASBackbone`` (any backbone of
:mod:`densenas.backbones`), the decode heads ``AuxCellHead`` (Nekrasov et al.,
CVPR 2019), ``TemplateHead`` (Nekrasov et al., WACV 2020), ``DenseMapHead`` (any ``dense_map`` space, rebuilt from
its search section) and ``AutoDeepLabBackbone`` (Liu et al., CVPR 2019).
"""
from __future__ import annotations

from mmseg.registry import MODELS

import densenas.tasks.mmseg_backbone  # noqa: F401  (DenseNASBackbone, shared with the depth task)
from densenas.decoders.autodeeplab_mmseg import AutoDeepLabBackbone
from densenas.decoders.mmseg_adapters import AuxCellHead, DenseMapHead, TemplateHead

for _cls in (AuxCellHead, TemplateHead, DenseMapHead, AutoDeepLabBackbone):
    MODELS.register_module(module=_cls)
