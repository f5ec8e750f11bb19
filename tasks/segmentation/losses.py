"""Semantic segmentation task: loss, knowledge distillation, metrics and the search reward.

The reward is the one of Nekrasov et al. (CVPR 2019, "Fast Neural Architecture Search of Compact
Semantic Segmentation Models via Auxiliary Cells"): the geometric mean of mean IoU, frequency-weighted
IoU and pixel accuracy, all computed from one confusion matrix over the validation set.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = 255


def resize_logits(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinearly upsample logits to the label size (no-op when sizes already match)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def seg_loss(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Pixel-wise cross entropy on logits upsampled to the label resolution."""
    return F.cross_entropy(resize_logits(logits, labels.shape[-2:]), labels, ignore_index=ignore_index)


def kd_loss(student: Tensor, teacher: Tensor, labels: Tensor | None = None,
            temperature: float = 1.0, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Pixel-wise KL(teacher || student) of temperature-softened class distributions (Hinton et al.).

    Both logits are brought to the teacher's resolution; pixels labelled ``ignore_index`` are skipped.
    """
    student = resize_logits(student, teacher.shape[-2:])
    t = temperature
    kl = F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), reduction="none",
                  log_target=True).sum(1) * (t * t)
    if labels is not None:
        lab = labels
        if tuple(lab.shape[-2:]) != tuple(kl.shape[-2:]):
            lab = F.interpolate(lab[:, None].float(), size=kl.shape[-2:], mode="nearest")[:, 0].long()
        # a weighted mean, not kl[mask].mean() behind an `if mask.any()`: boolean indexing and the test both
        # wait for the GPU, every training step (the same value up to the summation order)
        mask = (lab != ignore_index).to(kl.dtype)
        return (kl * mask).sum() / mask.sum().clamp(min=1.0)
    return kl.mean()


def confusion_matrix(pred: Tensor, labels: Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> Tensor:
    """``num_classes x num_classes`` int64 matrix, rows = ground truth, columns = prediction."""
    mask = labels != ignore_index
    idx = labels[mask].long() * num_classes + pred[mask].long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def seg_metrics(conf: Tensor) -> dict[str, float]:
    """mIoU, frequency-weighted IoU and pixel accuracy from a confusion matrix.

    Classes absent from both ground truth and prediction are left out of the mean IoU (as mmseg does
    with NaN IoUs); fwIoU weights each class's IoU by its ground-truth frequency.
    """
    conf = conf.double()
    tp = conf.diag()
    gt = conf.sum(1)
    pr = conf.sum(0)
    union = gt + pr - tp
    total = conf.sum()
    present = union > 0
    iou = torch.where(present, tp / union.clamp(min=1), torch.zeros_like(tp))
    miou = float(iou[present].mean()) if present.any() else 0.0
    fwiou = float((gt / total.clamp(min=1) * iou).sum())
    acc = float(tp.sum() / total.clamp(min=1))
    return {"miou": miou, "fwiou": fwiou, "pixel_acc": acc}


#: ``task.reward`` of a segmentation search: the paper's geometric mean, or one of its three metrics alone
REWARDS = ("geomean", "miou", "fwiou", "pixel_acc")


def seg_reward(metrics: dict[str, float], kind: str = "geomean") -> float:
    """The reward of a candidate's val metrics: ``"geomean"``, the geometric mean of mIoU, fwIoU and pixel
    accuracy (Nekrasov et al. 2019), or one of those metrics alone (``"miou"``, ``"fwiou"``, ``"pixel_acc"``)."""
    if kind != "geomean":
        return float(metrics[kind])
    vals = [max(metrics[k], 0.0) for k in ("miou", "fwiou", "pixel_acc")]
    return float(math.prod(vals) ** (1.0 / 3.0))
