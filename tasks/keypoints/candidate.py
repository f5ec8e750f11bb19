"""Keypoint candidates and targets for the proxy trainer (:mod:`densenas.evaluation.proxy`).

A decoder of a segmentation space (Nekrasov et al., CVPR 2019) with ``num_classes = K`` output channels
is a top-down heatmap head (Xiao et al., "Simple Baselines for Human Pose Estimation and Tracking", ECCV
2018): its logits are bilinearly resized to the heatmap size (input / 4) and trained with mmpose's
``KeypointMSELoss`` weighted by the codec's target weights; each auxiliary cell's output gets the same loss
(``loss_aux<i>``). ``predict`` decodes the heatmaps with mmpose's ``MSRAHeatmap`` codec and maps the
keypoints back to image coordinates.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densenas.arch import Arch
from densenas.evaluation.common import Diverged
from densenas.evaluation.device_loop import DeviceCopies
from densenas.space import SearchSpace, ShapeSpec
from densenas.tasks.segmentation.candidate import split_outputs  # the decoders' (main, aux) outputs

from .metrics import decode_heatmaps, keypoint_metrics, keypoint_reward, to_image


def resize_heatmaps(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize of ``N x K x h x w`` outputs to ``size = (H, W)`` (no-op when equal)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class KptCandidate(nn.Module):
    """A decoder of a segmentation space as a top-down heatmap head for the proxy trainer.

    Args:
        decoder: takes the list of encoder features; returns ``K``-channel logits, or ``(logits, aux)`` in
            training mode.
        codec: mmpose's ``MSRAHeatmap`` (its ``heatmap_size`` is the target size; its ``decode`` predicts).
        input_size: the crop size ``(w, h)``.
    """

    def __init__(self, decoder: nn.Module, codec: Any, input_size: tuple[int, int]):
        super().__init__()
        from mmpose.models.losses import KeypointMSELoss

        self.decoder, self.codec, self.input_size = decoder, codec, tuple(input_size)
        self.heatmap_hw = (int(codec.heatmap_size[1]), int(codec.heatmap_size[0]))
        self.loss_fn = KeypointMSELoss(use_target_weight=True)

    @property
    def aux_heads(self) -> nn.Module | None:
        return getattr(self.decoder, "aux_heads", None)

    def forward(self, *feats: Tensor) -> Tensor:
        """Heatmaps at the heatmap size (eval mode: the deployed computation)."""
        out, _ = split_outputs(self.decoder(list(feats)))
        return resize_heatmaps(out, self.heatmap_hw)

    def loss(self, feats: Sequence[Tensor], batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``loss_kpt`` and one ``loss_aux<i>`` per auxiliary head (unweighted; the trainer weights aux)."""
        out, aux = split_outputs(self.decoder(list(feats)))
        target, weights = batch["heatmaps"], batch["weights"]
        losses = {"loss_kpt": self.loss_fn(resize_heatmaps(out, self.heatmap_hw), target, weights)}
        for i, a in enumerate(aux):
            losses[f"loss_aux{i}"] = self.loss_fn(resize_heatmaps(a, self.heatmap_hw), target, weights)
        return losses

    def predict(self, feats: Sequence[Tensor], batch: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """``(keypoints N x K x 2 in image coordinates, scores N x K)``.

        Raises:
            Diverged: non-finite heatmaps.
        """
        heat = self.forward(*feats).float()
        if not torch.isfinite(heat).all():
            raise Diverged("non-finite heatmaps at validation")
        kps, scores = decode_heatmaps(heat, self.codec)
        return to_image(kps, batch["centers"], batch["scales"], self.input_size), scores


def build_kpt_candidate(space: SearchSpace, arch: Arch, shapes: Mapping[str, ShapeSpec] | Sequence[ShapeSpec],
                        codec: Any, input_size: tuple[int, int]) -> KptCandidate:
    """:class:`KptCandidate` around ``space.build(arch, shapes)``."""
    return KptCandidate(space.build(arch, shapes), codec, input_size)


class KptTargets:
    """Heatmap targets and metric ground truth of the proxy splits (``data``: a :class:`.data.KptData`)."""

    def __init__(self, data: Any):
        self.data = data
        self.splits = {"train": data.train, "val": data.val}
        self._on = DeviceCopies()  # heatmaps and weights moved to the training device once

    def _split(self, split: str) -> Any:
        if split not in self.splits:
            raise KeyError(f"unknown split {split!r}; expected one of {sorted(self.splits)}")
        return self.splits[split]

    def batch(self, split: str, idx: Tensor, device: Any) -> dict[str, Any]:
        """``heatmaps``, ``weights`` (on ``device``) of persons ``idx`` and, outside ``"train"`` (where only the
        loss needs the batch, so the indices are not read on the host), their crop ``centers`` / ``scales``."""
        s = self._split(split)
        out = {"heatmaps": self._on(s.heatmaps, device)[idx], "weights": self._on(s.weights, device)[idx]}
        if split != "train":
            i = idx.cpu().numpy()
            out.update(centers=s.centers[i].astype(np.float64), scales=s.scales[i].astype(np.float64))
        return out

    def metrics(self, preds: list[tuple[np.ndarray, np.ndarray]], split: str) -> dict[str, float]:
        """PCKh@0.5/0.1 and COCO AP/AR (:func:`.metrics.keypoint_metrics`) of consecutive batches' predictions."""
        s = self._split(split)
        k = self.data.num_keypoints
        kps = np.concatenate([p[0] for p in preds]).reshape(-1, k, 2) if preds else np.zeros((0, k, 2))
        scores = np.concatenate([p[1] for p in preds]).reshape(-1, k) if preds else np.zeros((0, k))
        if len(kps) != len(s):
            raise ValueError(f"predictions cover {len(kps)} persons of split {split!r}, which has {len(s)}")
        return keypoint_metrics(kps, scores, s, self.data.sigmas)

    @staticmethod
    def reward(metrics: Mapping[str, float]) -> float:
        return keypoint_reward(dict(metrics))
