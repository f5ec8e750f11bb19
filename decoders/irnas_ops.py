"""Operations and building blocks of the IR-NAS search space.

After Zhang, Chen, Li, Shen, "Memory-Efficient Hierarchical Neural Architecture Search for Image
Restoration" (IR-NAS / HiNAS). The super cell mixes six candidate operations on every edge:

* ``conv3x3``        3x3 convolution (conv-BN-ReLU, already in :data:`densenas.ops.OPS`);
* ``sep_conv_3x3``   3x3 depthwise-separable convolution (already registered);
* ``conv3x3_dil2``   3x3 convolution with dilation 2 (registered here);
* ``deform_conv3x3`` 3x3 modulated deformable convolution, DCNv2 (Zhu et al., CVPR 2019; registered here);
* ``skip``           identity (already registered);
* ``none``           no connection (zero). It only exists inside the supernet's mixed operation, where it
  takes part in the softmax over α but contributes nothing; derived architectures never contain it, so it
  is *not* registered in :data:`densenas.ops.OPS` (other spaces may register their own ``none``).

DCNv2 uses :class:`mmcv.ops.ModulatedDeformConv2dPack` when mmcv's compiled ops are importable and
otherwise :class:`TorchvisionModulatedDeformConv2d`, a drop-in with the same parameter names (``weight``,
``conv_offset.weight``/``bias``) built on :func:`torchvision.ops.deform_conv2d` with a mask; both start
as an ordinary convolution (zero offsets, mask 0.5) because the offset/mask convolution is zero-initialised.

Also here: :class:`MixedOp` (the DARTS continuous relaxation of one edge) and :class:`ASPP`, the atrous
spatial pyramid pooling module IR-NAS appends after the last cell (at full resolution for restoration).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from densenas.ops import OPS, ConvBNReLU, build_op, register_op

NONE_OP = "none"
"""Name of the zero operation inside the supernet's mixed operation."""

IRNAS_OPS: tuple[str, ...] = ("conv3x3", "sep_conv_3x3", "conv3x3_dil2", "deform_conv3x3", "skip", NONE_OP)
"""The six candidate operations of the IR-NAS super cell, in the paper's order."""


class TorchvisionModulatedDeformConv2d(nn.Module):
    """DCNv2 on :func:`torchvision.ops.deform_conv2d` with the parameter layout of mmcv's ``...Pack``.

    A convolution ``conv_offset`` predicts, per output pixel, ``2 * k * k`` offsets and ``k * k`` mask
    logits; the mask is ``sigmoid(logits)``. Channel order follows mmcv: the first two thirds of
    ``conv_offset``'s output are the offsets, the last third the mask logits.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size.
        padding: zero padding.
        dilation: dilation of the sampling grid.
        bias: learn a bias for the main convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1,
                 dilation: int = 1, bias: bool = False):
        super().__init__()
        self.kernel_size = (kernel_size, kernel_size)
        self.padding = (padding, padding)
        self.dilation = (dilation, dilation)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.conv_offset = nn.Conv2d(in_channels, 3 * kernel_size * kernel_size, kernel_size,
                                     padding=padding, dilation=dilation, bias=True)
        stdv = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        nn.init.uniform_(self.weight, -stdv, stdv)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import deform_conv2d

        o1, o2, mask = torch.chunk(self.conv_offset(x), 3, dim=1)
        return deform_conv2d(x, torch.cat((o1, o2), dim=1), self.weight, self.bias, padding=self.padding,
                             dilation=self.dilation, mask=torch.sigmoid(mask))


def modulated_deform_conv(in_channels: int, out_channels: int, backend: str = "auto") -> nn.Module:
    """A 3x3 DCNv2 layer (stride 1, "same" padding, no bias).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        backend: ``"mmcv"``, ``"torchvision"`` or ``"auto"`` (mmcv when its compiled ops import).

    Returns:
        The deformable convolution module.

    Raises:
        ValueError: unknown backend.
        ImportError: ``backend="mmcv"`` but mmcv's ops are not available.
    """
    if backend not in ("auto", "mmcv", "torchvision"):
        raise ValueError(f"backend must be 'auto', 'mmcv' or 'torchvision', got {backend!r}")
    if backend in ("auto", "mmcv"):
        try:
            from mmcv.ops import ModulatedDeformConv2dPack
        except ImportError:
            if backend == "mmcv":
                raise
        else:
            return ModulatedDeformConv2dPack(in_channels, out_channels, 3, padding=1, bias=False)
    return TorchvisionModulatedDeformConv2d(in_channels, out_channels, 3, padding=1, bias=False)


class DeformConvBNReLU(nn.Sequential):
    """``DCNv2 3x3 -> BatchNorm2d -> ReLU`` (``C -> C``, stride 1).

    Args:
        channels: input and output channels.
        backend: see :func:`modulated_deform_conv`.
    """

    def __init__(self, channels: int, backend: str = "auto"):
        super().__init__(modulated_deform_conv(channels, channels, backend), nn.BatchNorm2d(channels),
                         nn.ReLU(inplace=True))


def _register_irnas_ops() -> None:
    """Register the IR-NAS operations that :data:`densenas.ops.OPS` does not hold yet."""
    new = {"conv3x3_dil2": lambda C: ConvBNReLU(C, C, 3, dilation=2),
           "deform_conv3x3": lambda C: DeformConvBNReLU(C)}
    for name, factory in new.items():
        if name not in OPS:
            register_op(name)(factory)


_register_irnas_ops()


class MixedOp(nn.Module):
    """One edge of the super cell: ``sum_k w_k * op_k(x)`` over the candidate operations.

    The ``none`` candidate has no module; its weight only enters the softmax (DARTS ``Zero``).

    Args:
        channels: input and output channels.
        ops: candidate operation names (keys of :data:`densenas.ops.OPS`, or ``"none"``).
    """

    def __init__(self, channels: int, ops: Sequence[str]):
        super().__init__()
        self.names = tuple(ops)
        self.index = [i for i, n in enumerate(self.names) if n != NONE_OP]
        self.ops = nn.ModuleList(build_op(self.names[i], channels) for i in self.index)

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.aspp(x))


def stem(in_channels: int, channels: int) -> nn.Sequential:
    """First layer: 3x3 conv (with bias) and ReLU, as in DnCNN (no BN on the raw image)."""
    return nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(inplace=True))

