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

The context modules of the DeepLab heads the decoder spaces are compared with live here too, outside
:data:`OPS` (they change the channel count, so they are not ``C -> C`` ops): :class:`ASPP` (DeepLabV3's atrous
spatial pyramid pooling; with ``separable=True`` the depthwise-separable one of DeepLabV3+, Chen et al., ECCV
2018), :class:`DSConvBNReLU` and :class:`DeepLabV3PlusRefine` (DeepLabV3+'s decoder convolutions), and the table
:data:`ASPP_OPS` (``(c_in, c_out) -> module``) through which the aux-cell and template spaces offer them in
their extended variants; and :class:`DeconvStack`, SimpleBaseline's three 4x4 stride-2 deconvolutions (Xiao et al.,
ECCV 2018; mmpose's ``HeatmapHead``), which the aux-cell space's extended variant offers as a projection of the
deepest level.
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


class DSConvBNReLU(nn.Sequential):
    """Depthwise-separable conv as in DeepLabV3+ (mmcv ``DepthwiseSeparableConvModule``): depthwise ``k x k``
    (dilated) conv-BN-ReLU, then pointwise conv-BN-ReLU (``c_in -> c_out``, stride 1, same size).

    Unlike :class:`SepConv` (the aux-cell paper's op: no ReLU after the depthwise conv, ``C -> C``) it changes
    the channel count; the parameter count of both is the same for ``c_in == c_out``.

    Args:
        c_in: input channels.
        c_out: output channels.
        kernel_size: depthwise kernel size (odd).
        dilation: depthwise dilation rate.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, dilation: int = 1):
        super().__init__(ConvBNReLU(c_in, c_in, kernel_size, dilation=dilation, groups=c_in),
                         ConvBNReLU(c_in, c_out, 1))


ASPP_DILATIONS: tuple[int, ...] = (1, 6, 12, 18)
"""Rates of the ASPP branches: those of mmseg's ``ASPPHead`` / ``DepthwiseSeparableASPPHead`` as
``tasks/segmentation/export.py`` and ``configs/finetune/baseline_*_proxy.py`` build them (output stride 16
rates of DeepLabV3, used there on the stride-32 level, as here)."""


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling, ``c_in -> c_out`` at stride 1.

    DeepLabV3 (Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation", 2017), laid out
    as mmseg's ``ASPPHead`` (without its classifier): an image-pooling branch and one branch per rate (rate 1:
    conv1x1-BN-ReLU; rate ``r > 1``: 3x3 conv-BN-ReLU of dilation ``r``, or with ``separable=True`` the
    depthwise-separable :class:`DSConvBNReLU` of DeepLabV3+ (Chen et al., "Encoder-Decoder with Atrous
    Separable Convolution for Semantic Image Segmentation", ECCV 2018; mmseg's
    ``DepthwiseSeparableASPPHead``)), concatenated (pooling branch first) and projected by a 3x3
    conv-BN-ReLU. The pooling branch is conv1x1 (+bias) -> ReLU without BN (as :class:`GlobalPool`: BN over
    one value per channel fails at batch size 1); mmseg uses conv-BN-ReLU there, ``c_out`` parameters more.

    Args:
        c_in: input channels.
        c_out: channels of every branch and of the output.
        dilations: branch rates (default :data:`ASPP_DILATIONS`).
        separable: depthwise-separable dilated branches (DeepLabV3+).

    Raises:
        ValueError: an empty ``dilations`` or a rate below 1 (the message names the value).
    """

    def __init__(self, c_in: int, c_out: int, dilations: Sequence[int] = ASPP_DILATIONS, separable: bool = False):
        super().__init__()
        dilations = tuple(int(d) for d in dilations)
        if not dilations or min(dilations) < 1:
            raise ValueError(f"ASPP dilations must be rates >= 1, got {dilations}")
        self.dilations, self.separable = dilations, bool(separable)
        self.image_pool = nn.Conv2d(c_in, c_out, 1, bias=True)
        self.branches = nn.ModuleList(
            ConvBNReLU(c_in, c_out, 1) if d == 1 else
            DSConvBNReLU(c_in, c_out, 3, dilation=d) if separable else ConvBNReLU(c_in, c_out, 3, dilation=d)
            for d in dilations)
        self.project = ConvBNReLU((len(dilations) + 1) * c_out, c_out, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.relu(self.image_pool(F.adaptive_avg_pool2d(x, 1)))  # bilinear from 1x1 = broadcast
        outs = [pooled.expand(-1, -1, *x.shape[-2:]), *(branch(x) for branch in self.branches)]
        return self.project(torch.cat(outs, dim=1))


class DeepLabV3PlusRefine(nn.Sequential):
    """The DeepLabV3+ decoder's refinement (Chen et al., ECCV 2018; mmseg's ``sep_bottleneck``): two 3x3
    :class:`DSConvBNReLU`, ``c_in -> c_out -> c_out``, on the concatenation of the upsampled context and the
    reduced low-level features.

    Args:
        c_in: input channels (context plus low-level channels).
        c_out: output channels.
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__(DSConvBNReLU(c_in, c_out, 3), DSConvBNReLU(c_out, c_out, 3))


class DeconvStack(nn.Sequential):
    """SimpleBaseline's upsampling stack (Xiao et al., "Simple Baselines for Human Pose Estimation and
    Tracking", ECCV 2018; mmpose's ``HeatmapHead`` deconvolution layers): ``num_layers`` times
    ``ConvTranspose2d(4x4, stride 2, padding 1, bias=False) -> BatchNorm2d -> ReLU``, ``c_in -> c_out`` and every
    later layer ``c_out -> c_out``; each layer doubles the spatial size (three: stride 32 -> stride 4).

    Args:
        c_in: input channels.
        c_out: channels of every layer.
        num_layers: deconvolution layers (the paper's three).

    Raises:
        ValueError: ``num_layers`` below 1 (the message names the value).
    """

    def __init__(self, c_in: int, c_out: int, num_layers: int = 3):
        if int(num_layers) < 1:
            raise ValueError(f"DeconvStack num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        for i in range(int(num_layers)):
            layers += [nn.ConvTranspose2d(c_in if i == 0 else c_out, c_out, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        super().__init__(*layers)
        self.upsample = 2 ** int(num_layers)  #: output size / input size


ASPP_OPS: dict[str, Callable[[int, int], nn.Module]] = {
    "aspp": lambda c_in, c_out: ASPP(c_in, c_out),
    "sep_aspp": lambda c_in, c_out: ASPP(c_in, c_out, separable=True),
}
"""Context modules ``(c_in, c_out) -> module`` (stride 1): DeepLabV3's ASPP and DeepLabV3+'s separable ASPP.
Not candidates of the paper's spaces: the aux-cell space offers them as encoder-level projections
(``proj_ops``), the template space after its last layer (``context_ops``)."""


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
