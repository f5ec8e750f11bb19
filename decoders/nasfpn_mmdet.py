"""mmdet adapter for the NAS-FPN neck found in :class:`~densenas.decoders.nasfpn.NASFPNSpace`.

After Ghiasi, Lin, Le, "NAS-FPN: Learning Scalable Feature Pyramid Architecture for Object Detection"
(CVPR 2019). Registered in ``mmdet.registry.MODELS`` by :mod:`densenas.tasks.detection.mm`:

* neck ``NASFPNSearchedNeck``: a :class:`~densenas.decoders.nasfpn.NASFPNNeck` built from an arch
  (``Arch``, its ``to_dict()`` form, or a path to its JSON). Input: the backbone tuple (from
  ``start_level`` on: C3..C5 at strides 8/16/32 by default); output: a tuple of ``num_outs`` maps P3..P7
  (strides 8..128) with ``out_channels`` channels, the found block stacked ``stack`` times.
* backbone ``DenseNASBackbone`` (any :mod:`densenas.backbones` entry; also registered there).

:func:`nasfpn_model_dict` writes the ``model=dict(...)`` of a RetinaNet or FCOS detector on the
pretrained MobileNetV2 with this neck (for the exporter and ``tools/train.py``); configs need
:data:`CUSTOM_IMPORTS`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from torch import Tensor

try:
    from mmengine.model import BaseModule
except ImportError as e:  # pragma: no cover - exercised only without the OpenMMLab stack
    raise ImportError("densenas.decoders.nasfpn_mmdet needs mmengine and mmdet 3.x; "
                      "run `bash tools/install.sh`") from e

from densenas.arch import Arch, as_arch
from densenas.backbones import named_shapes
from densenas.decoders.nasfcos_ops import gn_groups
from densenas.decoders.nasfpn import NASFPNNeck, space_for_arch
from densenas.space import ShapeSpec


MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
CUSTOM_IMPORTS = dict(imports=["densenas.tasks.detection.mm"], allow_failed_imports=False)
#: ``features`` blocks of torchvision's MobileNetV2 ending the stride-8/16/32 stages (C3, C4, C5)
MOBILENET_C3_C5 = (6, 13, 17)
DETECTORS = ("retinanet", "fcos")
ArchLike = Arch | Mapping[str, Any] | str | Path


class NASFPNSearchedNeck(BaseModule):
    """mmdet neck: the searched NAS-FPN.

    Args:
        arch: the arch (``Arch``, ``to_dict()`` dict, or JSON path) of a ``nasfpn`` space.
        in_channels: channels of every backbone output.
        out_channels: pyramid width ``C``.
        stack: how many times the found block is stacked.
        num_outs: pyramid levels returned (5: P3..P7).
        start_level: first backbone output used (e.g. 1 to drop C2 from a 4-level backbone).
        in_strides: strides of the used backbone levels (default 8, 16, 32, ...).
        init_cfg: mmengine init config (default ``None`` keeps the neck's own initialisation).
    """

    def __init__(self, arch: ArchLike, in_channels: Sequence[int], out_channels: int = 64, stack: int = 1,
                 num_outs: int = 5, start_level: int = 0, in_strides: Sequence[int] | None = None,
                 init_cfg: dict | list | None = None):
        super().__init__(init_cfg)
        channels = [int(c) for c in in_channels][start_level:]
        strides = [8 * 2 ** i for i in range(len(channels))] if in_strides is None else \
            [int(s) for s in in_strides]
        if len(strides) != len(channels) or strides[0] <= 0 or strides[0] & (strides[0] - 1):
            raise ValueError(f"in_strides {strides} must be powers of two, one per used input {channels}")
        first = int(math.log2(strides[0]))
        self.arch = as_arch(arch)
        self.space = space_for_arch(self.arch, int(out_channels), int(stack),
                                    tuple(range(first, first + int(num_outs))))
        self.start_level = int(start_level)
        self.neck: NASFPNNeck = self.space.build(
            self.arch, named_shapes([ShapeSpec(c, s) for c, s in zip(channels, strides)]))

    @property
    def strides(self) -> list[int]:
        """Stride of every output level."""
        return self.neck.strides

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """P3..P7 from the backbone outputs (those before ``start_level`` are ignored)."""
        return self.neck(list(inputs)[self.start_level:])


def _head(detector: str, num_classes: int, channels: int, feat_channels: int, stacked_convs: int,
          strides: list[int], losses: Mapping[str, Any]) -> dict[str, Any]:
    """A RetinaNet / FCOS head config; its ``loss_*`` come from the task (``losses``)."""
    common = dict(num_classes=num_classes, in_channels=channels, stacked_convs=stacked_convs,
                  feat_channels=feat_channels, **{k: dict(v) for k, v in losses.items()})
    if detector == "retinanet":
        return dict(type="RetinaHead", **common,
                    anchor_generator=dict(type="AnchorGenerator", octave_base_scale=4, scales_per_octave=3,
                                          ratios=[0.5, 1.0, 2.0], strides=strides),
                    bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4))
    ranges = [(-1, 64)] + [(64 * 2 ** i, 128 * 2 ** i) for i in range(len(strides) - 2)]
    ranges.append((ranges[-1][1], 100000000))
    return dict(type="FCOSHead", **common, strides=strides, regress_ranges=tuple(ranges[:len(strides)]),
                norm_cfg=dict(type="GN", num_groups=gn_groups(feat_channels), requires_grad=True))


def nasfpn_model_dict(arch: ArchLike, num_classes: int, detector: str = "retinanet", *,
                      in_channels: Sequence[int] | None = None, out_channels: int = 64, stack: int = 1,
                      pretrained: bool = True, out_indices: Sequence[int] = MOBILENET_C3_C5,
                      feat_channels: int | None = None, stacked_convs: int = 4, num_outs: int = 5,
                      pad_size_divisor: int | None = None, backbone: Mapping[str, Any] | None = None,
                      losses: Mapping[str, Any]) -> dict[str, Any]:
    """mmdet ``model`` config: ``DenseNASBackbone`` + ``NASFPNSearchedNeck`` + a RetinaNet/FCOS head.

    Args:
        arch: the found ``nasfpn`` arch.
        num_classes: object classes.
        detector: ``"retinanet"`` (anchor-based, focal + L1 loss) or ``"fcos"`` (anchor-free, GN head).
        in_channels: channels of the backbone outputs; default measured on MobileNetV2.
        out_channels: pyramid width ``C``.
        stack: how many times the found block is stacked.
        pretrained: load the offline ImageNet weights into the backbone.
        out_indices: MobileNetV2 ``features`` blocks returned (default C3..C5, strides 8/16/32).
        feat_channels: head width (default ``out_channels``).
        stacked_convs: convs per head tower.
        num_outs: pyramid levels (5: P3..P7).
        pad_size_divisor: batch padding (default ``2**`` the coarsest level, so every level divides).
        backbone: a :mod:`densenas.backbones` config (default: MobileNetV2 with ``out_indices`` and
            ``pretrained``).
        losses: the head's ``loss_*`` configs, from the task (``densenas.tasks.detection.losses``).

    Returns:
        The ``model`` dict, plain ``dict`` s for dumping into a config (the config also needs
        :data:`CUSTOM_IMPORTS`); build it directly with ``MODELS.build(ConfigDict(model))``, as mmdet's
        heads read ``test_cfg`` by attribute.

    Raises:
        InvalidArch: the arch is not a valid NAS-FPN arch (names the field).
        ValueError: an unknown ``detector``.
    """
    if detector not in DETECTORS:
        raise ValueError(f"detector {detector!r}: use one of {list(DETECTORS)}")
    arch = as_arch(arch)
    space = space_for_arch(arch, out_channels, stack, tuple(range(3, 3 + num_outs)))
    space.check(arch)  # fail here, naming the field, rather than when mmdet builds the model
    from densenas.backbones import backbone_shapes

    bb = dict(backbone) if backbone is not None else dict(type="mobilenet_v2", out_indices=tuple(out_indices),
                                                           pretrained=pretrained)
    if in_channels is None:  # from the backbone's feature info
        in_channels = [s.channels for s in backbone_shapes(bb).values()]
    strides = [2 ** lv for lv in space.levels]
    model = dict(
        type="RetinaNet" if detector == "retinanet" else "FCOS",
        data_preprocessor=dict(type="DetDataPreprocessor", mean=MEAN, std=STD, bgr_to_rgb=True,
                               pad_size_divisor=pad_size_divisor or strides[-1]),
        backbone=dict(type="DenseNASBackbone", backbone=bb),
        neck=dict(type="NASFPNSearchedNeck", arch=arch.to_dict(), in_channels=[int(c) for c in in_channels],
                  out_channels=out_channels, stack=stack, num_outs=num_outs),
        bbox_head=_head(detector, num_classes, out_channels, feat_channels or out_channels,
                        stacked_convs, strides, losses),
        test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5),
                      max_per_img=100))
    if detector == "retinanet":
        model["train_cfg"] = dict(
            assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                          ignore_iof_thr=-1),
            sampler=dict(type="PseudoSampler"), allowed_border=-1, pos_weight=-1, debug=False)
    return model
