"""Monocular depth: output mapping, losses, metrics and the search reward.

* Output: ``depth = max_depth * sigmoid(logits)`` (as mmseg's ``VPDDepthHead``), bilinearly resized to the
  label size.
* Losses on valid pixels (label > 0): mmseg's ``SiLogLoss`` (Eigen et al., NIPS 2014, with lambda 0.5, the
  default, as mmseg computes it), or the reverse Huber ``berhu`` (Laina et al., 3DV 2016: L1 below
  ``c = 0.2 max |error|`` of the batch, scaled L2 above) or plain ``l1``.
* Metrics: exactly mmseg's ``DepthMetric`` (d1/d2/d3, abs_rel, sq_rel, rmse, rmse_log, log10, silog; its
  own ``_calc_all_metrics`` per image on the pixels its ``_get_eval_mask`` keeps, then averaged over images).
* Reward: ``sqrt(d1 / (1 + rmse))`` with RMSE in metres: in [0, 1], 1 only for a perfect prediction; it
  rewards the fraction of pixels within 25 % of the truth (scale-free) and penalises the absolute error
  (d1 alone ignores how wrong the other pixels are; rmse alone is dominated by far pixels).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

LOSSES = ("silog", "berhu", "l1")
VALID_EPS = 1e-6  # a label at or below this is invalid (NYU stores 0 where the sensor has no depth)


def to_depth(logits: Tensor, max_depth: float, size: tuple[int, int] | None = None) -> Tensor:
    """``max_depth * sigmoid(logits)``, bilinearly resized to ``size`` when given (after the sigmoid, as
    mmseg's ``VPDDepthHead.loss_by_feat`` resizes the depth map)."""
    depth = torch.sigmoid(logits.float()) * float(max_depth)
    if size is not None and tuple(depth.shape[-2:]) != tuple(size):
        depth = F.interpolate(depth, size=tuple(size), mode="bilinear", align_corners=False)
    return depth


@lru_cache(maxsize=1)
def _silog() -> torch.nn.Module:
    from mmseg.models.losses.silog_loss import SiLogLoss

    return SiLogLoss()


def berhu_loss(pred: Tensor, target: Tensor, threshold: float = 0.2) -> Tensor:
    """Reverse Huber loss on valid pixels (Laina et al. 2016); ``c = threshold * max |error|``."""
    valid = target > VALID_EPS
    if not valid.any():
        return pred.sum() * 0.0
    err = (pred - target)[valid].abs()
    c = (threshold * err.max().detach()).clamp(min=1e-6)
    return torch.where(err <= c, err, (err * err + c * c) / (2 * c)).mean()


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error on valid pixels."""
    valid = target > VALID_EPS
    if not valid.any():
        return pred.sum() * 0.0
    return (pred - target)[valid].abs().mean()


def depth_loss(pred: Tensor, target: Tensor, kind: str = "silog") -> Tensor:
    """The loss ``kind`` (one of :data:`LOSSES`) of depth ``pred`` against ``target`` (both N x 1 x H x W)."""
    if kind == "silog":
        return _silog()(pred, target)
    if kind == "berhu":
        return berhu_loss(pred, target)
    if kind == "l1":
        return l1_loss(pred, target)
    raise ValueError(f"depth loss {kind!r}: use one of {LOSSES}")


@lru_cache(maxsize=8)
def _metric(min_depth: float, max_depth: float):
    from mmseg.evaluation.metrics.depth_metric import DepthMetric

    return DepthMetric(min_depth_eval=min_depth, max_depth_eval=max_depth, prefix="depth")  # prefix: no log warning


def depth_metrics(pairs: Iterable[tuple[Tensor, Tensor]], min_depth: float = 1e-3,
                  max_depth: float = 10.0) -> dict[str, float]:
    """mmseg ``DepthMetric``'s figures over ``(gt, pred)`` depth maps of one image each (metres).

    Each image's pixels are those ``DepthMetric._get_eval_mask`` keeps (``min_depth < gt < max_depth``);
    predictions are clamped to at least ``min_depth`` (a sigmoid output can underflow to 0, whose log is
    -inf); an image without valid pixels is left out (mmseg would average a NaN in).

    Raises:
        ValueError: no image has a valid pixel.
    """
    metric = _metric(float(min_depth), float(max_depth))
    sums: dict[str, float] = {}
    n = 0
    for gt, pred in pairs:
        gt, pred = gt.squeeze().double(), pred.squeeze().double().clamp(min=min_depth)
        mask = metric._get_eval_mask(gt)
        if not mask.any():
            continue
        for k, v in metric._calc_all_metrics(gt[mask], pred[mask]).items():
            sums[k] = sums.get(k, 0.0) + v
        n += 1
    if n == 0:
        raise ValueError(f"no image has a valid depth pixel in ({min_depth}, {max_depth}) m")
    return {k: sums[k] / n for k in metric.metrics}


def depth_reward(metrics: Mapping[str, float]) -> float:
    """``sqrt(d1 / (1 + rmse))`` (RMSE in metres); 0 for a non-finite figure."""
    d1, rmse = float(metrics["d1"]), float(metrics["rmse"])
    if not (math.isfinite(d1) and math.isfinite(rmse)):
        return 0.0
    return math.sqrt(max(d1, 0.0) / (1.0 + max(rmse, 0.0)))
