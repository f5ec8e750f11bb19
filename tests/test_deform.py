"""Tests of :mod:`densenas.deform` (DCNv2, Zhu et al., CVPR 2019): the sampled CPU form agrees with
mmcv's and torchvision's compiled kernels in outputs and in every gradient (input, weight, offset
convolution), including samples that leave the image, dilation, bias and 1x1 maps; checkpoints move
between the three backends; bad arguments are named."""
from __future__ import annotations

import pytest
import torch

from densenas.deform import (ModulatedDeformConv2d, TorchvisionModulatedDeformConv2d, modulated_deform_conv,
                             sampled_deform_conv2d)


def _randomise_offsets(m: torch.nn.Module, scale: float = 1.5) -> None:
    with torch.no_grad():
        m.conv_offset.weight.normal_(0, 0.3)
        m.conv_offset.bias.normal_(0, scale)  # large enough that some samples fall outside the image


def _forward_and_grads(m: torch.nn.Module, x: torch.Tensor, g: torch.Tensor) -> list[torch.Tensor]:
    x = x.clone().requires_grad_(True)
    m.zero_grad()
    y = m(x)
    (y * g).sum().backward()
    return [y.detach(), x.grad, m.weight.grad, m.conv_offset.weight.grad, m.conv_offset.bias.grad]


@pytest.mark.parametrize("shape", [(2, 4, 9, 11), (3, 5, 1, 1), (1, 3, 2, 7)])
def test_sampled_matches_compiled_kernels(shape):
    torch.manual_seed(0)
    ref = modulated_deform_conv(shape[1], 6, "torchvision")
    _randomise_offsets(ref)
    others = [modulated_deform_conv(shape[1], 6, "auto")]
    try:
        others.append(modulated_deform_conv(shape[1], 6, "mmcv"))
    except ImportError:
        pass
    x = torch.randn(*shape)
    g = torch.randn(shape[0], 6, *shape[2:])
    expected = _forward_and_grads(ref, x, g)
    assert expected[0].abs().max() > 0
    for m in others:
        m.load_state_dict(ref.state_dict())  # one parameter layout for all backends
        for got, want in zip(_forward_and_grads(m, x, g), expected):
            assert torch.allclose(got, want, atol=1e-5, rtol=1e-4), type(m).__name__


def test_sampled_function_dilation_bias_and_outside_samples():
    torch.manual_seed(1)
    from torchvision.ops import deform_conv2d

    x = torch.randn(2, 3, 6, 5)
    w = torch.randn(4, 3, 3, 3)
    b = torch.randn(4)
    offset = 3 * torch.randn(2, 18, 6, 5)  # many points land outside: zeros, as in the kernels
    mask = torch.rand(2, 9, 6, 5)
    got = sampled_deform_conv2d(x, offset, mask, w, b, padding=2, dilation=2)
    want = deform_conv2d(x, offset, w, b, padding=2, dilation=2, mask=mask)
    assert torch.allclose(got, want, atol=1e-5)
    # zero offsets and unit mask: the ordinary convolution
    plain = torch.nn.functional.conv2d(x, w, b, padding=1)
    assert torch.allclose(sampled_deform_conv2d(x, torch.zeros_like(offset), torch.ones_like(mask), w, b), plain,
                          atol=1e-5)


def test_fresh_layer_is_half_strength_convolution_and_errors():
    torch.manual_seed(2)
    m = modulated_deform_conv(4, 5)
    assert isinstance(m, ModulatedDeformConv2d) and isinstance(m, TorchvisionModulatedDeformConv2d)
    x = torch.randn(2, 4, 7, 7)
    assert torch.allclose(m(x), 0.5 * torch.nn.functional.conv2d(x, m.weight, padding=1), atol=1e-5)
    with pytest.raises(ValueError, match="backend"):
        modulated_deform_conv(4, 4, "cuda")
    with pytest.raises(ValueError, match="padding must be 1"):
        sampled_deform_conv2d(x, torch.zeros(2, 18, 7, 7), torch.ones(2, 9, 7, 7), m.weight, padding=0)
    with pytest.raises(ValueError, match="shapes disagree"):
        sampled_deform_conv2d(x, torch.zeros(2, 9, 7, 7), torch.ones(2, 9, 7, 7), m.weight)


def saved_activation_bytes(module: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd keeps for backward of ``module(x)``."""
    storages = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return sum(storages.values())


def test_sampled_path_keeps_no_more_activations_than_the_kernel():
    """The k*k sampled copies are recomputed in backward, not kept (9x the input each otherwise)."""
    x = torch.randn(2, 8, 24, 24, requires_grad=True)
    auto, tv = modulated_deform_conv(8, 8, "auto"), modulated_deform_conv(8, 8, "torchvision")
    assert saved_activation_bytes(auto, x) <= saved_activation_bytes(tv, x) < 9 * x.numel() * 4
    with torch.no_grad():  # and no recomputation machinery at inference
        assert torch.equal(auto(x), sampled_deform_conv2d(x, *auto.offsets_and_mask(x), auto.weight))
