"""mmsegmentation adapter for decoded Auto-DeepLab networks.

After Liu et al., "Auto-DeepLab: Hierarchical Neural Architecture Search for Semantic Image
Segmentation" (CVPR 2019): the found network is the stem plus one cell per layer along the decoded path,
followed by DeepLab's ASPP. This module registers, on import, the backbone ``AutoDeepLabBackbone`` with
mmseg's ``MODELS`` registry; the head is mmseg's own ``ASPPHead`` with dilations scaled to the backbone's
output stride. :func:`autodeeplab_model_dict` writes the ``model=dict(...)`` of such an
``EncoderDecoder`` for the exporter and ``tools/train.py``.

Use from a config with ``custom_imports=dict(imports=["densenas.tasks.segmentation.mm"],
allow_failed_imports=False)`` (:data:`CUSTOM_IMPORTS`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from torch import Tensor

try:
    from mmengine.model import BaseModule
except ImportError as e:  # pragma: no cover - exercised only without the OpenMMLab stack
    raise ImportError("densenas.decoders.autodeeplab_mmseg needs mmengine and mmsegmentation 1.x") from e

from densenas.arch import Arch, as_arch
from densenas.decoders.autodeeplab import space_for_arch

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
CUSTOM_IMPORTS = dict(imports=["densenas.tasks.segmentation.mm"], allow_failed_imports=False)
ArchLike = Arch | Mapping[str, Any] | str | Path


class AutoDeepLabBackbone(BaseModule):
    """Stem + cells of a decoded Auto-DeepLab arch; ``forward`` returns ``[last feature map]``.

    Args:
        arch: the arch (``Arch``, its ``to_dict()`` form, or a path to its JSON).
        filter_multiplier: ``F`` (block width ``F * s / 4`` at stride ``s``); the paper fine-tunes with
            20 / 48 after searching with 8.
        in_channels: image channels.
        stem_channels: stem width (default ``blocks * F``).
        init_cfg: mmengine initialisation config.

    Attributes:
        out_channels: channels of the returned feature map.
        out_stride: its stride.
    """

    def __init__(self, arch: ArchLike, filter_multiplier: int = 8, in_channels: int = 3,
                 stem_channels: int | None = None, init_cfg: dict | list | None = None):
        super().__init__(init_cfg=init_cfg)
        self.arch = as_arch(arch)
        space = space_for_arch(self.arch, num_classes=1, filter_multiplier=filter_multiplier,
                               stem_channels=stem_channels)
        self.features = space.build_features(self.arch, in_channels)
        self.out_channels = self.features.out_channels
        self.out_stride = self.features.out_stride

    def forward(self, x: Tensor) -> list[Tensor]:
        return [self.features(x)]


def aspp_dilations(out_stride: int) -> tuple[int, ...]:
    """DeepLab's ASPP dilations ``(1, 6, 12, 18)`` at stride 16, scaled to ``out_stride``."""
    return (1,) + tuple(max(1, d * 16 // out_stride) for d in (6, 12, 18))


def autodeeplab_model_dict(arch: ArchLike, num_classes: int, filter_multiplier: int = 8,
                           channels: int = 64, dropout_ratio: float = 0.1,
                           stem_channels: int | None = None, *, loss_decode: Mapping[str, Any]) -> dict[str, Any]:
    """mmseg ``EncoderDecoder`` model config: ``AutoDeepLabBackbone`` + ``ASPPHead``.

    Args:
        arch: the decoded arch.
        num_classes: classes.
        filter_multiplier: ``F`` of the backbone.
        channels: ASPP width.
        dropout_ratio: dropout before the classifier.
        stem_channels: stem width of the backbone (default ``blocks * F``).
        loss_decode: the head's loss config, from the segmentation task (the space holds no loss).

    Returns:
        The ``model`` dict (the config also needs :data:`CUSTOM_IMPORTS`).
    """
    arch = as_arch(arch)
    space = space_for_arch(arch, num_classes, filter_multiplier=filter_multiplier,
                           stem_channels=stem_channels)
    space.check(arch)
    level = space.path(arch)[-1]
    out_channels = space.channels(0, (4, 8, 16, 32).index(level))
    return dict(
        type="EncoderDecoder",
        data_preprocessor=dict(type="SegDataPreProcessor", mean=MEAN, std=STD, bgr_to_rgb=True, pad_val=0,
                               seg_pad_val=255, size=None, size_divisor=32),
        backbone=dict(type="AutoDeepLabBackbone", arch=arch.to_dict(), filter_multiplier=filter_multiplier,
                      stem_channels=stem_channels),
        decode_head=dict(type="ASPPHead", in_channels=out_channels, in_index=0, channels=channels,
                         dilations=aspp_dilations(level), dropout_ratio=dropout_ratio,
                         num_classes=num_classes, norm_cfg=dict(type="BN", requires_grad=True),
                         align_corners=False, loss_decode=dict(loss_decode)),
        train_cfg=dict(), test_cfg=dict(mode="whole"))
