"""Operations and built modules of the NAS-FCOS search space.

After Wang, Gao, Chen, Wang, Tian, Shen, "NAS-FCOS: Fast Neural Architecture Search for Object Detection"
(CVPR 2020). This space's operation table :data:`OPS` (a literal dict: the core operations of
:data:`densenas.ops.OPS`, ``conv3x3_dil2`` and ``deform_conv3x3`` as in IR-NAS, and the GroupNorm head
operations defined here) and two candidate lists, both keys of it:

* :data:`FPN_OPS` (BatchNorm, as in the authors' FPN): separable 3x3 / 5x5 convolutions, their dilated
  forms (3x3 rate 3, 5x5 rate 6, the authors' list), conv 1x1, dilated conv 3x3 (rate 2), DCNv2 3x3
  (``deform_conv3x3``) and skip;
* :data:`HEAD_OPS` (GroupNorm, as FCOS heads): ``gn_conv1x1``, ``gn_conv3x3``, ``gn_sep_conv_3x3``,
  ``gn_sep_conv_3x3_dil3``, ``gn_deform_conv3x3`` and skip -- the authors' head list.

:data:`FPN_OPS_WITH_FPN` (the space's ``variant="with_fpn"``) is :data:`FPN_OPS` plus the two operations
the hand-designed FPN (Lin et al., CVPR 2017) needs and the authors' list lacks: ``conv3x3`` (its output
convolutions; conv-BN-ReLU like every FPN op here) and ``zero`` (a cell that outputs one op of one input:
``agg(op0(a), zero(b))``).

Built modules: :class:`FPNCell` (two ops on two pool features, aggregated by a learnt per-channel weighted
``sum`` or by ``concat`` + conv1x1-BN-ReLU; the coarser input is bilinearly upsampled to the finer one,
so the output has the finer stride), :class:`NASFCOSFPN` (the searched neck, P3..P7) and
:class:`HeadTower` (one branch of the head: an op sequence whose shared layers are single modules used at
every pyramid level and whose other layers have one copy per level).

DCNv2 here has one deformable group (the authors used two); it starts as a plain convolution because its
offset/mask convolution is zero-initialised.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from densenas.deform import modulated_deform_conv
from densenas.ops import OPS as CORE_OPS
from densenas.ops import ConvBNReLU, DeformConvBNReLU, OpFactory, build_op
from densenas.space import ShapeSpec

AGGREGATIONS: tuple[str, ...] = ("sum", "concat")
"""How an FPN cell merges its two transformed inputs."""

FPN_OPS: tuple[str, ...] = ("sep_conv_3x3", "sep_conv_5x5", "sep_conv_3x3_dil3", "sep_conv_5x5_dil6",
                            "conv1x1", "conv3x3_dil2", "deform_conv3x3", "skip")
"""Default candidate operations of the FPN cells."""

HEAD_OPS: tuple[str, ...] = ("gn_conv1x1", "gn_conv3x3", "gn_sep_conv_3x3", "gn_sep_conv_3x3_dil3",
                             "gn_deform_conv3x3", "skip")
"""Default candidate operations of the head layers (the authors' list, GroupNorm)."""

FPN_OPS_WITH_FPN: tuple[str, ...] = FPN_OPS + ("conv3x3", "zero")
"""FPN candidates of the ``with_fpn`` variant: the authors' list plus what the plain FPN needs."""

NUM_BACKBONE_OUTS = 3
"""Pyramid levels taken from FPN cells (P3..P5, at the sizes of the last three backbone levels)."""


def gn_groups(channels: int) -> int:
    """GroupNorm groups: a power of two dividing ``channels``, at most 32, >= 4 channels per group.

    Gives FCOS's 32 groups at 128 and 256 channels and stays well defined on 1x1 maps (P7) at tiny widths.
    """
    g = math.gcd(32, channels)
    while g > 1 and channels // g < 4:
        g //= 2
    return g


class ConvGNReLU(nn.Sequential):
    """``Conv2d(bias=False) -> GroupNorm -> ReLU`` with "same" padding at stride 1.

    Args:
        c_in: input channels.
        c_out: output channels.
        kernel_size: square kernel size (odd).
        dilation: dilation rate.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 1, dilation: int = 1):
        pad = dilation * (kernel_size - 1) // 2
        super().__init__(nn.Conv2d(c_in, c_out, kernel_size, padding=pad, dilation=dilation, bias=False),
                         nn.GroupNorm(gn_groups(c_out), c_out), nn.ReLU(inplace=True))


class GNSepConv(nn.Sequential):
    """Depthwise ``k x k`` (dilated) conv, pointwise conv, GroupNorm, ReLU (the authors' ``GN_SepConv``).

    Args:
        channels: input and output channels.
        kernel_size: depthwise kernel size (odd).
        dilation: depthwise dilation rate.
    """

    def __init__(self, channels: int, kernel_size: int = 3, dilation: int = 1):
        pad = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(channels, channels, kernel_size, padding=pad, dilation=dilation, groups=channels,
                      bias=False),
            ConvGNReLU(channels, channels, 1))


class GNDeformConv(nn.Sequential):
    """DCNv2 3x3 (mmcv, or torchvision without mmcv's ops), GroupNorm, ReLU.

    Args:
        channels: input and output channels.
    """

    def __init__(self, channels: int):
        super().__init__(modulated_deform_conv(channels, channels),
                         nn.GroupNorm(gn_groups(channels), channels), nn.ReLU(inplace=True))


class Zero(nn.Module):
    """The ``zero`` operation: a zero map of the input's shape (DARTS's ``none``); no parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


OPS: dict[str, OpFactory] = {
    **CORE_OPS,
    "zero": lambda C: Zero(),
    "conv3x3_dil2": lambda C: ConvBNReLU(C, C, 3, dilation=2),
    "deform_conv3x3": lambda C: DeformConvBNReLU(C),
    "gn_conv1x1": lambda C: ConvGNReLU(C, C, 1),
    "gn_conv3x3": lambda C: ConvGNReLU(C, C, 3),
    "gn_sep_conv_3x3": lambda C: GNSepConv(C, 3),
    "gn_sep_conv_3x3_dil3": lambda C: GNSepConv(C, 3, dilation=3),
    "gn_deform_conv3x3": lambda C: GNDeformConv(C),
}
"""The NAS-FCOS operation table: core operations, ``zero``, ``conv3x3_dil2``, ``deform_conv3x3`` and the GN
ops."""

PRIMITIVES: tuple[str, ...] = FPN_OPS + tuple(o for o in HEAD_OPS if o not in FPN_OPS)
"""Every default candidate of the space (FPN then head lists)."""


def resize_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of ``x`` to spatial ``size`` (a no-op when it already has that size)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class WeightedSum(nn.Module):
    """``a * x + b * y`` with learnt per-channel weights ``a``, ``b`` (initialised to 1; authors' psum)."""

    def __init__(self, channels: int):
        super().__init__()
        self.a = nn.Parameter(torch.ones(channels))
        self.b = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.a[:, None, None] * x + self.b[:, None, None] * y


class ConcatFuse(nn.Module):
    """Concatenate along channels, then conv1x1-BN-ReLU back to ``channels``."""

    def __init__(self, channels: int):
        super().__init__()
        self.fuse = ConvBNReLU(2 * channels, channels, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([x, y], dim=1))


class FPNCellSpec(NamedTuple):
    """One FPN cell: ``agg(op0(pool[in0]), op1(pool[in1]))``."""

    in0: int
    in1: int
    op0: str
    op1: str
    agg: str


class FPNCell(nn.Module):
    """Two operations on two pool features, resized to the finer of the two and aggregated.

    Args:
        spec: inputs, operations and aggregation.
        channels: width of every pool feature.
    """

    def __init__(self, spec: FPNCellSpec, channels: int):
        super().__init__()
        if spec.agg not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {spec.agg!r}; known: {list(AGGREGATIONS)}")
        self.spec = spec
        self.op0 = build_op(spec.op0, channels, OPS)
        self.op1 = build_op(spec.op1, channels, OPS)
        self.agg = WeightedSum(channels) if spec.agg == "sum" else ConcatFuse(channels)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = self.op0(a), self.op1(b)
        if a.shape[-2] * a.shape[-1] >= b.shape[-2] * b.shape[-1]:
            b = resize_to(b, a.shape[-2:])
        else:
            a = resize_to(a, b.shape[-2:])
        return self.agg(a, b)


def collected_cells(specs: Sequence[FPNCellSpec], num_inputs: int) -> list[int]:
    """Indices of the cells whose output no later cell consumes (they form the FPN outputs), in order."""
    consumed = {i for s in specs for i in (s.in0, s.in1)}
    return [k for k in range(len(specs)) if num_inputs + k not in consumed]


class NASFCOSFPN(nn.Module):
    """The searched FPN: backbone levels in, P3..P(2 + num_outs) out.

    Every backbone level some cell reads is projected to ``width`` channels (conv1x1-BN-ReLU); the cells
    run in order, each appending its output to the pool. The cells no later cell consumes are collected:
    the last three become P5, P4, P3 (in that order, as in the authors' code), each plus every earlier
    collected output (bilinearly resized), and are resized to the sizes of the last three backbone levels.
    Further levels come from P5 by stride-2 3x3 convolutions (``P6 = conv(P5)``, ``P7 = conv(relu(P6))``).

    Args:
        specs: the cells, in controller order.
        in_shapes: shapes of the backbone levels in the pool (finest first; the last three give P3..P5).
        width: channels of every pool feature and output.
        num_outs: pyramid levels returned (>= 3).
    """

    def __init__(self, specs: Sequence[FPNCellSpec], in_shapes: Sequence[ShapeSpec], width: int,
                 num_outs: int = 5):
        super().__init__()
        self.num_inputs = n = len(in_shapes)
        if n < NUM_BACKBONE_OUTS or num_outs < NUM_BACKBONE_OUTS:
            raise ValueError(f"NAS-FCOS FPN needs >= {NUM_BACKBONE_OUTS} backbone levels and outputs, "
                             f"got {n} levels, num_outs={num_outs}")
        self.specs = [FPNCellSpec(*s) for s in specs]
        self.collect = collected_cells(self.specs, n)
        if len(self.collect) < NUM_BACKBONE_OUTS:
            raise ValueError(f"only {len(self.collect)} FPN cells are unconsumed; P3-P5 need "
                             f"{NUM_BACKBONE_OUTS}")
        self.used_levels = sorted({i for s in self.specs for i in (s.in0, s.in1) if i < n})
        self.proj = nn.ModuleDict({str(i): ConvBNReLU(in_shapes[i].channels, width, 1)
                                   for i in self.used_levels})
        self.cells = nn.ModuleList(FPNCell(s, width) for s in self.specs)
        self.extra = nn.ModuleList(nn.Conv2d(width, width, 3, stride=2, padding=1)
                                   for _ in range(num_outs - NUM_BACKBONE_OUTS))
        last = in_shapes[-1].stride
        #: stride of every output level
        self.strides = [s.stride for s in in_shapes[-NUM_BACKBONE_OUTS:]] + \
            [last * 2 ** (i + 1) for i in range(num_outs - NUM_BACKBONE_OUTS)]
        self.width = width

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Pyramid features, finest first, ``width`` channels each.

        Args:
            feats: backbone features, one per input shape, in order.

        Returns:
            ``num_outs`` tensors at :attr:`strides`.
        """
        n = self.num_inputs
        if len(feats) != n:
            raise ValueError(f"FPN built for {n} backbone levels, got {len(feats)}")
        pool: list[torch.Tensor | None] = [None] * n
        for i in self.used_levels:
            pool[i] = self.proj[str(i)](feats[i])
        for s, cell in zip(self.specs, self.cells):
            pool.append(cell(pool[s.in0], pool[s.in1]))
        extra = [pool[n + k] for k in self.collect[:-NUM_BACKBONE_OUTS]]
        outs: list[torch.Tensor] = []
        for j, k in enumerate(self.collect[-NUM_BACKBONE_OUTS:]):  # -> P5, P4, P3
            y = pool[n + k]
            for e in extra:
                y = y + resize_to(e, y.shape[-2:])
            outs.insert(0, resize_to(y, feats[n - 1 - j].shape[-2:]))
        for i, conv in enumerate(self.extra):
            outs.append(conv(outs[-1] if i == 0 else F.relu(outs[-1])))
        return outs


class HeadTower(nn.Module):
    """One head branch (classification or regression): a sequence of ``C -> C`` operations.

    ``num_shared`` layers are single modules applied at every pyramid level; the others have one copy per
    level. With ``shared_position="last"`` (the authors' code) the shared layers are the last
    ``num_shared`` ones, with ``"first"`` the first ones. When ``in_channels != channels`` a shared
    conv1x1-GN-ReLU projection runs first.

    Args:
        ops: operation names (keys of :data:`OPS`), input to output.
        num_shared: how many layers are shared across levels (``0..len(ops)``).
        num_levels: pyramid levels.
        channels: width of the layers.
        in_channels: channels of the input features (default ``channels``).
        shared_position: ``"last"`` or ``"first"``.
    """

    def __init__(self, ops: Sequence[str], num_shared: int, num_levels: int, channels: int,
                 in_channels: int | None = None, shared_position: str = "last"):
        super().__init__()
        L = len(ops)
        if not 0 <= num_shared <= L:
            raise ValueError(f"num_shared must be in 0..{L}, got {num_shared}")
        if shared_position not in ("last", "first"):
            raise ValueError(f"shared_position must be 'last' or 'first', got {shared_position!r}")
        self.ops = tuple(ops)
        self.num_levels = int(num_levels)
        shared = range(L - num_shared, L) if shared_position == "last" else range(num_shared)
        self.shared_layers = frozenset(shared)
        c_in = channels if in_channels is None else in_channels
        self.proj = ConvGNReLU(c_in, channels, 1) if c_in != channels else None
        self.shared = nn.ModuleDict({str(i): build_op(ops[i], channels, OPS) for i in sorted(self.shared_layers)})
        unshared = [i for i in range(L) if i not in self.shared_layers]
        self.per_level = nn.ModuleList(nn.ModuleDict({str(i): build_op(ops[i], channels, OPS) for i in unshared})
                                       for _ in range(self.num_levels))

    def layers(self, level: int) -> list[nn.Module]:
        """The modules run at pyramid ``level``, input to output (projection excluded)."""
        return [self.shared[str(i)] if i in self.shared_layers else self.per_level[level][str(i)]
                for i in range(len(self.ops))]

    def forward(self, x: torch.Tensor, level: int) -> torch.Tensor:
        if not 0 <= level < self.num_levels:
            raise ValueError(f"head tower built for {self.num_levels} levels, got level {level}")
        if self.proj is not None:
            x = self.proj(x)
        for layer in self.layers(level):
            x = layer(x)
        return x
