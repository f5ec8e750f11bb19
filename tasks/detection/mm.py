"""OpenMMLab registrations of the detection task: the one module exported mmdet configs import.

``custom_imports=dict(imports=["densenas.tasks.detection.mm"], allow_failed_imports=False)`` registers,
once and without ``force=True``, in mmdet's ``MODELS``: the backbone ``DenseNASBackbone``, the NAS-FCOS
neck and head (Wang et al., CVPR 2020) and the NAS-FPN neck (Ghiasi et al., CVPR 2019).
"""
from __future__ import annotations

import warnings

from mmdet.registry import MODELS

from densenas.backbones import DenseNASBackbone
from densenas.decoders.mmdet_adapters import NASFCOSSearchedFPN, NASFCOSSearchedHead
from densenas.decoders.nasfpn_mmdet import NASFPNSearchedNeck

for _cls in (DenseNASBackbone, NASFCOSSearchedFPN, NASFCOSSearchedHead,
             NASFPNSearchedNeck):
    MODELS.register_module(module=_cls)

# mmdet 3.3's point/anchor generators call torch.meshgrid without ``indexing``; the result is the same
# ('ij' is the default), so silence exactly that deprecation notice in every detection run.
warnings.filterwarnings("ignore", message=r"torch\.meshgrid: in an upcoming release", category=UserWarning)
