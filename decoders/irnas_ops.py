"""Operations and building blocks of the IR-NAS search space.

After Zhang, Chen, Li, Shen, "Memory-Efficient Hierarchical Neural Architecture Search for Image
Restoration" (IR-NAS / HiNAS). The super cell mixes six candidate operations on every edge (:data:`PRIMITIVES`):

* ``conv3x3``        3x3 convolution (conv-BN-ReLU, from the core table :data:`densenas.ops.OPS`);
* ``sep_conv_3x3``   3x3 depthwise-separable convolution (core);
* ``conv3x3_dil2``   3x3 convolution with dilation 2 (added by this table);
* ``deform_conv3x3`` 3x3 modulated deformable convolution, DCNv2 (Zhu et al., CVPR 2019; added here);
* ``skip``           identity (core);
* ``none``           no connection (zero). It only exists inside the supernet's mixed operation, where it
  takes part in the softmax over α but contributes nothing; derived architectures never contain it, so it
  has no entry in :data:`OPS`.

:data:`OPS` is this space's operation table: the core operations plus the two above, written out as a
literal dict (nothing is added to any table at import time).

DCNv2 comes from :mod:`densenas.deform` (mmcv, torchvision or, by default, the fastest path per device;
all with mmcv's parameter layout); it starts as an ordinary convolution (zero offsets, mask 0.5).

Also here: :class:`MixedOp` (the DARTS continuous relaxation of one edge) and :class:`ASPP`, the atrous
spatial pyramid pooling module IR-NAS appends after the last cell (at full resolution for restoration).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from densenas.deform import TorchvisionModulatedDeformConv2d, modulated_deform_conv  # noqa: F401 (re-export)
from densenas.ops import OPS as CORE_OPS
from densenas.ops import ConvBNReLU, DeformConvBNReLU, OpFactory, build_op

NONE_OP = "none"
"""Name of the zero operation inside the supernet's mixed operation."""

OPS: dict[str, OpFactory] = {
    **CORE_OPS,
    "conv3x3_dil2": lambda C: ConvBNReLU(C, C, 3, dilation=2),
    "deform_conv3x3": lambda C: DeformConvBNReLU(C),
}
"""The IR-NAS operation table: the core operations plus ``conv3x3_dil2`` and ``deform_conv3x3``."""

PRIMITIVES: tuple[str, ...] = ("conv3x3", "sep_conv_3x3", "conv3x3_dil2", "deform_conv3x3", "skip", NONE_OP)
"""The six candidate operations of the IR-NAS super cell, in the paper's order."""

IRNAS_OPS = PRIMITIVES
"""The name used before the tables were split (kept for imports in tests and configs)."""


class MixedOp(nn.Module):
    """One edge of the super cell: ``sum_k w_k * op_k(x)`` over the candidate operations.

    The ``none`` candidate has no module; its weight only enters the softmax (DARTS ``Zero``).

    Args:
        channels: input and output channels.
        ops: candidate operation names (keys of :data:`OPS`, or ``"none"``).
    """

    def __init__(self, channels: int, ops: Sequence[str]):
        super().__init__()
        self.names = tuple(ops)
        self.index = [i for i, n in enumerate(self.names) if n != NONE_OP]
        self.ops = nn.ModuleList(build_op(self.names[i], channels, OPS) for i in self.index)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Mix the candidates.

        Args:
            x: input ``(N, C, H, W)``.
            weights: ``(len(ops),)`` mixing weights (a softmax of this edge's α row).

        Returns:
            The weighted sum, ``(N, C, H, W)``.
        """
        out = x.new_zeros(x.shape)
        for i, op in zip(self.index, self.ops):
            out = out + weights[i] * op(x)
        return out


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling at stride 1 (DeepLab v3), as appended after the last IR-NAS cell.

    Branches: a 1x1 conv-BN-ReLU and one 3x3 conv-BN-ReLU per dilation rate, concatenated and fused by a
    1x1 conv-BN-ReLU. No image-pooling branch: restoration nets see small, arbitrary-sized crops.

    Args:
        in_channels: input channels.
        out_channels: channels of every branch and of the output.
        rates: dilation rates of the 3x3 branches.
    """

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int] = (2, 4, 6)):
        super().__init__()
        self.branches = nn.ModuleList(
            [ConvBNReLU(in_channels, out_channels, 1)]
            + [ConvBNReLU(in_channels, out_channels, 3, dilation=int(r)) for r in rates])
        self.project = ConvBNReLU(out_channels * len(self.branches), out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))


class RestorationHead(nn.Module):
    """Maps the last cell's features to a residual image: optional :class:`ASPP`, then a 3x3 conv.

    Args:
        channels: input feature channels.
        out_channels: image channels.
        aspp: insert the ASPP module.
        rates: ASPP dilation rates.
    """

    def __init__(self, channels: int, out_channels: int, aspp: bool = True, rates: Sequence[int] = (2, 4, 6)):
        super().__init__()
        self.aspp = ASPP(channels, channels, rates) if aspp else nn.Identity()
        self.out = nn.Conv2d(channels, out_channels, 3, padding=1)
        # The residual starts at zero, so an untrained net (and the supernet) returns its input, as in
        # decoders/dncnn.py: with the default init the supernet starts, and under the proxy budgets stays,
        # below the noisy input's PSNR, so its validation reward ranks nothing.
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.aspp(x))


def stem(in_channels: int, channels: int) -> nn.Sequential:
    """First layer: 3x3 conv (with bias) and ReLU, as in DnCNN (no BN on the raw image)."""
    return nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(inplace=True))

