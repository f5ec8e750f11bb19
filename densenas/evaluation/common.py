"""Pieces every candidate trainer shares: budgets, divergence, failure reasons, the early-stopping
running mean of Nekrasov et al. (CVPR 2019) and frozen BatchNorm statistics."""
from __future__ import annotations

import traceback
from dataclasses import dataclass

import torch
from torch import nn

from ..result import Result


class Diverged(FloatingPointError):
    """Training produced a non-finite loss."""


def failure_reason(e: BaseException) -> str:
    """Why a candidate failed, for its history row: divergence, out of memory, or the error and where."""
    if isinstance(e, Diverged):
        return f"diverged: {e}"
    if isinstance(e, torch.OutOfMemoryError):
        return f"out of memory: {str(e).splitlines()[0]}"
    if isinstance(e, MemoryError):
        return "out of memory (host)"
    where = traceback.extract_tb(e.__traceback__)[-1]
    return f"{type(e).__name__}: {e} (at {where.filename}:{where.lineno})"


@dataclass
class StageCfg:
    """Optimisation budget of one stage."""

    iters: int = 100
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    encoder_lr_mult: float = 0.1  # stage 2 only

    def __post_init__(self) -> None:
        # refused here, at start-up, rather than by the optimizer or the sampler inside every candidate
        for name, low in (("iters", 0), ("batch_size", 1), ("lr", 0), ("weight_decay", 0), ("encoder_lr_mult", 0)):
            if not getattr(self, name) >= low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)!r}")


class RunningMean:
    """The early-stopping memory of Nekrasov et al.: stage-1 rewards of earlier candidates."""

    stage1_rewards: list[float]

    def restore(self, results: list[Result]) -> None:
        """Rebuild the early-stopping running mean from the finished candidates of a history."""
        self.stage1_rewards = [r.metrics["stage1_reward"] for r in results
                               if r is not None and "stage1_reward" in r.metrics]

    @property
    def running_mean(self) -> float | None:
        return sum(self.stage1_rewards) / len(self.stage1_rewards) if self.stage1_rewards else None


def set_norm_eval(module: nn.Module) -> None:
    """Put every BatchNorm layer of ``module`` in eval mode (frozen statistics, mmseg ``norm_eval``)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
