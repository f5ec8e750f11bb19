"""Operations and cells of the Auto-DeepLab search space.

After Liu, Chen, Schroff, Adam, Hua, Yuille, Fei-Fei, "Auto-DeepLab: Hierarchical Neural Architecture
Search for Semantic Image Segmentation" (CVPR 2019), sec. 3.1 and 4: the cell-level candidate set is
3x3 / 5x5 depthwise-separable convolution, 3x3 / 5x5 atrous (rate 2) separable convolution, 3x3 average
and max pooling, skip connection and no connection. The ops follow DARTS (Liu, Simonyan, Yang, ICLR 2019,
``operations.py``): ``ReLU -> conv -> BN`` order, a separable convolution is two stacked
``ReLU -> depthwise -> pointwise -> BN`` units, an atrous one is a single unit.

Besides the ops this module holds the pieces the supernet and the decoded network share: the cell input
preprocessing (:class:`Preprocess`, a 1x1 ``ReLU-conv-BN`` plus a bilinear resize to the cell's
resolution), the continuous cell (:class:`SearchCell`, mixed ops on every edge) and the discrete cell
(:class:`Cell`, two ops per block), the stem and the ASPP head.

All batch norms are :class:`SafeBatchNorm2d`: at stride 32 a small crop leaves a ``1 x 1`` map, and with
batch size 1 a training-mode batch norm would see a single value per channel; it then normalises with
its running statistics instead of raising.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

AUTODEEPLAB_OPS: tuple[str, ...] = (
    "sep_conv_3x3", "sep_conv_5x5", "sep_conv_3x3_dil2", "sep_conv_5x5_dil2",
    "avg_pool_3x3", "max_pool_3x3", "skip", "none")
"""The paper's eight candidate operations, in a fixed order (``none`` = no connection)."""

NONE = "none"


class SafeBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` that, in training, falls back to running statistics when it sees one value per
    channel (batch 1 at a ``1 x 1`` map), where batch statistics are undefined."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1 and self.track_running_stats:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        return super().forward(x)


class ReLUConvBN(nn.Sequential):
    """``ReLU -> Conv2d(bias=False) -> BN`` (the DARTS unit), "same" padding at stride 1."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 1, affine: bool = True):
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=False),
                         SafeBatchNorm2d(c_out, affine=affine))


class DilSepUnit(nn.Sequential):
    """``ReLU -> depthwise k x k (dilated) -> pointwise 1x1 -> BN``."""

    def __init__(self, channels: int, kernel_size: int, dilation: int = 1, affine: bool = True):
        pad = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(channels, channels, kernel_size, padding=pad, dilation=dilation, groups=channels,
                      bias=False),
            nn.Conv2d(channels, channels, 1, bias=False),
            SafeBatchNorm2d(channels, affine=affine))


class Zero(nn.Module):
    """The ``none`` op: no connection (an all-zero map of the input's shape)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def _sep(k: int) -> Callable[[int, bool], nn.Module]:
    return lambda c, affine: nn.Sequential(DilSepUnit(c, k, 1, affine), DilSepUnit(c, k, 1, affine))


OP_FACTORIES: dict[str, Callable[[int, bool], nn.Module]] = {
    "sep_conv_3x3": _sep(3),
    "sep_conv_5x5": _sep(5),
    "sep_conv_3x3_dil2": lambda c, affine: DilSepUnit(c, 3, 2, affine),
    "sep_conv_5x5_dil2": lambda c, affine: DilSepUnit(c, 5, 2, affine),
    "avg_pool_3x3": lambda c, affine: nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
    "max_pool_3x3": lambda c, affine: nn.MaxPool2d(3, stride=1, padding=1),
    "skip": lambda c, affine: nn.Identity(),
    "none": lambda c, affine: Zero(),
}
"""Op name -> factory ``(channels, affine) -> module`` (``channels`` in and out, stride 1)."""


def build_adl_op(name: str, channels: int, affine: bool = True) -> nn.Module:
    """Instantiate one Auto-DeepLab op; raises ``KeyError`` listing the known names."""
    try:
        return OP_FACTORIES[name](channels, affine)
    except KeyError:
        raise KeyError(f"unknown Auto-DeepLab operation {name!r}; known: {list(OP_FACTORIES)}") from None


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize (no-op when the size already matches)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def num_edges(blocks: int) -> int:
    """Edges of a cell with ``blocks`` blocks: block ``b`` reads ``2 + b`` earlier states."""
    return sum(2 + b for b in range(blocks))


def edge_index(block: int, state: int) -> int:
    """Row of α for the edge from state ``state`` (0 = H^{l-2}, 1 = H^{l-1}, 2 + j = block j) into
    block ``block``."""
    return num_edges(block) + state


class Preprocess(nn.Module):
    """Cell input: 1x1 ``ReLU-conv-BN`` to the cell's block width and a bilinear resize to its size.

    Downsampling resizes before the convolution and upsampling after it, so the convolution always runs
    at the smaller of the two resolutions.
    """

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        self.op = ReLUConvBN(c_in, c_out, 1, affine)

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        if x.shape[-2] * x.shape[-1] > size[0] * size[1]:
            return self.op(resize(x, size))
        return resize(self.op(x), size)


class MixedOp(nn.Module):
    """DARTS mixed op: ``sum_k w_k op_k(x)``; the ``none`` op is never computed (it adds zero, and its
    weight still shapes the others' through the softmax). Pools are followed by a non-affine BN, as in
    DARTS, so their scale matches the convolutions'."""

    def __init__(self, channels: int, ops: Sequence[str]):
        super().__init__()
        self.names = tuple(ops)
        self.ops = nn.ModuleDict()
        for name in self.names:
            if name == NONE:
                continue
            op = build_adl_op(name, channels, affine=False)
            if "pool" in name:
                op = nn.Sequential(op, SafeBatchNorm2d(channels, affine=False))
            self.ops[name] = op

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out = None
        for k, name in enumerate(self.names):
            if name == NONE:
                continue
            y = weights[k] * self.ops[name](x)
            out = y if out is None else out + y
        return out if out is not None else x.mul(0.0)


class SearchCell(nn.Module):
    """Continuous Auto-DeepLab cell: every block sums mixed ops over all earlier states (DARTS relaxation).

    Args:
        c_pp: channels of H^{l-2}.
        c_p: channels of H^{l-1}.
        channels: block width ``C`` at this level; the output has ``blocks * C`` channels.
        blocks: blocks ``B``.
        ops: candidate op names (one α column each).
    """

    def __init__(self, c_pp: int, c_p: int, channels: int, blocks: int, ops: Sequence[str]):
        super().__init__()
        self.blocks = blocks
        self.pre0 = Preprocess(c_pp, channels, affine=False)
        self.pre1 = Preprocess(c_p, channels, affine=False)
        self.edges = nn.ModuleList(MixedOp(channels, ops) for _ in range(num_edges(blocks)))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, size: Sequence[int],
                alpha: torch.Tensor) -> torch.Tensor:
        """``alpha``: softmax-normalised op weights, shape ``(num_edges, num_ops)``."""
        states = [self.pre0(s0, size), self.pre1(s1, size)]
        for b in range(self.blocks):
            h = None
            for j, s in enumerate(states):
                e = edge_index(b, j)
                y = self.edges[e](s, alpha[e])
                h = y if h is None else h + y
            states.append(h)
        return torch.cat(states[2:], dim=1)


class Cell(nn.Module):
    """Discrete Auto-DeepLab cell: block ``b`` is ``op0(state[in0]) + op1(state[in1])``; the output is
    the concatenation of the ``B`` blocks. Inputs no block reads get no preprocessing (nor weights).

    Args:
        genotype: per block ``(in0, in1, op0, op1)``; state 0 = H^{l-2}, 1 = H^{l-1}, 2 + j = block j.
        c_pp: channels of H^{l-2}.
        c_p: channels of H^{l-1}.
        channels: block width ``C``.
    """

    def __init__(self, genotype: Sequence[tuple[int, int, str, str]], c_pp: int, c_p: int, channels: int):
        super().__init__()
        self.genotype = [tuple(g) for g in genotype]
        used = {i for g in self.genotype for i in g[:2]}
        self.pre0 = Preprocess(c_pp, channels) if 0 in used else None
        self.pre1 = Preprocess(c_p, channels) if 1 in used else None
        self.ops = nn.ModuleList(nn.ModuleList([build_adl_op(g[2], channels), build_adl_op(g[3], channels)])
                                 for g in self.genotype)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        states: list[torch.Tensor | None] = [
            self.pre0(s0, size) if self.pre0 is not None else None,
            self.pre1(s1, size) if self.pre1 is not None else None]
        for (i0, i1, _, _), (op0, op1) in zip(self.genotype, self.ops):
            states.append(op0(states[i0]) + op1(states[i1]))
        return torch.cat(states[2:], dim=1)


class Stem(nn.Module):
    """Two 3x3 stride-2 ``conv-BN-ReLU`` layers: returns the stride-2 and the stride-4 features."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.conv0 = nn.Sequential(nn.Conv2d(in_channels, channels, 3, 2, 1, bias=False),
                                   SafeBatchNorm2d(channels), nn.ReLU(inplace=True))
        self.conv1 = nn.Sequential(nn.Conv2d(channels, channels, 3, 2, 1, bias=False),
                                   SafeBatchNorm2d(channels), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x0 = self.conv0(x)
        return x0, self.conv1(x0)


def _cbr(c_in: int, c_out: int, k: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=dilation * (k - 1) // 2, dilation=dilation,
                                   bias=False), SafeBatchNorm2d(c_out), nn.ReLU(inplace=True))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling + classifier (DeepLab-v3): a 1x1 branch, one 3x3 branch per rate
    and an image-pooling branch (no BN after pooling), concatenated, fused by 1x1 conv-BN-ReLU and
    classified by a 1x1 conv. The paper's search uses one 3x3 branch at rate ``96 / stride``.

    Args:
        c_in: input channels.
        channels: channels of every branch and of the fused map.
        num_classes: output channels.
        rates: atrous rates of the 3x3 branches.
    """

    def __init__(self, c_in: int, channels: int, num_classes: int, rates: Sequence[int]):
        super().__init__()
        self.branches = nn.ModuleList([_cbr(c_in, channels, 1)] +
                                      [_cbr(c_in, channels, 3, int(r)) for r in rates])
        self.pool = nn.Sequential(nn.Conv2d(c_in, channels, 1, bias=True), nn.ReLU(inplace=True))
        self.fuse = _cbr(channels * (len(rates) + 2), channels, 1)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(resize(self.pool(F.adaptive_avg_pool2d(x, 1)), x.shape[-2:]))
        return self.classifier(self.fuse(torch.cat(outs, dim=1)))
