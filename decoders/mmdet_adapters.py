"""Thin mmdet adapters for the NAS-FCOS decoder (neck and head) and the MobileNetV2 backbone.

After Wang, Gao, Chen, Wang, Tian, Shen, "NAS-FCOS: Fast Neural Architecture Search for Object Detection"
(CVPR 2020). Registered in ``mmdet.registry.MODELS`` by :mod:`densenas.tasks.detection.mm`:

* neck ``NASFCOSSearchedFPN``: a :class:`~densenas.decoders.nasfcos_ops.NASFCOSFPN` built from an arch
  holding ``fpn.*`` decisions (an ``nasfcos_fpn`` or joint ``nasfcos`` arch; ``Arch``, its ``to_dict()``,
  or a JSON path). Input: the backbone tuple (levels from ``start_level`` on, the last three at strides
  8/16/32); output: a tuple of ``num_outs`` maps P3..P7 with ``out_channels`` channels.
* head ``NASFCOSSearchedHead``: mmdet's ``FCOSHead`` whose ``cls_convs`` / ``reg_convs`` are the searched
  :class:`~densenas.decoders.nasfcos_ops.HeadTower` s (``head.*`` decisions; shared layers are single
  modules used at every level, the others have one copy per level). The searched layers always use
  GroupNorm (``norm_cfg``, ``conv_cfg``, ``stacked_convs`` and ``dcn_on_last_conv`` are ignored).
* backbone ``DenseNASBackbone`` (any :mod:`densenas.backbones` entry; also registered there).

Use from a config with ``custom_imports=dict(imports=["densenas.tasks.detection.mm"],
allow_failed_imports=False)``; :func:`nasfcos_detector_cfg` writes the whole FCOS model dict.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import Tensor

try:
    from mmengine.config import ConfigDict
    from mmengine.model import BaseModule
    from mmdet.models.dense_heads.fcos_head import FCOSHead
    from mmdet.models.utils import multi_apply
except ImportError as e:  # pragma: no cover - exercised only without the OpenMMLab stack
    raise ImportError("densenas.decoders.mmdet_adapters needs mmengine and mmdet 3.x; "
                      "run `bash tools/install.sh`") from e

from densenas.backbones import backbone_shapes
from densenas.decoders.nasfcos import ArchLike, as_arch, check_fpn, check_head, fpn_part, head_part
from densenas.decoders.nasfcos_ops import HeadTower, NASFCOSFPN
from densenas.space import ShapeSpec

class NASFCOSSearchedFPN(BaseModule):
    """mmdet neck: the searched NAS-FCOS FPN.

    Args:
        arch: arch with ``fpn.*`` decisions (``Arch``, ``to_dict()`` dict, or JSON path).
        in_channels: channels of every backbone output.
        out_channels: FPN width.
        num_outs: pyramid levels returned (5: P3..P7).
        start_level: first backbone output used (e.g. 1 to drop C2 from a 4-level backbone).
        in_strides: strides of the used levels (default: doubling, ending at 32).
        init_cfg: mmengine init config (default ``None``: PyTorch's initialisation).
    """

    def __init__(self, arch: ArchLike, in_channels: Sequence[int], out_channels: int, num_outs: int = 5,
                 start_level: int = 0, in_strides: Sequence[int] | None = None,
                 init_cfg: dict | list | None = None):
        super().__init__(init_cfg)
        channels = [int(c) for c in in_channels][start_level:]
        m = len(channels)
        strides = [32 // 2 ** (m - 1 - i) for i in range(m)] if in_strides is None else list(in_strides)
        shapes = [ShapeSpec(c, int(s)) for c, s in zip(channels, strides, strict=True)]
        self.arch = fpn_part(as_arch(arch))
        self.start_level, self.num_outs = int(start_level), int(num_outs)
        self.fpn = NASFCOSFPN(check_fpn(self.arch, m), shapes, int(out_channels), self.num_outs)

    @property
    def strides(self) -> list[int]:
        """Stride of every output level."""
        return list(self.fpn.strides)

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """P3..P(2 + num_outs) from the backbone outputs."""
        return tuple(self.fpn(list(inputs)[self.start_level:]))


class NASFCOSSearchedHead(FCOSHead):
    """mmdet FCOS head with the searched, partially shared towers.

    Args:
        num_classes: classes (without background).
        in_channels: channels of the pyramid features.
        arch: arch with ``head.*`` decisions (``Arch``, ``to_dict()`` dict, or JSON path).
        shared_position: which layers are shared across levels: ``"last"`` (authors' code) or ``"first"``.
        **kwargs: the other ``FCOSHead`` arguments (``feat_channels``, ``strides``, losses, ...).
    """

    def __init__(self, num_classes: int, in_channels: int, arch: ArchLike, shared_position: str = "last",
                 **kwargs: Any):
        self.arch = head_part(as_arch(arch))  # plain attributes may be set before Module.__init__
        self.tower_ops, self.num_shared = check_head(self.arch)
        self.shared_position = shared_position
        super().__init__(num_classes, in_channels, **kwargs)

    def _tower(self) -> HeadTower:
        return HeadTower(self.tower_ops, self.num_shared, len(self.strides), self.feat_channels,
                         in_channels=self.in_channels, shared_position=self.shared_position)

    def _init_cls_convs(self) -> None:
        """Searched classification tower (``forward_single`` calls it with the level index)."""
        self.cls_convs = self._tower()

    def _init_reg_convs(self) -> None:
        """Searched regression tower."""
        self.reg_convs = self._tower()

    def forward(self, x: tuple[Tensor, ...]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Class scores, box predictions and centerness per level (as ``FCOSHead.forward``)."""
        if len(x) != len(self.strides):
            raise ValueError(f"head built for {len(self.strides)} levels, got {len(x)} feature maps")
        return multi_apply(self.forward_single, x, self.scales, self.strides, list(range(len(x))))

    def forward_single(self, x: Tensor, scale: Any, stride: int, level: int = 0  # type: ignore[override]
                       ) -> tuple[Tensor, Tensor, Tensor]:
        """One level: the level's towers, then FCOS's predictors and box scaling.

        Args:
            x: pyramid feature of this level.
            scale: the level's learnable ``Scale``.
            stride: the level's stride (used when ``norm_on_bbox``).
            level: pyramid level index (selects the unshared layers).

        Returns:
            ``(cls_score, bbox_pred, centerness)``.
        """
        cls_feat = self.cls_convs(x, level)
        reg_feat = self.reg_convs(x, level)
        cls_score = self.conv_cls(cls_feat)
        centerness = self.conv_centerness(reg_feat if self.centerness_on_reg else cls_feat)
        bbox_pred = scale(self.conv_reg(reg_feat)).float()
        if self.norm_on_bbox:
            bbox_pred = bbox_pred.clamp(min=0)
            if not self.training:
                bbox_pred = bbox_pred * stride
        else:
            bbox_pred = bbox_pred.exp()
        return cls_score, bbox_pred, centerness


def nasfcos_detector_cfg(fpn_arch: ArchLike, head_arch: ArchLike, num_classes: int, *,
                         out_indices: Sequence[int] = (6, 13, 17), in_channels: Sequence[int] | None = None,
                         width: int = 128, head_width: int | None = None, pretrained: bool = True,
                         shared_position: str = "last", backbone: Mapping[str, Any] | None = None,
                         losses: Mapping[str, Any]) -> ConfigDict:
    """The mmdet model dict of an FCOS detector: a densenas backbone, searched FPN, searched head.

    Args:
        fpn_arch: arch with ``fpn.*`` decisions.
        head_arch: arch with ``head.*`` decisions.
        num_classes: classes.
        out_indices: MobileNetV2 blocks returned (default: strides 8, 16, 32).
        in_channels: channels of the backbone outputs (default: read off the backbone's feature shapes,
            :func:`densenas.backbones.backbone_shapes`).
        width: FPN width.
        head_width: head width (default ``width``).
        pretrained: load the offline ImageNet backbone weights.
        shared_position: see :class:`NASFCOSSearchedHead`.
        backbone: a :mod:`densenas.backbones` config (default: MobileNetV2 with ``out_indices`` and
            ``pretrained``); ``in_channels``, when given, must be its channels.
        losses: the FCOS head's ``loss_cls`` / ``loss_bbox`` / ``loss_centerness``, from the task
            (``densenas.tasks.detection.losses``): the adapters hold no loss.

    Returns:
        A model config for ``mmdet.registry.MODELS.build`` (a ``ConfigDict``, as mmdet's heads read
        ``test_cfg`` by attribute; archs stored as JSON-able dicts).
    """
    bb = dict(backbone) if backbone is not None else dict(type="mobilenet_v2", out_indices=tuple(out_indices),
                                                           pretrained=pretrained)
    if in_channels is None:  # from the backbone's feature info, never hard-coded
        in_channels = [s.channels for s in backbone_shapes(bb).values()]
    return ConfigDict(
        type="FCOS",
        data_preprocessor=dict(type="DetDataPreprocessor", mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32),
        backbone=dict(type="DenseNASBackbone", backbone=bb),
        neck=dict(type="NASFCOSSearchedFPN", arch=fpn_part(as_arch(fpn_arch)).to_dict(),
                  in_channels=list(in_channels), out_channels=width, num_outs=5),
        bbox_head=dict(type="NASFCOSSearchedHead", arch=head_part(as_arch(head_arch)).to_dict(),
                       num_classes=num_classes, in_channels=width,
                       feat_channels=width if head_width is None else head_width,
                       strides=[8, 16, 32, 64, 128], shared_position=shared_position,
                       **{k: dict(v) for k, v in losses.items()}),
        test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.6),
                      max_per_img=100))
