"""Tests of the Auto-DeepLab space (Liu et al., "Auto-DeepLab: Hierarchical Neural Architecture Search for
Semantic Image Segmentation", CVPR 2019): ops, supernet, decoding (cell top-2, Viterbi path over
β normalised as transition probabilities), discrete network and the mmseg adapter. Tiny inputs, CPU."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from densenas.arch import Arch, InvalidArch
from densenas.decoders.autodeeplab import (STRIDES, AutoDeepLabNet, AutoDeepLabSpace, AutoDeepLabSupernet,
                                           decode_cell, decode_path, levels_at, space_for_arch)
from densenas.decoders.autodeeplab_ops import (AUTODEEPLAB_OPS, OP_FACTORIES, MixedOp, SafeBatchNorm2d,
                                               build_adl_op, edge_index, num_edges)
from densenas.space import ShapeSpec

NUM_CLASSES = 3


@pytest.fixture(scope="module")
def space() -> AutoDeepLabSpace:
    return AutoDeepLabSpace(NUM_CLASSES, layers=4, blocks=3, filter_multiplier=4, aspp_channels=8,
                            aspp_rates=(4, 2, 1, 1))


@pytest.fixture(scope="module")
def supernet(space) -> AutoDeepLabSupernet:
    torch.manual_seed(0)
    return space.build_supernet()


def _all_paths(layers: int) -> list[list[int]]:
    return [list(p) for p in itertools.product(range(4), repeat=layers)
            if p[0] <= 1 and all(abs(a - b) <= 1 for a, b in zip(p, p[1:]))]


# ------------------------------------------------------------------------------------------------ ops
def test_op_set_is_the_papers():
    assert AUTODEEPLAB_OPS == ("sep_conv_3x3", "sep_conv_5x5", "sep_conv_3x3_dil2", "sep_conv_5x5_dil2",
                               "avg_pool_3x3", "max_pool_3x3", "skip", "none")
    assert set(OP_FACTORIES) == set(AUTODEEPLAB_OPS)
    with pytest.raises(KeyError, match="unknown Auto-DeepLab operation 'conv7'"):
        build_adl_op("conv7", 4)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("name", AUTODEEPLAB_OPS)
def test_op_shape_and_grad(name, affine):
    torch.manual_seed(0)
    op = build_adl_op(name, 6, affine=affine).train()
    x = torch.randn(2, 6, 7, 9, requires_grad=True)
    y = op(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    if name == "none":
        assert not y.abs().sum() and not x.grad.abs().sum()
    else:
        assert x.grad.abs().sum() > 0
    for pname, p in op.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname
    assert (len(list(op.parameters())) > 0) == ("conv" in name)


def test_safe_batchnorm_single_value_per_channel():
    bn = SafeBatchNorm2d(4).train()
    y = bn(torch.randn(1, 4, 1, 1))  # plain BatchNorm2d raises here
    assert torch.isfinite(y).all() and torch.equal(bn.running_mean, torch.zeros(4))
    bn(torch.randn(2, 4, 3, 3) + 5)
    assert bn.running_mean.mean() > 0.1  # ordinary batches still update the statistics


def test_mixed_op_skips_none_and_weights_ops():
    torch.manual_seed(0)
    mix = MixedOp(4, AUTODEEPLAB_OPS).eval()
    assert "none" not in mix.ops and len(mix.ops) == 7
    x = torch.randn(1, 4, 5, 5)
    w = torch.softmax(torch.randn(8), 0)
    ref = sum(w[k] * mix.ops[n](x) for k, n in enumerate(AUTODEEPLAB_OPS) if n != "none")
    assert torch.allclose(mix(x, w), ref, atol=1e-6)
    only_skip = torch.zeros(8)
    only_skip[AUTODEEPLAB_OPS.index("skip")] = 1
    assert torch.equal(mix(x, only_skip), x)


# ------------------------------------------------------------------------------------------ supernet
def test_supernet_builds_only_reachable_nodes(space, supernet):
    assert levels_at(0) == [0, 1] and levels_at(1) == [0, 1, 2] and levels_at(5) == [0, 1, 2, 3]
    assert len(supernet.cells) == 2 + 5 + 8 + 10
    assert not any(k.startswith("l0_s16") or k.startswith("l0_s32") or k.startswith("l1_s32")
                   for k in supernet.cells)
    assert sorted(supernet.heads) == ["0", "1", "2", "3"]
    assert supernet.alpha.shape == (num_edges(3), 8) == (9, 8)
    assert supernet.beta.shape == (4, 4, 3)


def test_supernet_forward_backward_grads(space, supernet):
    supernet.train().zero_grad(set_to_none=True)
    x = torch.randn(1, 3, 32, 32)
    y = supernet(x)
    assert y.shape == (1, NUM_CLASSES, 32, 32) and torch.isfinite(y).all()
    torch.nn.functional.cross_entropy(y, torch.randint(0, NUM_CLASSES, (1, 32, 32))).backward()
    for p in supernet.arch_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    missing = [n for n, p in supernet.named_parameters() if p.grad is None]
    assert not missing, missing[:5]
    ids = {id(p) for p in supernet.arch_parameters()}
    assert len(supernet.weight_parameters()) == len(list(supernet.parameters())) - 2
    assert all(id(p) not in ids for p in supernet.weight_parameters())
    g = supernet.alpha.grad
    assert not g[:, AUTODEEPLAB_OPS.index("none")].eq(0).all()  # none's weight is learnt too
    supernet.eval()
    with torch.no_grad():
        assert supernet(torch.randn(2, 3, 20, 28)).shape == (2, NUM_CLASSES, 20, 28)


def test_beta_normalised_over_outgoing_moves(supernet):
    with torch.no_grad():
        supernet.beta.normal_()
        b = supernet.beta_weights()
    assert torch.allclose(b.sum(-1), torch.ones(4, 4))
    assert (b[:, 0, 0] == 0).all() and (b[:, 3, 2] == 0).all()  # no move finer than 4 / coarser than 32
    assert (b[:, 1:3] > 0).all()


def test_checkpointed_cells_give_same_gradients():
    kw = dict(layers=2, blocks=2, filter_multiplier=2, aspp_channels=4, aspp_rates=(2, 1, 1, 1))
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(1)
        net = AutoDeepLabSpace(NUM_CLASSES, checkpoint_cells=ckpt, **kw).build_supernet().train()
        net(torch.randn(2, 3, 16, 16)).square().mean().backward()
        grads.append([p.grad.clone() for p in net.arch_parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6)


# ------------------------------------------------------------------------------------------ decoding
def test_derive_gives_valid_arch_that_builds_and_runs(space, supernet):
    arch = supernet.derive()
    space.check(arch)
    assert Arch.from_json(arch.to_json()) == arch
    net = space.build(arch, {"image": ShapeSpec(3, 1)})
    assert isinstance(net, AutoDeepLabNet)
    x = torch.randn(2, 3, 32, 32)
    y = net.train()(x)
    assert y.shape == (2, NUM_CLASSES, 32, 32) and torch.isfinite(y).all()
    y.mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    assert net.features.out_stride == arch[f"path.l{space.layers - 1}"]
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, 24, 40)).shape == (1, NUM_CLASSES, 24, 40)


def test_derive_follows_hand_set_beta(space, supernet):
    target = [1, 2, 2, 1]  # strides 8 -> 16 -> 16 -> 8
    with torch.no_grad():
        supernet.beta.zero_()
        prev = 0
        for l, j in enumerate(target):
            supernet.beta[l, prev, j - prev + 1] = 4.0
            prev = j
    assert space.path(supernet.derive()) == [STRIDES[j] for j in target]


def test_viterbi_path_is_the_most_probable_valid_path():
    rng = np.random.default_rng(0)
    for trial in range(40):
        layers = int(rng.integers(1, 6))
        logits = rng.normal(size=(layers, 4, 3)) * 3
        mask = np.array([[0 <= i + m - 1 < 4 for m in range(3)] for i in range(4)])
        p = np.where(mask, np.exp(logits), 0)
        p /= p.sum(-1, keepdims=True)
        path = decode_path(p)
        assert path[0] in (0, 1) and all(abs(a - b) <= 1 for a, b in zip(path, path[1:])), path

        def prob(q):
            out, prev = 1.0, 0
            for l, j in enumerate(q):
                out *= p[l, prev, j - prev + 1]
                prev = j
            return out
        best = max(_all_paths(layers), key=prob)
        assert np.isclose(prob(path), prob(best)), (trial, path, best)


def test_viterbi_is_not_greedy():
    # greedy takes 4 -> 8 (0.6) then is stuck with weak moves; the best path stays at 4 (0.4 * 0.9)
    p = np.zeros((2, 4, 3))
    p[0, 0] = [0, 0.4, 0.6]
    p[1, 0] = [0, 0.9, 0.1]
    p[1, 1] = [0.34, 0.33, 0.33]
    p[1, 2:] = [1 / 3, 1 / 3, 1 / 3]
    assert decode_path(p) == [0, 0]


def test_decode_cell_top2_ignores_none():
    ops = AUTODEEPLAB_OPS
    alpha = np.full((num_edges(2), len(ops)), 1.0)
    alpha[:, ops.index("none")] = 50.0  # the strongest op everywhere, never chosen
    alpha[edge_index(0, 1), ops.index("sep_conv_5x5")] = 9.0
    alpha[edge_index(0, 0), ops.index("max_pool_3x3")] = 3.0
    alpha[edge_index(1, 2), ops.index("skip")] = 8.0
    alpha[edge_index(1, 0), ops.index("sep_conv_3x3_dil2")] = 7.0
    alpha[edge_index(1, 1), ops.index("avg_pool_3x3")] = 2.0
    alpha = np.exp(alpha) / np.exp(alpha).sum(1, keepdims=True)
    assert decode_cell(alpha, ops, 2) == [(0, 1, "max_pool_3x3", "sep_conv_5x5"),
                                          (0, 2, "sep_conv_3x3_dil2", "skip")]


# ------------------------------------------------------------------------------------- discrete space
def test_decisions_sample_mutate(space):
    names = [d.name for d in space.decisions()]
    assert names[:4] == ["cell.b0.in0", "cell.b0.in1", "cell.b0.op0", "cell.b0.op1"]
    assert names[-4:] == ["path.l0", "path.l1", "path.l2", "path.l3"]
    assert "none" not in space.decisions()[2].options
    rng = np.random.default_rng(0)
    paths = set()
    for _ in range(300):
        arch = space.sample(rng)
        space.check(arch)
        paths.add(tuple(space.path(arch)))
        space.check(space.mutate(arch, rng))
    assert len(paths) > 0.8 * len(_all_paths(4))


@pytest.mark.parametrize("change, match", [
    ({"path.l0": 16}, "path.l0=16.*stride 4 or 8"),
    ({"path.l1": 32}, "path.l1=32 jumps from path.l0=8"),
    ({"cell.b1.in0": 2, "cell.b1.in1": 1}, "cell.b1.in1=1 must be greater than cell.b1.in0=2"),
    ({"cell.b0.in1": 2}, "'cell.b0.in1'.*2"),
    ({"cell.b2.op0": "none"}, "'cell.b2.op0'.*'none'"),
    ({"path.l3": 64}, "'path.l3'.*64"),
])
def test_invalid_arch_names_decision(space, change, match):
    good = space.arch_from([(0, 1, "skip", "sep_conv_3x3"), (0, 2, "skip", "skip"), (1, 3, "max_pool_3x3",
                            "skip")], [8, 8, 16, 8])
    space.check(good)
    with pytest.raises(InvalidArch, match=match):
        space.check(good.replace(**change))


def test_space_arguments_and_space_for_arch(space):
    with pytest.raises(ValueError, match="unknown"):
        AutoDeepLabSpace(3, ops=("skip", "conv9"))
    with pytest.raises(ValueError, match="aspp_rates"):
        AutoDeepLabSpace(3, aspp_rates=(1, 2))
    arch = space.sample(np.random.default_rng(1))
    other = space_for_arch(arch, 5, filter_multiplier=2)
    assert (other.layers, other.blocks) == (4, 3)
    other.check(arch)
    assert "path 4(stem) ->" in space.describe(arch)


# ------------------------------------------------------------------------------------------- mmseg
def test_mmseg_backbone_with_aspp_head_builds_and_runs(space):
    import mmseg.models  # noqa: F401  (registers mmseg's modules)
    from mmengine.config import ConfigDict
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)

    import densenas.tasks.segmentation.mm  # noqa: F401  (registers AutoDeepLabBackbone)
    from densenas.decoders.autodeeplab_mmseg import autodeeplab_model_dict

    arch = space.arch_from([(0, 1, "sep_conv_3x3", "skip"), (1, 2, "sep_conv_3x3_dil2", "max_pool_3x3"),
                            (0, 3, "avg_pool_3x3", "sep_conv_5x5")], [4, 8, 16, 16])
    from densenas.tasks.segmentation.export import LOSS_DECODE

    cfg = autodeeplab_model_dict(arch, NUM_CLASSES, filter_multiplier=4, channels=8, loss_decode=LOSS_DECODE)
    assert cfg["decode_head"]["dilations"] == (1, 6, 12, 18)
    torch.manual_seed(0)
    model = MODELS.build(ConfigDict(cfg))  # ConfigDict: the segmentor reads test_cfg.mode
    model.init_weights()
    assert model.backbone.out_stride == 16 and model.backbone.out_channels == 3 * 4 * 4
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64), mode="tensor")
    assert out.shape == (1, NUM_CLASSES, 4, 4) and torch.isfinite(out).all()
    model.train()
    samples = [SegDataSample(gt_sem_seg=PixelData(data=torch.randint(0, NUM_CLASSES, (1, 64, 64))),
                             metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64),
                                           padding_size=[0, 0, 0, 0]))
               for _ in range(2)]
    losses = model(torch.randn(2, 3, 64, 64), samples, mode="loss")
    assert torch.isfinite(losses["decode.loss_ce"])
    losses["decode.loss_ce"].backward()
    assert all(p.grad is not None for p in model.backbone.parameters())
    model.eval()
    with torch.no_grad():
        pred = model(torch.randn(2, 3, 64, 64), samples, mode="predict")
    assert pred[0].pred_sem_seg.data.shape == (1, 64, 64)
