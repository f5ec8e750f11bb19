"""The found decoder as an mmpose heatmap head, and the proxy set's dataset with head sizes.

* ``AuxCellHeatmapHead``: an aux-cell decoder (Nekrasov et al., CVPR 2019) with ``out_channels = K``, on
  every backbone level, as a top-down heatmap head of mmpose's ``TopdownPoseEstimator``. It is mmpose's
  ``HeatmapHead`` (Xiao et al., ECCV 2018: ``KeypointMSELoss`` with target weights, the codec's ``decode``,
  flip test, ``acc_pose``) with the deconvolution layers replaced by the decoder, whose output is resized
  bilinearly to the heatmap size; training adds ``loss_aux<i>`` (``aux_weight`` times the same loss) per
  auxiliary head.
* ``CocoHeadSizeDataset``: mmpose's ``CocoDataset`` that also carries each annotation's ``head_size`` (the
  proxy keypoint set writes one) to the data sample, for ``PCKAccuracy(norm_item='head')`` (PCKh).

Registered in mmpose's registries by :mod:`.mm`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmpose.datasets.datasets.body.coco_dataset import CocoDataset
from mmpose.models.heads.heatmap_heads.heatmap_head import HeatmapHead
from torch import Tensor

from densenas.arch import Arch, as_arch
from densenas.backbones import named_shapes
from densenas.decoders.auxcell import space_for_arch
from densenas.space import ShapeSpec, dense_map_forward, export_space_class, space_from_section


def dense_map_space(space: Mapping[str, Any], arch: Arch, num_classes: int, aux: bool) -> Any:
    """The ``dense_map`` space of a search's ``space`` section (``type`` + settings), checked against ``arch``."""
    cls = export_space_class(arch, {"type": dict(space).get("type")})
    if getattr(cls, "output_kind", "") != "dense_map":
        raise ValueError(f"space {cls.name!r} outputs {getattr(cls, 'output_kind', '') or 'an undeclared kind'!r}: "
                         "a heatmap head needs a 'dense_map' space")
    return space_from_section(space, arch, num_classes, aux=aux)


class AuxCellHeatmapHead(HeatmapHead):
    """mmpose ``HeatmapHead`` whose layers are a found aux-cell decoder, or the found decoder of any space
    whose output kind is ``dense_map`` (``space``: e.g. a template network, Nekrasov et al., WACV 2020).

    Args:
        arch: the decoder arch (``Arch``, its ``to_dict()`` form, or a JSON path).
        space: the search's ``space`` section (``type`` and settings) for an arch of another ``dense_map``
            space than aux-cell; built through the space plugins with ``num_classes = out_channels``.
        in_channels: channels of every backbone level (finest first).
        out_channels: keypoints ``K``.
        heatmap_size: ``(w, h)`` of the targets (the codec's); default: the decoder's output size.
        channels: decoder width.
        in_strides: strides of the levels (default ``4, 8, 16, ...``).
        aux: build the auxiliary heads; aux_weight: their loss weight.
        loss, decoder, init_cfg: as mmpose's ``HeatmapHead`` (``decoder``: the codec).
    """

    def __init__(self, arch: Arch | Mapping[str, Any] | str | Path, in_channels: Sequence[int], out_channels: int,
                 heatmap_size: Sequence[int] | None = None, channels: int = 48,
                 in_strides: Sequence[int] | None = None, aux: bool = True, aux_weight: float = 0.4,
                 loss: dict = dict(type="KeypointMSELoss", use_target_weight=True), decoder: dict | None = None,
                 init_cfg: Any = None, space: Mapping[str, Any] | None = None):
        # no deconvolutions, convs or final layer of HeatmapHead's own: the found decoder replaces them
        super().__init__(list(in_channels), out_channels, deconv_out_channels=None, conv_out_channels=None,
                         final_layer=None, loss=loss, decoder=decoder, init_cfg=init_cfg or [])
        self.arch = as_arch(arch)
        if space is None:
            self.space = space_for_arch(self.arch, int(out_channels), width=int(channels),
                                        num_inputs=len(self.in_channels), aux=aux)
        else:
            self.space = dense_map_space(space, self.arch, int(out_channels), aux)
        strides = list(in_strides) if in_strides is not None else [2 ** (i + 2) for i in range(len(self.in_channels))]
        shapes = named_shapes([ShapeSpec(int(c), int(s)) for c, s in zip(self.in_channels, strides, strict=True)])
        self.decoder_net = self.space.build(self.arch, shapes)
        self.heatmap_size = None if heatmap_size is None else (int(heatmap_size[0]), int(heatmap_size[1]))
        self.aux_weight = float(aux_weight)

    @property
    def aux_heads(self) -> torch.nn.Module:
        """The training-only auxiliary heads (left out of the deployed parameter count)."""
        return self.decoder_net.aux_heads

    def _resize(self, x: Tensor) -> Tensor:
        if self.heatmap_size is None:
            return x
        w, h = self.heatmap_size
        return x if tuple(x.shape[-2:]) == (h, w) else F.interpolate(x, size=(h, w), mode="bilinear",
                                                                     align_corners=False)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        """Heatmaps ``N x K x h x w`` from every backbone level (auxiliary heads not run)."""
        return self._resize(dense_map_forward(self.decoder_net, list(feats), False)[0])

    def loss(self, feats: Sequence[Tensor], batch_data_samples: Any, train_cfg: Mapping[str, Any] = {}
             ) -> dict[str, Tensor]:
        """``loss_kpt`` and ``acc_pose`` as mmpose's ``HeatmapHead.loss`` computes them, plus
        ``loss_aux<i>`` (``aux_weight`` times the same loss) per auxiliary head."""
        from mmpose.evaluation.functional import pose_pck_accuracy
        from mmpose.utils.tensor_utils import to_numpy

        main, aux = dense_map_forward(self.decoder_net, list(feats), True)
        pred = self._resize(main)
        gt = torch.stack([d.gt_fields.heatmaps for d in batch_data_samples])
        weights = torch.cat([d.gt_instance_labels.keypoint_weights for d in batch_data_samples])
        losses = {"loss_kpt": self.loss_module(pred, gt, weights)}
        for i, a in enumerate(aux):
            losses[f"loss_aux{i}"] = self.aux_weight * self.loss_module(self._resize(a), gt, weights)
        if train_cfg.get("compute_acc", True):
            _, acc, _ = pose_pck_accuracy(output=to_numpy(pred), target=to_numpy(gt), mask=to_numpy(weights) > 0)
            losses["acc_pose"] = torch.tensor(acc, device=gt.device)
        return losses


class CocoHeadSizeDataset(CocoDataset):
    """mmpose's ``CocoDataset`` with each annotation's ``head_size`` (when present) in the data info,
    packed by ``PackPoseInputs`` into ``gt_instances.head_size`` for PCKh."""

    def parse_data_info(self, raw_data_info: dict) -> dict | None:
        info = super().parse_data_info(raw_data_info)
        if info is not None and "head_size" in raw_data_info["raw_ann_info"]:
            info["head_size"] = np.array([raw_data_info["raw_ann_info"]["head_size"]], np.float32).reshape(1, 1)
        return info
