"""Modulated deformable convolution (DCNv2; Zhu, Hu, Lin, Dai, "Deformable ConvNets v2", CVPR 2019).

IR-NAS and NAS-FCOS both search over a 3x3 DCNv2. Three interchangeable implementations share one
parameter layout -- mmcv's ``ModulatedDeformConv2dPack``: ``weight`` ``(C_out, C_in, k, k)``, optional
``bias``, and ``conv_offset`` (a ``k x k`` convolution predicting ``2*k*k`` offsets, interleaved
``(dy, dx)`` per kernel point, followed by ``k*k`` mask logits; the mask is ``sigmoid(logits)``), so a
checkpoint loads into any of them:

* ``"mmcv"``        -- :class:`mmcv.ops.ModulatedDeformConv2dPack` (compiled CPU/CUDA kernels);
* ``"torchvision"`` -- :func:`torchvision.ops.deform_conv2d` with a mask;
* ``"auto"``        -- :class:`ModulatedDeformConv2d`: torchvision's kernel on CUDA tensors and, on CPU,
  bilinear sampling of the ``k*k`` shifted inputs with :func:`torch.nn.functional.grid_sample` followed by
  one contraction with the weight. On CPU the compiled kernels loop per image and per column, and the
  sampled form is several times faster forward+backward at the sizes our searches use
  (``benchmarks/bench_deform.py`` prints the ratios), with outputs and gradients equal to mmcv's to float
  precision. The ``k*k`` sampled copies of the input are recomputed in backward (activation
  checkpointing), so training keeps no more activations than the compiled kernels do (both checked in
  ``tests/test_deform.py``).

All start as an ordinary convolution at half strength (zero offsets, mask 0.5): ``conv_offset`` is
zero-initialised, as in mmcv.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

BACKENDS: tuple[str, ...] = ("auto", "mmcv", "torchvision")


def sampled_deform_conv2d(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor,
                          bias: torch.Tensor | None = None, padding: int = 1, dilation: int = 1) -> torch.Tensor:
    """Stride-1 modulated deformable convolution by bilinear sampling (``grid_sample``).

    Kernel point ``k`` at output pixel ``(i, j)`` reads the input at
    ``(i - padding + dilation*ky + dy, j - padding + dilation*kx + dx)``, bilinearly, with zeros outside
    the image -- the sampling rule of mmcv's and torchvision's kernels.

    Args:
        x: input ``(B, C_in, H, W)``.
        offset: ``(B, 2*k*k, H, W)``, ``(dy, dx)`` interleaved per kernel point.
        mask: ``(B, k*k, H, W)`` modulation scalars.
        weight: ``(C_out, C_in, k, k)``.
        bias: optional ``(C_out,)``.
        padding: zero padding of the sampling grid (output size equals input size when
            ``padding == dilation * (k - 1) // 2``).
        dilation: spacing of the kernel points.

    Returns:
        ``(B, C_out, H, W)``.

    Raises:
        ValueError: ``padding`` does not keep the spatial size, or shapes disagree.
    """
    b, c, h, w = x.shape
    k = weight.shape[-1]
    kk = k * k
    if padding != dilation * (k - 1) // 2:
        raise ValueError(f"sampled_deform_conv2d keeps the size: padding must be {dilation * (k - 1) // 2} "
                         f"for kernel {k} and dilation {dilation}, got {padding}")
    if offset.shape != (b, 2 * kk, h, w) or mask.shape != (b, kk, h, w) or weight.shape[1] != c:
        raise ValueError(f"shapes disagree: x {tuple(x.shape)}, offset {tuple(offset.shape)}, "
                         f"mask {tuple(mask.shape)}, weight {tuple(weight.shape)}")
    taps = torch.arange(k, dtype=x.dtype, device=x.device) * dilation - padding
    ky = taps.repeat_interleave(k).view(1, kk, 1, 1)
    kx = taps.repeat(k).view(1, kk, 1, 1)
    off = offset.view(b, kk, 2, h, w)
    py = torch.arange(h, dtype=x.dtype, device=x.device).view(1, 1, h, 1) + ky + off[:, :, 0]
    px = torch.arange(w, dtype=x.dtype, device=x.device).view(1, 1, 1, w) + kx + off[:, :, 1]
    # align_corners=False: pixel p has normalised coordinate (2p + 1) / size - 1 (exact also for size 1)
    grid = torch.stack(((2 * px + 1) / w - 1, (2 * py + 1) / h - 1), dim=-1).view(b, kk * h, w, 2)
    sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled.view(b, c, kk, h, w) * mask.view(b, 1, kk, h, w)
    out = torch.einsum("bckhw,ock->bohw", sampled, weight.reshape(weight.shape[0], c, kk))
    return out if bias is None else out + bias.view(1, -1, 1, 1)


class TorchvisionModulatedDeformConv2d(nn.Module):
    """DCNv2 on :func:`torchvision.ops.deform_conv2d` with the parameter layout of mmcv's ``...Pack``.

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

    def offsets_and_mask(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The predicted ``(offset, mask)`` for input ``x`` (mmcv's channel order)."""
        o1, o2, mask = torch.chunk(self.conv_offset(x), 3, dim=1)
        return torch.cat((o1, o2), dim=1), torch.sigmoid(mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import deform_conv2d

        offset, mask = self.offsets_and_mask(x)
        return deform_conv2d(x, offset, self.weight, self.bias, padding=self.padding,
                             dilation=self.dilation, mask=mask)


class ModulatedDeformConv2d(TorchvisionModulatedDeformConv2d):
    """DCNv2, fastest available path per device: torchvision's kernel on CUDA, sampled form on CPU.

    Same arguments and parameters as :class:`TorchvisionModulatedDeformConv2d` (and mmcv's ``...Pack``).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            return super().forward(x)
        offset, mask = self.offsets_and_mask(x)
        args = (x, offset, mask, self.weight, self.bias, self.padding[0], self.dilation[0])
        if not torch.is_grad_enabled():
            return sampled_deform_conv2d(*args)
        # recompute the k*k sampled copies in backward instead of keeping them: saved activations stay
        # those of the compiled kernels (input, offsets, mask) for ~1.25x the time of keeping them
        return checkpoint(sampled_deform_conv2d, *args, use_reentrant=False)


def modulated_deform_conv(in_channels: int, out_channels: int, backend: str = "auto") -> nn.Module:
    """A 3x3 DCNv2 layer (stride 1, "same" padding, no bias).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        backend: one of :data:`BACKENDS` (see the module docstring).

    Returns:
        The deformable convolution module.

    Raises:
        ValueError: unknown backend.
        ImportError: ``backend="mmcv"`` but mmcv's compiled ops are not available.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "mmcv":
        from mmcv.ops import ModulatedDeformConv2dPack

        return ModulatedDeformConv2dPack(in_channels, out_channels, 3, padding=1, bias=False)
    cls = ModulatedDeformConv2d if backend == "auto" else TorchvisionModulatedDeformConv2d
    return cls(in_channels, out_channels, 3, padding=1, bias=False)
