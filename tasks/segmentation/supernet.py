"""Segmentation pieces of a one-shot search over the Auto-DeepLab lattice (Liu et al., CVPR 2019).

The task-agnostic :class:`~densenas.evaluation.supernet.SupernetTrainer` trains the supernet with
``seg_loss`` (pixel-wise cross entropy) and scores it after every epoch with :func:`seg_score_fn`.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from .losses import confusion_matrix, resize_logits, seg_metrics, seg_reward

Split = tuple[Tensor, Tensor]
ScoreFn = Callable[[nn.Module, Split], tuple[float, dict[str, float]]]


def seg_score_fn(num_classes: int, batch_size: int = 8) -> ScoreFn:
    """Score of a segmentation supernet on a split: ``(seg_reward, {miou, fwiou, pixel_acc})``.

    Args:
        num_classes: classes of the labels (255 is ignored).
        batch_size: images per forward pass.
    """
    def score(supernet: nn.Module, val: Split) -> tuple[float, dict[str, float]]:
        was_training = supernet.training
        supernet.eval()
        device = next(supernet.parameters()).device
        conf = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        try:
            with torch.no_grad():  # the confusion matrix is summed where the supernet is, read once
                for i in range(0, len(val[0]), batch_size):
                    x, y = val[0][i:i + batch_size].to(device), val[1][i:i + batch_size].to(device)
                    pred = resize_logits(supernet(x), y.shape[-2:]).argmax(1)
                    conf += confusion_matrix(pred, y, num_classes)
        finally:
            supernet.train(was_training)
        metrics = seg_metrics(conf.cpu())
        return seg_reward(metrics), metrics

    return score
