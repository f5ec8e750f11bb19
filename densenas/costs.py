"""Model costs for multi-objective rewards and reports: parameters, multiply-adds, CPU/GPU latency.

Named apart from :mod:`densenas.evaluation.objective` (the reward that combines a metric with these costs)."""
from __future__ import annotations

import time

import torch
from torch import nn


def count_params(module: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def count_madds(module: nn.Module, *inputs) -> int:
    """Multiply-adds of one forward pass, counted by mmengine's (fvcore-style) FlopAnalyzer.

    fvcore's convention counts one fused multiply-add as one "flop", i.e. the figure is MAdds.
    """
    from mmengine.analysis import FlopAnalyzer

    was = module.training
    module.eval()
    try:
        analyzer = FlopAnalyzer(module, inputs if len(inputs) > 1 else inputs[0])
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return int(analyzer.total())
    finally:
        module.train(was)


@torch.no_grad()
def latency_ms(module: nn.Module, *inputs, warmup: int = 2, repeats: int = 5) -> float:
    """Median wall-clock latency of one forward pass, in milliseconds."""
    was = module.training
    module.eval()
    times = []
    for i in range(warmup + repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        module(*inputs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1000)
    module.train(was)
    return float(sorted(times)[len(times) // 2])
