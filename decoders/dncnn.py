"""DnCNN: the hand-designed denoising baseline for the IR-NAS experiments.

Zhang, Zuo, Chen, Meng, Zhang, "Beyond a Gaussian Denoiser: Residual Learning of Deep CNN for Image
Denoising" (IEEE TIP 2017). ``depth`` 3x3 convolutions: conv-ReLU, ``depth - 2`` x conv-BN-ReLU, conv;
the network predicts the degradation (noise / rain) and subtracts it from its input (residual learning).
The original uses ``width = 64`` and ``depth = 17``.

To compare with a searched IR-NAS network (Zhang et al., "Memory-Efficient Hierarchical Neural
Architecture Search for Image Restoration") at equal capacity, :func:`dncnn_matching` picks the smallest
width whose parameter count reaches the searched network's.
"""
from __future__ import annotations

import torch
from torch import nn


class DnCNN(nn.Module):
    """DnCNN with residual learning: ``forward(y) = y - net(y)``.

    Args:
        in_channels: image channels (1 grayscale, 3 colour).
        width: channels of the hidden layers.
        depth: number of convolution layers (>= 2).
    """

    def __init__(self, in_channels: int = 3, width: int = 64, depth: int = 17):
        super().__init__()
        if depth < 2 or width < 1 or in_channels < 1:
            raise ValueError(f"need depth >= 2, width >= 1, in_channels >= 1; got depth={depth}, "
                             f"width={width}, in_channels={in_channels}")
        self.in_channels, self.width, self.depth = int(in_channels), int(width), int(depth)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1, bias=True), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, in_channels, 3, padding=1, bias=False))
        self.body = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        # The residual starts at zero, so the untrained net returns its input: under the short proxy budgets
        # a Kaiming-initialised last layer (the original recipe) starts far below the noisy input's PSNR.
        nn.init.zeros_(layers[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restore ``x`` ``(N, C, H, W)`` (same shape out)."""
        return x - self.body(x)


def dncnn_params(width: int, depth: int = 17, in_channels: int = 3) -> int:
    """Parameter count of ``DnCNN(in_channels, width, depth)`` without building it.

    First conv ``9 * c * w + w`` (bias), each middle layer ``9 * w * w + 2 * w`` (conv + BN affine), last
    conv ``9 * w * c``.
    """
    c, w = in_channels, width
    return 9 * c * w + w + (depth - 2) * (9 * w * w + 2 * w) + 9 * w * c


def dncnn_matching(params: int, depth: int = 17, in_channels: int = 3, max_width: int = 4096) -> DnCNN:
    """The DnCNN of ``depth`` layers with the smallest width whose parameter count is ``>= params``.

    Args:
        params: parameter count to reach (e.g. ``count_params`` of a searched network).
        depth: number of convolution layers.
        in_channels: image channels.
        max_width: give up above this width.

    Returns:
        The network.

    Raises:
        ValueError: ``params`` is not reachable with ``width <= max_width``.
    """
    if dncnn_params(max_width, depth, in_channels) < params:
        raise ValueError(f"no DnCNN of depth {depth} with width <= {max_width} has >= {params} parameters")
    lo, hi = 1, max_width  # the count grows strictly with the width: binary search the first width >= params
    while lo < hi:
        mid = (lo + hi) // 2
        if dncnn_params(mid, depth, in_channels) >= params:
            hi = mid
        else:
            lo = mid + 1
    return DnCNN(in_channels, lo, depth)
