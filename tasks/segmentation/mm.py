"""OpenMMLab registrations of the segmentation task: the one module exported mmseg configs import.

``custom_imports=dict(imports=["densenas.tasks.segmentation.mm"], allow_failed_imports=False)`` registers,
once and without ``force=True``, in mmseg's ``MODELS``: the backbones ``DenseNASBackbone`` (any backbone of
:mod:`densenas.backbones`) and ``AutoDeepLabBackbone`` (Liu et al., CVPR 2019); importing it also registers the
decode heads of the ``dense_map`` spaces, ``AuxCellHead`` (Nekrasov et al., CVPR 2019), ``TemplateHead``
(Nekrasov et al., WACV 2020) and ``DenseMapHead`` (any ``dense_map`` space, rebuilt from its search section),
which their adapter module :mod:`densenas.decoders.mmseg_adapters` registers itself.
"""
from __future__ import annotations

from mmseg.registry import MODELS

import densenas.tasks.mmseg_backbone  # noqa: F401  (DenseNASBackbone, shared with the depth task)
from densenas.decoders.autodeeplab_mmseg import AutoDeepLabBackbone
import densenas.decoders.mmseg_adapters  # noqa: F401  (registers the dense-map spaces' decode heads)

MODELS.register_module(module=AutoDeepLabBackbone)
