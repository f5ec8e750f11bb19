"""Tests of the IR-NAS search space (Zhang, Chen, Li, Shen, "Memory-Efficient Hierarchical Neural
Architecture Search for Image Restoration"): its operations incl. DCNv2, the supernet's α/β and
derivation, the discrete network, invalid archs, and the DnCNN baseline. Tiny inputs, CPU only."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from densenas.arch import Arch, InvalidArch
from densenas.decoders.dncnn import DnCNN, dncnn_matching, dncnn_params
from densenas.decoders.irnas import WIDTH_MULTS, IRNASNet, IRNASSpace, IRNASSupernet
from densenas.decoders.irnas_ops import (ASPP, IRNAS_OPS, NONE_OP, OPS, MixedOp, TorchvisionModulatedDeformConv2d,
                                         modulated_deform_conv)
from densenas.costs import count_params
from densenas.ops import OPS as CORE_OPS
from densenas.ops import build_op
from densenas.space import ShapeSpec
from densenas.tasks.restoration.functional import add_gaussian_noise, restoration_loss

REAL_OPS = [o for o in IRNAS_OPS if o != NONE_OP]


@pytest.fixture(scope="module")
def space() -> IRNASSpace:
    return IRNASSpace(in_channels=3, width=4, layers=3, blocks=2)


# ----------------------------------------------------------------------------------------------- ops
def test_irnas_ops_in_its_table_without_none():
    assert IRNAS_OPS == ("conv3x3", "sep_conv_3x3", "conv3x3_dil2", "deform_conv3x3", "skip", "none")
    assert set(REAL_OPS) <= set(OPS)
    assert NONE_OP not in OPS  # supernet-internal only
    assert set(CORE_OPS) <= set(OPS) and "deform_conv3x3" not in CORE_OPS  # no import-time additions


@pytest.mark.parametrize("name", REAL_OPS)
def test_op_shape_and_grad(name):
    torch.manual_seed(0)
    op = build_op(name, 4, OPS).train()
    x = torch.randn(2, 4, 9, 11, requires_grad=True)
    y = op(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in op.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient for {pname}"
    if name == "deform_conv3x3":
        assert any("conv_offset" in n for n, _ in op.named_parameters())
    op.eval()
    with torch.no_grad():
        y1 = op(torch.randn(1, 4, 5, 7))
    assert y1.shape == (1, 4, 5, 7) and torch.isfinite(y1).all()


def test_deformable_backends_agree_and_offsets_matter():
    pytest.importorskip("mmcv.ops")
    torch.manual_seed(0)
    mm = modulated_deform_conv(4, 5, "mmcv")
    tv = modulated_deform_conv(4, 5, "torchvision")
    assert isinstance(tv, TorchvisionModulatedDeformConv2d)
    x = torch.randn(2, 4, 9, 11)
    zero_offset = mm(x).detach()
    with torch.no_grad():
        mm.conv_offset.weight.normal_(0, 0.3)
        mm.conv_offset.bias.normal_(0, 0.5)
    tv.load_state_dict(mm.state_dict())
    assert torch.allclose(mm(x), tv(x), atol=1e-5)
    assert (mm(x) - zero_offset).abs().max() > 1e-2  # learnt offsets/masks change the sampling
    # zero-initialised offsets and masks 0.5: an ordinary convolution at half strength
    plain = torch.nn.functional.conv2d(x, tv.weight, padding=1)
    fresh = modulated_deform_conv(4, 5, "torchvision")
    fresh.weight.data.copy_(tv.weight.data)
    assert torch.allclose(fresh(x), 0.5 * plain, atol=1e-5)
    with pytest.raises(ValueError, match="backend"):
        modulated_deform_conv(4, 4, "cuda")


def test_mixed_op_one_hot_and_none():
    torch.manual_seed(0)
    mixed = MixedOp(4, IRNAS_OPS).eval()
    x = torch.randn(1, 4, 8, 8)
    for k, name in enumerate(IRNAS_OPS):
        w = torch.zeros(len(IRNAS_OPS))
        w[k] = 1.0
        out = mixed(x, w)
        if name == NONE_OP:
            assert torch.equal(out, torch.zeros_like(x))
        else:
            ref = mixed.ops[mixed.index.index(k)](x)
            assert torch.allclose(out, ref)


def test_aspp_shape():
    y = ASPP(6, 5, rates=(2, 4))(torch.randn(2, 6, 12, 10))
    assert y.shape == (2, 5, 12, 10)


# ----------------------------------------------------------------------------------------- the space
def _arch(space: IRNASSpace, cell: list[tuple[int, int, str, str]], widths: list[int]) -> Arch:
    choices = {}
    for b, (i0, i1, o0, o1) in enumerate(cell):
        choices.update({f"cell.b{b}.in0": i0, f"cell.b{b}.in1": i1, f"cell.b{b}.op0": o0, f"cell.b{b}.op1": o1})
    choices.update({f"width.l{l}": w for l, w in enumerate(widths)})
    return Arch(space.name, tuple((d.name, choices[d.name]) for d in space.decisions()))


def test_decisions_in_controller_order(space):
    names = [d.name for d in space.decisions()]
    assert names == ["cell.b0.in0", "cell.b0.in1", "cell.b0.op0", "cell.b0.op1",
                     "cell.b1.in0", "cell.b1.in1", "cell.b1.op0", "cell.b1.op1",
                     "width.l0", "width.l1", "width.l2"]
    d = {x.name: x for x in space.decisions()}
    assert d["cell.b1.in0"].options == (0, 1, 2)
    assert d["cell.b0.op0"].options == tuple(REAL_OPS)
    assert d["width.l0"].options == WIDTH_MULTS == (1, 2, 4)


def test_sample_build_forward(space):
    rng = np.random.default_rng(0)
    x = torch.rand(2, 3, 12, 12)
    for _ in range(3):
        arch = space.sample(rng)
        space.check(arch)
        net = space.build(arch, {"image": ShapeSpec(3, 1)})
        assert isinstance(net, IRNASNet) and net.widths == space.widths(arch)
        y = net(x)
        assert y.shape == x.shape and torch.isfinite(y).all()
        child = space.mutate(arch, rng)
        space.check(child)
        assert child != arch
    assert "widths" in space.describe(arch)


@pytest.mark.parametrize("change, match", [
    ({"width.l1": 4}, r"width\.l1=4 jumps more than one level from width\.l0=1"),
    ({"width.l2": 3}, r"width\.l2=3 is not a width multiplier"),
    ({"cell.b1.in0": 3}, r"cell\.b1\.in0=3 out of range 0\.\.2"),
    ({"cell.b0.in1": 0}, r"cell\.b0\.in1=0 repeats cell\.b0\.in0"),
    ({"cell.b0.op1": "none"}, r"cell\.b0\.op1='none' is not an operation of this space"),
    ({"cell.b1.op0": "gap"}, r"cell\.b1\.op0='gap' is not an operation"),
    ({"cell.b0.in0": "0"}, r"cell\.b0\.in0='0' is not an integer index"),
])
def test_invalid_archs_name_the_field(space, change, match):
    good = _arch(space, [(0, 1, "conv3x3", "skip"), (0, 2, "sep_conv_3x3", "conv3x3")], [1, 2, 2])
    space.check(good)
    with pytest.raises(InvalidArch, match=match):
        space.check(good.replace(**change))
    with pytest.raises(InvalidArch):
        space.build(good.replace(**change))


def test_invalid_arch_structure(space):
    good = _arch(space, [(0, 1, "conv3x3", "skip"), (0, 2, "sep_conv_3x3", "conv3x3")], [1, 2, 2])
    with pytest.raises(InvalidArch, match="misses decision 'width.l2'"):
        space.check(Arch("irnas", tuple(c for c in good.choices if c[0] != "width.l2")))
    with pytest.raises(InvalidArch, match="not 'irnas'"):
        space.check(Arch("auxcell", good.choices))
    with pytest.raises(InvalidArch, match="unknown decisions"):
        space.check(Arch("irnas", good.choices + (("extra", 1),)))
    with pytest.raises(ValueError, match="expected one input ShapeSpec"):
        space.build(good, {"image": ShapeSpec(1, 1)})
    with pytest.raises(ValueError, match="unknown"):
        IRNASSpace(ops=("conv3x3", "nope"))
    with pytest.raises(ValueError, match="at least one besides"):
        IRNASSpace(ops=("none",))


def test_built_network_unused_second_input_has_no_projection(space):
    arch = _arch(space, [(0, 1, "conv3x3", "skip"), (0, 2, "skip", "conv3x3_dil2")], [2, 2, 1])
    net = space.build(arch)
    assert all(cell.pre1 is not None for cell in net.cells)
    arch2 = _arch(IRNASSpace(width=4, layers=3, blocks=1), [(0, 1, "conv3x3", "skip")], [1, 1, 1])
    net2 = IRNASSpace(width=4, layers=3, blocks=1).build(arch2)
    assert [c.out[0].out_channels for c in net2.cells] == [4, 4, 4]
    # every parameter of the built network is trained; the untrained network returns its input
    x = torch.rand(2, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(net(x), x)
    net(x).pow(2).mean().backward()
    assert all(p.grad is not None for p in net.parameters())


# -------------------------------------------------------------------------------------- the supernet
def test_supernet_forward_backward_grads(space):
    torch.manual_seed(0)
    net = space.build_supernet()
    assert isinstance(net, IRNASSupernet)
    arch_ids = {id(p) for p in net.arch_parameters()}
    weight_ids = {id(p) for p in net.weight_parameters()}
    assert arch_ids == {id(net.alpha), id(net.beta)} and not arch_ids & weight_ids
    assert arch_ids | weight_ids == {id(p) for p in net.parameters()}
    assert net.alpha.shape == (2 + 3, len(IRNAS_OPS)) and net.beta.shape == (3, 3, 3)
    clean = torch.rand(1, 3, 16, 16)
    noisy = add_gaussian_noise(clean, 30, torch.Generator().manual_seed(0))
    with torch.no_grad():  # the residual heads start at zero: the untrained supernet returns its input
        assert torch.equal(net(noisy), noisy)
        for head in net.heads:  # as after a first weight step, so every gradient below can flow
            head.out.weight.normal_(0, 0.1)
    out = net(noisy)
    assert out.shape == noisy.shape and torch.isfinite(out).all()
    restoration_loss(out, clean, lam=0.1).backward()
    assert net.alpha.grad is not None and net.alpha.grad.abs().sum() > 0
    band = np.abs(np.arange(3)[:, None] - np.arange(3)[None]) <= 1
    g = net.beta.grad.numpy()
    assert (np.abs(g[:, band]) > 0).all()  # every allowed width transition gets a gradient
    assert (g[:, ~band] == 0).all()  # 1x <-> 4x jumps are masked out
    missing = [n for n, p in net.named_parameters() if id(p) in weight_ids and
               (p.grad is None or p.grad.abs().sum() == 0)]
    assert not missing, missing[:5]


def test_alternating_weight_and_arch_steps_through_the_protocol():
    torch.manual_seed(0)
    sp = IRNASSpace(width=2, layers=2, blocks=2)
    net = sp.build_supernet()
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.05, momentum=0.9)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=0.05)
    clean = torch.rand(4, 3, 12, 12)
    noisy = add_gaussian_noise(clean, 30, torch.Generator().manual_seed(0))
    alpha0, beta0 = net.alpha.detach().clone(), net.beta.detach().clone()
    for opt, params, sl in ((w_opt, net.weight_parameters(), slice(0, 2)), (a_opt, net.arch_parameters(),
                                                                             slice(2, 4))):
        opt.zero_grad(set_to_none=True)
        restoration_loss(net(noisy[sl]), clean[sl], lam=0.1).backward(inputs=params)
        opt.step()
    assert not torch.equal(net.alpha, alpha0) and not torch.equal(net.beta, beta0)
    sp.check(net.derive())


def test_derive_at_init_is_valid_and_builds(space):
    torch.manual_seed(1)
    net = space.build_supernet()
    arch = net.derive()
    space.check(arch)
    assert Arch.from_json(arch.to_json()) == arch
    assert space.build(arch)(torch.rand(1, 3, 12, 12)).shape == (1, 3, 12, 12)
    # large random β that favour forbidden jumps still decode to an allowed path
    with torch.no_grad():
        net.beta.copy_(torch.randn(3, 3, 3) * 10)
        net.beta[:, 0, 2] = 100.0
        net.beta[:, 2, 0] = 100.0
    space.check(net.derive())


def test_derive_recovers_a_planted_architecture(space):
    target_cell = [(0, 1, "deform_conv3x3", "conv3x3_dil2"), (0, 2, "sep_conv_3x3", "skip")]
    target_widths = [1, 2, 4]
    net = space.build_supernet()
    k = {name: i for i, name in enumerate(space.ops)}
    with torch.no_grad():
        net.alpha.zero_()
        edge = 0
        for b, (i0, i1, o0, o1) in enumerate(target_cell):
            for j in range(2 + b):
                if j in (i0, i1):
                    net.alpha[edge, k[o0 if j == i0 else o1]] = 3.0
                else:
                    net.alpha[edge, k[NONE_OP]] = 6.0  # dominated by none: a weak edge, never kept
                edge += 1
        net.beta.zero_()
        states = [WIDTH_MULTS.index(w) for w in target_widths]
        net.beta[0, :, states[0]] = 5.0  # from any stem width into layer 0's width
        for l in range(1, 3):
            net.beta[l, states[l - 1], states[l]] = 5.0
    arch = net.derive()
    assert arch == _arch(space, target_cell, target_widths)
    assert space.widths(arch) == [4, 8, 16]


def test_derive_prefers_viterbi_path_over_greedy():
    sp = IRNASSpace(width=2, layers=2, blocks=1, ops=("conv3x3", "skip"))
    net = sp.build_supernet()
    with torch.no_grad():
        net.beta.zero_()
        net.beta[0, :, 2] = 1.0   # layer 0 greedily prefers 4W ...
        net.beta[0, :, 0] = 0.9
        net.beta[1, 0, 0] = 8.0   # ... but the path through 1W continues far more strongly
    assert [sp.widths(net.derive())[l] // 2 for l in range(2)] == [1, 1]


def test_discrete_network_trains_on_denoising():
    torch.manual_seed(0)
    sp = IRNASSpace(width=4, layers=2, blocks=1, ops=("conv3x3", "skip", "none"), aspp=False)
    arch = _arch(sp, [(0, 1, "conv3x3", "skip")], [1, 2])
    net = sp.build(arch)
    clean = torch.rand(2, 3, 16, 16) * 0.5 + 0.25
    noisy = add_gaussian_noise(clean, 50, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = restoration_loss(net(noisy), clean, lam=0.1)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# ---------------------------------------------------------------------------------------------- DnCNN
def test_dncnn_structure_and_param_count():
    net = DnCNN(in_channels=1, width=64, depth=17)
    assert count_params(net) == dncnn_params(64, 17, 1) == 556096  # the original DnCNN-S size
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(convs) == 17 and len(bns) == 15
    x = torch.rand(2, 1, 10, 10)
    with torch.no_grad():
        net.body[-1].weight.zero_()
    assert torch.equal(net.eval()(x), x)  # residual: output = input - predicted noise
    with pytest.raises(ValueError, match="depth >= 2"):
        DnCNN(depth=1)


def test_dncnn_matches_searched_network_params(space):
    arch = _arch(space, [(0, 1, "conv3x3", "deform_conv3x3"), (0, 2, "sep_conv_3x3", "skip")], [2, 4, 4])
    target = count_params(space.build(arch))
    net = dncnn_matching(target, depth=8, in_channels=3)
    assert count_params(net) >= target
    assert dncnn_params(net.width - 1, 8, 3) < target  # smallest such width
    assert net(torch.rand(1, 3, 8, 8)).shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match="no DnCNN"):
        dncnn_matching(10 ** 12, depth=3, max_width=64)


def test_untrained_dncnn_returns_its_input_then_learns():
    torch.manual_seed(0)
    net = DnCNN(in_channels=3, width=8, depth=5).train()
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(net(x), x)  # zero-initialised residual
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    clean = torch.zeros_like(x)
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), clean).backward()
        opt.step()
    assert not torch.equal(net(x), x)
