"""Core operation table, as data (DARTS ``operations.py`` / NNI ``nasbench201.py`` style).

The candidate operations of the decoder cells in "Fast Neural Architecture Search of Compact Semantic
Segmentation Models via Auxiliary Cells" (Nekrasov, Chen, Shen, Reid; CVPR 2019): 1x1 and 3x3
convolutions, separable 3x3 / 5x5 convolutions (plain and dilated), global average pooling followed by a
1x1 convolution and bilinear upsampling (GAP), and the identity (skip).

Every entry of :data:`OPS` maps a channel count ``C`` to a ``C -> C`` module at stride 1 that preserves
the spatial size. Convolutions are conv-BN-ReLU. Nothing here uses batch statistics over a 1x1 map, so
every op trains with batch size >= 2 and evaluates with batch size 1 (BN uses running statistics in
``eval()``); GAP has no BN at all (it would see a single value per channel).

:data:`OPS` is a literal table and nothing adds to it at import time. A search space that needs more
operations owns its own table, written out in its module and starting from this one
(``decoders/irnas_ops.py``, ``decoders/nasfcos_ops.py``), and passes that table to :func:`build_op`. The
building blocks those tables share (:class:`ConvBNReLU`, :class:`SepConv`, :class:`GlobalPool`,
:class:`DeformConvBNReLU`) live here.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .deform import modulated_deform_conv

OpFactory = Callable[[int], nn.Module]
"""A table entry: ``C -> nn.Module`` (``C`` channels in and out, stride 1, same spatial size)."""


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


class DeformConvBNReLU(nn.Sequential):
    """``DCNv2 3x3 -> BatchNorm2d -> ReLU`` (``C -> C``, stride 1); DCNv2 from :mod:`densenas.deform`.

    Used by the IR-NAS and NAS-FCOS tables (``deform_conv3x3``); it starts as an ordinary convolution
    (zero offsets, mask 0.5).

    Args:
        channels: input and output channels.
        backend: see :func:`densenas.deform.modulated_deform_conv`.
    """

    def __init__(self, channels: int, backend: str = "auto"):
        super().__init__(modulated_deform_conv(channels, channels, backend), nn.BatchNorm2d(channels),
                         nn.ReLU(inplace=True))


OPS: dict[str, OpFactory] = {
    "conv1x1": lambda C: ConvBNReLU(C, C, 1),
    "conv3x3": lambda C: ConvBNReLU(C, C, 3),
    "sep_conv_3x3": lambda C: SepConv(C, 3),
    "sep_conv_5x5": lambda C: SepConv(C, 5),
    "gap": lambda C: GlobalPool(C),
    "sep_conv_3x3_dil2": lambda C: SepConv(C, 3, dilation=2),
    "sep_conv_3x3_dil4": lambda C: SepConv(C, 3, dilation=4),
    "skip": lambda C: nn.Identity(),
    # The rest of the paper's list: available by name, not in the default candidate set.
    "conv3x3_dil3": lambda C: ConvBNReLU(C, C, 3, dilation=3),
    "conv3x3_dil12": lambda C: ConvBNReLU(C, C, 3, dilation=12),
    "sep_conv_3x3_dil3": lambda C: SepConv(C, 3, dilation=3),
    "sep_conv_5x5_dil6": lambda C: SepConv(C, 5, dilation=6),
}
"""Operation name (as it appears in arch JSON) -> factory ``C -> nn.Module``: the generic operations."""

PRIMITIVES: tuple[str, ...] = ("conv1x1", "conv3x3", "sep_conv_3x3", "sep_conv_5x5", "gap",
                               "sep_conv_3x3_dil2", "sep_conv_3x3_dil4", "skip")
"""Default candidate operations of the auxiliary-cell decoder space, in a fixed order."""


def build_op(name: str, channels: int, table: Mapping[str, OpFactory] = OPS) -> nn.Module:
    """Instantiate operation ``name`` of ``table`` for ``channels`` channels.

    Args:
        name: a key of ``table``.
        channels: input and output channels.
        table: the operation table of the calling space (default the core :data:`OPS`).

    Returns:
        A fresh ``channels -> channels`` module at stride 1.

    Raises:
        KeyError: for an unknown name (the message lists the known ones).
    """
    try:
        factory = table[name]
    except KeyError:
        raise KeyError(f"unknown operation {name!r}; known: {sorted(table)}") from None
    return factory(channels)


def check_ops(ops: Sequence[str], table: Mapping[str, Callable[..., nn.Module]], what: str = "ops",
              allow: Sequence[str] = ()) -> tuple[str, ...]:
    """Validate a space's candidate list against its table.

    Args:
        ops: candidate operation names.
        table: the space's operation table.
        what: the argument name, for the message (``"fpn_ops"``).
        allow: further names accepted without a table entry (IR-NAS's supernet-only ``"none"``).

    Returns:
        ``ops`` as a tuple.

    Raises:
        ValueError: an empty list, a repeated name, or a name neither in ``table`` nor in ``allow``.
    """
    ops = tuple(ops)
    unknown = [o for o in ops if o not in table and o not in allow]
    if unknown or not ops or len(set(ops)) != len(ops):
        raise ValueError(f"{what} must be distinct known operations, got {list(ops)} "
                         f"(unknown: {unknown}; known: {sorted(table)})")
    return ops
