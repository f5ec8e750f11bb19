"""Operation library as data (DARTS ``operations.py`` / NNI ``nasbench201.py`` style).

The candidate operations of the decoder cells in "Fast Neural Architecture Search of Compact Semantic
Segmentation Models via Auxiliary Cells" (Nekrasov, Chen, Shen, Reid; CVPR 2019): 1x1 and 3x3
convolutions, separable 3x3 / 5x5 convolutions (plain and dilated), global average pooling followed by a
1x1 convolution and bilinear upsampling (GAP), and the identity (skip).

Every entry of :data:`OPS` maps a channel count ``C`` to a ``C -> C`` module at stride 1 that preserves
the spatial size. Convolutions are conv-BN-ReLU. Nothing here uses batch statistics over a 1x1 map, so
every op trains with batch size >= 2 and evaluates with batch size 1 (BN uses running statistics in
``eval()``); GAP has no BN at all (it would see a single value per channel).

New operations (deformable convolution, attention, ...) are added with :func:`register_op`; the search
spaces take their candidate list from :data:`PRIMITIVES` or from an explicit subset of :data:`OPS` keys.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

OpFactory = Callable[[int], nn.Module]

OPS: dict[str, OpFactory] = {}
"""Operation name -> factory ``C -> nn.Module`` (``C`` channels in and out, stride 1)."""


def register_op(name: str, *, primitive: bool = False) -> Callable[[OpFactory], OpFactory]:
    """Decorator adding a factory to :data:`OPS` (and to :data:`PRIMITIVES` when ``primitive``).

    Args:
        name: unique operation name as it appears in arch JSON (e.g. ``"sep_conv_3x3"``).
        primitive: also append the name to the default candidate list :data:`PRIMITIVES`.

    Returns:
        The decorator, which returns the factory unchanged.

    Raises:
        KeyError: when ``name`` is already registered.
    """

    def deco(factory: OpFactory) -> OpFactory:
        if name in OPS:
            raise KeyError(f"operation {name!r} is already registered")
        OPS[name] = factory
        if primitive:
            PRIMITIVES.append(name)
        return factory

    return deco


PRIMITIVES: list[str] = []
"""Default candidate operations of the decoder search spaces, in a fixed order."""


class ConvBNReLU(nn.Sequential):
    """``Conv2d(bias=False) -> BatchNorm2d -> ReLU`` with "same" padding at stride 1.

    Args:
        c_in: input channels.
        c_out: output channels.
        kernel_size: square kernel size (odd).
        dilation: dilation rate.
        groups: convolution groups.
        relu: append a ReLU (``False`` gives conv-BN only).
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 1, dilation: int = 1, groups: int = 1,
                 relu: bool = True):
        pad = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out, kernel_size, padding=pad, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class SepConv(nn.Sequential):
    """Depthwise-separable convolution: depthwise ``k x k`` (dilated) conv-BN, then pointwise conv-BN-ReLU.

    Args:
        channels: input and output channels.
        kernel_size: depthwise kernel size (odd).
        dilation: depthwise dilation rate.
    """

    def __init__(self, channels: int, kernel_size: int = 3, dilation: int = 1):
        super().__init__(
            ConvBNReLU(channels, channels, kernel_size, dilation=dilation, groups=channels, relu=False),
            ConvBNReLU(channels, channels, 1),
        )


class GlobalPool(nn.Module):
    """GAP op: global average pooling -> conv1x1 (+bias) -> ReLU -> bilinear upsampling to the input size.

    No BatchNorm: after pooling each channel holds one value per image, so BN would fail in training with
    batch size 1 and adds nothing a bias does not.

    Args:
        channels: input and output channels.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.conv(F.adaptive_avg_pool2d(x, 1)))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


register_op("conv1x1", primitive=True)(lambda C: ConvBNReLU(C, C, 1))
register_op("conv3x3", primitive=True)(lambda C: ConvBNReLU(C, C, 3))
register_op("sep_conv_3x3", primitive=True)(lambda C: SepConv(C, 3))
register_op("sep_conv_5x5", primitive=True)(lambda C: SepConv(C, 5))
register_op("gap", primitive=True)(GlobalPool)
register_op("sep_conv_3x3_dil2", primitive=True)(lambda C: SepConv(C, 3, dilation=2))
register_op("sep_conv_3x3_dil4", primitive=True)(lambda C: SepConv(C, 3, dilation=4))
register_op("skip", primitive=True)(lambda C: nn.Identity())
# Extra operations of the paper's list, available by name but not in the default candidate set.
register_op("conv3x3_dil3")(lambda C: ConvBNReLU(C, C, 3, dilation=3))
register_op("conv3x3_dil12")(lambda C: ConvBNReLU(C, C, 3, dilation=12))
register_op("sep_conv_3x3_dil3")(lambda C: SepConv(C, 3, dilation=3))
register_op("sep_conv_5x5_dil6")(lambda C: SepConv(C, 5, dilation=6))


def build_op(name: str, channels: int) -> nn.Module:
    """Instantiate operation ``name`` for ``channels`` channels.

    Args:
        name: a key of :data:`OPS`.
        channels: input and output channels.

    Returns:
        A fresh ``channels -> channels`` module at stride 1.

    Raises:
        KeyError: for an unknown name (the message lists the known ones).
    """
    try:
        factory = OPS[name]
    except KeyError:
        raise KeyError(f"unknown operation {name!r}; known: {sorted(OPS)}") from None
    return factory(channels)
