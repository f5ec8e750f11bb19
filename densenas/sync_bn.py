"""Synchronous BatchNorm for data-parallel supernet training on CPU (gloo) and CUDA (:mod:`densenas.distributed`).

DARTS (Liu, Simonyan, Yang, ICLR 2019) trains BatchNorm layers in the supernet; split over processes, each
would normalise with its own shard's statistics and the step would differ from one process's. Here the
statistics are those of the global batch, so N processes take one process's steps (``torch.nn.SyncBatchNorm``
and mmcv's ``SyncBN`` refuse CPU tensors, hence our own).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .distributed import is_distributed

__all__ = ["sum_over_ranks", "SyncBatchNorm2d", "sync_batchnorm"]


class _SumOverRanks(torch.autograd.Function):
    """Differentiable sum over the ranks: the gradient of each rank's input is the sum of the ranks'
    output gradients (every rank's loss depends on the summed value). Our own: torch 2.14 deprecates
    ``torch.distributed.nn.all_reduce`` and its replacement is a private module."""

    @staticmethod
    def forward(ctx: Any, t: Tensor) -> Tensor:
        out = t.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def sum_over_ranks(t: Tensor) -> Tensor:
    """``t`` summed over every rank, differentiably (:class:`_SumOverRanks`); ``t`` itself in one process."""
    return _SumOverRanks.apply(t) if is_distributed() else t


class SyncBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics are those of the global batch, on CPU (gloo) and CUDA.

    Why our own: ``torch.nn.SyncBatchNorm`` and mmcv's ``SyncBN`` refuse CPU tensors. The mean and then the
    variance (two passes, as precise as one process's) are summed over the ranks with the autograd-aware
    :func:`sum_over_ranks`, whose backward sums the statistics' gradients over the ranks. Each
    rank must therefore back-propagate its *share-weighted* loss (``loss * share``) for the summed gradients
    to be those of the global batch's mean loss. Outside training, or in one process, it is ``BatchNorm2d``.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        dims = (0, 2, 3)
        count = x.new_tensor([x.numel() / x.shape[1]])
        first = sum_over_ranks(torch.cat([x.sum(dims), count]))
        n = first[-1]
        mean = first[:-1] / n
        centred = x - mean.view(1, -1, 1, 1)
        var = sum_over_ranks((centred * centred).sum(dims)) / n  # biased, what the batch is normalised with
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1).clamp(min=1)), alpha=m)
        y = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return y


def sync_batchnorm(module: nn.Module) -> int:
    """Replace every ``BatchNorm2d`` (subclasses included) under ``module`` by :class:`SyncBatchNorm2d`
    in place, keeping its parameter and buffer objects (optimisers and state-dict keys are unchanged).

    Returns:
        The number of layers replaced.
    """
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SyncBatchNorm2d):
                new = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                      child.track_running_stats)
                if child.affine:
                    new.weight, new.bias = child.weight, child.bias
                if child.track_running_stats:
                    new.running_mean, new.running_var = child.running_mean, child.running_var
                    new.num_batches_tracked = child.num_batches_tracked
                new.train(child.training)
                setattr(parent, name, new)
                count += 1
    return count
