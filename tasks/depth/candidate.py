"""Depth candidates and targets for the proxy trainer (:mod:`densenas.evaluation.proxy`).

A decoder of any segmentation space built with one output channel (Nekrasov et al., CVPR 2019, transfer
their found decoders to NYUv2 depth this way) regresses ``max_depth * sigmoid(output)``; it is trained
with mmseg's ``SiLogLoss`` (or berHu / L1) on the valid pixels, the same loss on every auxiliary head's
output, and scored with mmseg ``DepthMetric``'s figures (:mod:`.losses`).

* :class:`DepthCandidate`: ``loss`` returns ``loss_depth`` and ``loss_aux0..``; ``predict`` the depth maps
  at the label size (clamped to ``min_depth``); ``forward(*feats)`` the deployed depth map.
* :class:`DepthTargets`: the depth labels of the proxy splits; ``batch`` and ``metrics``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from densenas.arch import Arch
from densenas.evaluation.common import Diverged
from densenas.evaluation.device_loop import DeviceCopies
from densenas.space import SearchSpace, ShapeSpec
from densenas.tasks.dense import split_outputs  # the decoders' (main, aux) outputs

from .losses import depth_loss, depth_metrics, to_depth


class DepthCandidate(nn.Module):
    """A one-channel decoder as a depth regressor.

    Args:
        decoder: takes the list of encoder features; returns logits, or ``(logits, aux_list)`` in training.
        max_depth: the sigmoid's range in metres.
        loss: ``silog`` (mmseg's SiLogLoss), ``berhu`` or ``l1``.
        min_depth: floor of predicted depths at validation.
    """

    def __init__(self, decoder: nn.Module, max_depth: float = 10.0, loss: str = "silog", min_depth: float = 1e-3):
        super().__init__()
        self.decoder, self.max_depth, self.loss_kind, self.min_depth = decoder, float(max_depth), loss, min_depth

    @property
    def aux_heads(self) -> nn.Module | None:
        """The decoder's training-only auxiliary heads (left out of the deployed parameter count)."""
        return getattr(self.decoder, "aux_heads", None)

    def forward(self, *feats: Tensor) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Depth in metres at the decoder's resolution (eval mode)."""
        out, aux = split_outputs(self.decoder(list(feats)))
        depth = to_depth(out, self.max_depth)
        return (depth, [to_depth(a, self.max_depth) for a in aux]) if aux else depth

    def loss(self, feats: Sequence[Tensor], batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Unweighted terms ``loss_depth`` and one ``loss_aux<i>`` per auxiliary output."""
        out, aux = split_outputs(self.decoder(list(feats)))
        target = batch["depth"]
        size = tuple(target.shape[-2:])
        losses = {"loss_depth": depth_loss(to_depth(out, self.max_depth, size), target, self.loss_kind)}
        for i, a in enumerate(aux):
            losses[f"loss_aux{i}"] = depth_loss(to_depth(a, self.max_depth, size), target, self.loss_kind)
        return losses

    def predict(self, feats: Sequence[Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        """Depth maps ``N x H x W`` (metres, on the CPU) at the label size.

        Raises:
            Diverged: non-finite outputs.
        """
        out, _ = split_outputs(self.decoder(list(feats)))
        if not torch.isfinite(out).all():
            raise Diverged("non-finite depth logits at validation")
        depth = to_depth(out, self.max_depth, tuple(batch["depth"].shape[-2:]))
        return depth.clamp(min=self.min_depth)[:, 0].cpu()


def build_depth_candidate(space: SearchSpace, arch: Arch, shapes: Mapping[str, ShapeSpec] | Sequence[ShapeSpec],
                          max_depth: float = 10.0, loss: str = "silog") -> DepthCandidate:
    """:class:`DepthCandidate` around ``space.build(arch, shapes)`` (a space built with one class)."""
    return DepthCandidate(space.build(arch, shapes), max_depth=max_depth, loss=loss)


class DepthTargets:
    """Depth labels of the proxy splits.

    Args:
        train_d, val_d: ``N x 1 x H x W`` depth in metres (0 = invalid) of the ``"train"`` / ``"val"`` images.
        min_depth, max_depth: the evaluation range of ``DepthMetric``.
    """

    def __init__(self, train_d: Tensor, val_d: Tensor, min_depth: float = 1e-3, max_depth: float = 10.0):
        self.depth = {"train": train_d, "val": val_d}
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self._on = DeviceCopies()  # depth maps moved to the training device once

    def _depth(self, split: str) -> Tensor:
        if split not in self.depth:
            raise KeyError(f"unknown split {split!r}; expected one of {sorted(self.depth)}")
        return self.depth[split]

    def batch(self, split: str, idx: Tensor, device: Any) -> dict[str, Tensor]:
        """``{"depth": N x 1 x H x W}`` of images ``idx``."""
        return {"depth": self._on(self._depth(split), device)[idx]}

    def metrics(self, preds: list[Tensor], split: str) -> dict[str, float]:
        """mmseg ``DepthMetric``'s figures from the predicted depth maps of consecutive batches."""
        gt = self._depth(split)
        flat = [p for batch in preds for p in batch]
        if len(flat) != len(gt):
            raise ValueError(f"predictions cover {len(flat)} images of split {split!r}, which has {len(gt)}")
        return depth_metrics(zip(gt, flat), self.min_depth, self.max_depth)
