"""OpenMMLab registrations of the depth task: the one module exported depth configs import
(``DenseNASBackbone`` comes from :mod:`densenas.tasks.mmseg_backbone`, shared with segmentation).

mmseg 1.2.2 estimates depth with ``DepthEstimator`` and its depth heads (``VPDDepthHead``): ``forward``
returns ``max_depth * sigmoid(out)``, ``loss_by_feat`` compares it (resized to the label) with
``gt_depth_map`` through ``loss_decode`` (``SiLogLoss``). Its other heads only segment, so this module makes
depth regressors of them the same way (:class:`DepthRegression`) and registers, once and without
``force=True``, in mmseg's ``MODELS``:

* ``DepthAuxCellHead`` / ``DepthTemplateHead``: the found decoders (Nekrasov et al., CVPR 2019 / WACV 2020)
  with one output channel; every auxiliary head's output is a depth map too, its loss weighted by
  ``aux_weight`` (``loss_aux<i>``);
* ``DepthDenseMapHead``: the found module of any ``dense_map`` space (a plugin's included), rebuilt from its
  search section (``DenseMapHead``'s arguments), regressing depth likewise;
* ``DepthFCNHead`` / ``DepthSepASPPHead``: mmseg's ``FCNHead`` and ``DepthwiseSeparableASPPHead``
  (DeepLabV3+) as hand-designed depth baselines;
* ``BerHuLoss`` / ``DepthL1Loss``: the alternative losses (mmseg has neither), used like ``SiLogLoss``.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from mmseg.models.decode_heads import DepthwiseSeparableASPPHead, FCNHead
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from torch import Tensor, nn

import densenas.tasks.mmseg_backbone  # noqa: F401  (DenseNASBackbone, shared with the segmentation task)
from densenas.decoders.mmseg_adapters import AuxCellHead, DenseMapHead, TemplateHead

from .losses import berhu_loss, l1_loss


class DepthRegression:
    """Mixin turning an mmseg decode head into a depth head (``VPDDepthHead``'s contract).

    Subclasses list it before the mm head (``class DepthXHead(DepthRegression, XHead)``, so its ``__init__``
    wraps the head's) and define :meth:`_raw` (the plain head's logits and auxiliary logits).
    """

    max_depth: float
    min_depth: float

    def __init__(self, *args: Any, max_depth: float = 10.0, min_depth: float = 1e-3, **kwargs: Any):
        """The mm head's own arguments (the next class in the MRO), one output channel by default, then the
        depth range. ``threshold`` is unused by depth; it is set so mmseg does not warn about binary seg."""
        kwargs.setdefault("num_classes", 1)
        kwargs.setdefault("threshold", 0.5)
        super().__init__(*args, **kwargs)
        self._init_depth(max_depth, min_depth)

    def _init_depth(self, max_depth: float, min_depth: float) -> None:
        if self.out_channels != 1:
            raise ValueError(f"{type(self).__name__}: a depth head has one output channel (num_classes=1), "
                             f"got {self.out_channels}")
        self.max_depth, self.min_depth = float(max_depth), float(min_depth)

    def _raw(self, inputs: Sequence[Tensor], with_aux: bool) -> tuple[Tensor, list[Tensor]]:
        raise NotImplementedError

    def _to_depth(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits) * self.max_depth

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        """Depth ``max_depth * sigmoid(logits)`` at the head's resolution (no auxiliary heads run)."""
        return self._to_depth(self._raw(inputs, False)[0])

    def loss(self, inputs: Sequence[Tensor], batch_data_samples: list, train_cfg: Any) -> dict[str, Tensor]:
        """``loss_decode`` terms on the depth map plus ``loss_aux<i>`` per auxiliary head."""
        out, aux = self._raw(inputs, True)
        losses = self.loss_by_feat(self._to_depth(out), batch_data_samples)
        for i, a in enumerate(aux):
            terms = self.loss_by_feat(self._to_depth(a), batch_data_samples)
            losses[f"loss_aux{i}"] = self.aux_weight * torch.stack(
                [v for k, v in terms.items() if k.startswith("loss")]).sum()
        return losses

    def loss_by_feat(self, pred_depth_map: Tensor, batch_data_samples: list) -> dict[str, Tensor]:
        """As ``VPDDepthHead.loss_by_feat``: the depth resized to ``gt_depth_map``, each ``loss_decode``."""
        gt = torch.stack([s.gt_depth_map.data for s in batch_data_samples], dim=0)
        pred = resize(pred_depth_map, size=gt.shape[2:], mode="bilinear", align_corners=self.align_corners)
        losses: dict[str, Tensor] = {}
        decoders = self.loss_decode if isinstance(self.loss_decode, nn.ModuleList) else [self.loss_decode]
        for loss_decode in decoders:
            value = loss_decode(pred, gt)
            losses[loss_decode.loss_name] = losses[loss_decode.loss_name] + value \
                if loss_decode.loss_name in losses else value
        return losses

    def predict_by_feat(self, seg_logits: Tensor, batch_img_metas: list[dict]) -> Tensor:
        """The depth resized to the input (``BaseDecodeHead.predict_by_feat``), at least ``min_depth``
        (a sigmoid that underflows to 0 would make the log metrics infinite)."""
        return super().predict_by_feat(seg_logits, batch_img_metas).clamp(min=self.min_depth)


class DepthAuxCellHead(DepthRegression, AuxCellHead):
    """The aux-cell decoder (``AuxCellHead``'s arguments) regressing depth; ``aux_weight`` weights
    ``loss_aux<i>``."""

    def _raw(self, inputs: Sequence[Tensor], with_aux: bool) -> tuple[Tensor, list[Tensor]]:
        return self.decoder.forward_with_aux(self._transform_inputs(inputs), with_aux=with_aux and self.decoder.has_aux)


class DepthTemplateHead(DepthRegression, TemplateHead):
    """The template network (``TemplateHead``'s arguments) regressing depth."""

    _raw = DepthAuxCellHead._raw


class DepthDenseMapHead(DepthRegression, DenseMapHead):
    """The module of any ``dense_map`` space (``DenseMapHead``'s arguments) regressing depth."""

    _raw = DenseMapHead._outputs


class DepthFCNHead(DepthRegression, FCNHead):
    """mmseg's ``FCNHead`` (Long et al., CVPR 2015) regressing depth."""

    def _raw(self, inputs: Sequence[Tensor], with_aux: bool) -> tuple[Tensor, list[Tensor]]:
        return FCNHead.forward(self, inputs), []


class DepthSepASPPHead(DepthRegression, DepthwiseSeparableASPPHead):
    """mmseg's ``DepthwiseSeparableASPPHead`` (DeepLabV3+, Chen et al., ECCV 2018) regressing depth."""

    def _raw(self, inputs: Sequence[Tensor], with_aux: bool) -> tuple[Tensor, list[Tensor]]:
        return DepthwiseSeparableASPPHead.forward(self, inputs), []


class BerHuLoss(nn.Module):
    """Reverse Huber loss on valid pixels (Laina et al., 3DV 2016), an mmseg ``loss_decode``."""

    def __init__(self, threshold: float = 0.2, loss_weight: float = 1.0, loss_name: str = "loss_berhu"):
        super().__init__()
        self.threshold, self.loss_weight, self._loss_name = float(threshold), float(loss_weight), loss_name

    def forward(self, pred: Tensor, target: Tensor, **kwargs: Any) -> Tensor:
        return self.loss_weight * berhu_loss(pred, target, self.threshold)

    @property
    def loss_name(self) -> str:
        return self._loss_name


class DepthL1Loss(nn.Module):
    """Mean absolute depth error on valid pixels, an mmseg ``loss_decode``."""

    def __init__(self, loss_weight: float = 1.0, loss_name: str = "loss_l1"):
        super().__init__()
        self.loss_weight, self._loss_name = float(loss_weight), loss_name

    def forward(self, pred: Tensor, target: Tensor, **kwargs: Any) -> Tensor:
        return self.loss_weight * l1_loss(pred, target)

    @property
    def loss_name(self) -> str:
        return self._loss_name


for _cls in (DepthAuxCellHead, DepthTemplateHead, DepthDenseMapHead, DepthFCNHead, DepthSepASPPHead, BerHuLoss,
             DepthL1Loss):
    MODELS.register_module(module=_cls)
