"""Tests of the NAS-FCOS search space (Wang et al., "NAS-FCOS: Fast Neural Architecture Search for Object
Detection", CVPR 2020): its FPN and head operations incl. DCNv2, sampled FPN/head archs, partial head
weight sharing, invalid archs, progressive (fixed-part) search, and a full mmdet FCOS detector with the
searched neck and head running ``loss`` and ``predict``. Tiny inputs, CPU only, one thread."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from densenas.arch import Arch, InvalidArch
from densenas.decoders.nasfcos import (NASFCOSSpace, default_fpn_arch, default_head_arch, fpn_part, head_part,
                                       plain_head_arch)
from densenas.decoders.nasfcos_ops import (FPN_OPS, HEAD_OPS, OPS, ConcatFuse, FPNCell, FPNCellSpec, HeadTower,
                                           WeightedSum, collected_cells, gn_groups)
from densenas.deform import ModulatedDeformConv2d
from densenas.ops import build_op
from densenas.space import ShapeSpec

SHAPES = {"c3": ShapeSpec(8, 8), "c4": ShapeSpec(12, 16), "c5": ShapeSpec(20, 32)}
W = 16  # FPN / head width in the tiny tests


def _feats(n: int = 2, size: int = 128) -> list[torch.Tensor]:
    return [torch.randn(n, s.channels, size // s.stride, size // s.stride) for s in SHAPES.values()]


def _grad_missing(module: torch.nn.Module) -> list[str]:
    return [n for n, p in module.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]


# ----------------------------------------------------------------------------------------------- ops
def test_op_lists_in_the_table():
    assert set(FPN_OPS) <= set(OPS) and set(HEAD_OPS) <= set(OPS)
    for required in ("sep_conv_3x3", "sep_conv_5x5", "conv1x1", "conv3x3_dil2", "deform_conv3x3", "skip"):
        assert required in FPN_OPS
    assert [gn_groups(c) for c in (256, 128, 16, 48, 8)] == [32, 32, 4, 8, 2]


@pytest.mark.parametrize("name", sorted(set(FPN_OPS) | set(HEAD_OPS)))
def test_op_shape_and_grad(name):
    torch.manual_seed(0)
    op = build_op(name, W, OPS).train()
    x = torch.randn(2, W, 7, 9, requires_grad=True)
    y = op(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not _grad_missing(op), f"{name}: parameters without gradient {_grad_missing(op)}"
    if "deform" in name:
        assert any(isinstance(m, ModulatedDeformConv2d) for m in op.modules())
        assert any("conv_offset" in n for n, _ in op.named_parameters())
    if name.startswith("gn_"):
        assert any(isinstance(m, torch.nn.GroupNorm) for m in op.modules())
    op.eval()
    with torch.no_grad():
        y1 = op(torch.randn(1, W, 1, 1))  # P7-sized map, batch 1
    assert y1.shape == (1, W, 1, 1) and torch.isfinite(y1).all()


@pytest.mark.parametrize("agg", ["sum", "concat"])
def test_fpn_cell_resizes_to_finer_input(agg):
    cell = FPNCell(FPNCellSpec(0, 1, "sep_conv_3x3", "skip", agg), W)
    assert isinstance(cell.agg, WeightedSum if agg == "sum" else ConcatFuse)
    a = torch.randn(2, W, 4, 4, requires_grad=True)
    b = torch.randn(2, W, 8, 8, requires_grad=True)
    y = cell(a, b)
    assert y.shape == (2, W, 8, 8)
    y.square().mean().backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0 and not _grad_missing(cell)


# ------------------------------------------------------------------------------------- sampled archs
@pytest.mark.parametrize("part", ["fpn", "head", "joint"])
@pytest.mark.parametrize("seed", [0, 1])
def test_sampled_arch_builds_p3_p7_and_head_outputs(part, seed):
    torch.manual_seed(seed)
    space = NASFCOSSpace(num_classes=3, part=part, width=W, num_head_layers=3)
    rng = np.random.default_rng(seed)
    arch = space.sample(rng)
    assert {k.split(".")[0] for k, _ in arch.choices} == {"fpn": {"fpn"}, "head": {"head"},
                                                          "joint": {"fpn", "head"}}[part]
    space.check(space.mutate(arch, rng))
    assert Arch.from_json(arch.to_json()) == arch
    dec = space.build(arch, SHAPES).train()
    feats = _feats()
    pyramid = dec.neck(feats)
    assert dec.strides == [8, 16, 32, 64, 128]
    assert [tuple(p.shape) for p in pyramid] == [(2, W, 128 // s, 128 // s) for s in (8, 16, 32, 64, 128)]
    (sum((p * torch.randn_like(p)).sum() for p in pyramid)).backward()
    assert not _grad_missing(dec.neck), f"{arch}: FPN parameters without gradient {_grad_missing(dec.neck)}"
    cls, box, ctr = dec(feats)
    for out, c in ((cls, 3), (box, 4), (ctr, 1)):
        assert [tuple(o.shape) for o in out] == [(2, c, p.shape[-2], p.shape[-1]) for p in pyramid]
        assert all(torch.isfinite(o).all() for o in out)
    assert all((b > 0).all() for b in box)
    assert str(arch.space) == space.name and "P3 = cell" in space.describe(arch)


def test_fpn_output_assignment_follows_unconsumed_cells():
    specs = [FPNCellSpec(*c) for c in [(2, 2, "skip", "skip", "sum"), (0, 3, "skip", "skip", "sum"),
                                       (1, 2, "skip", "skip", "sum"), (3, 1, "skip", "skip", "sum")]]
    assert collected_cells(specs, 3) == [1, 2, 3]  # cell0 is consumed
    assert collected_cells(specs[:3], 3) == [1, 2]


# ------------------------------------------------------------------------------------------- sharing
@pytest.mark.parametrize("position", ["last", "first"])
def test_shared_head_layers_share_parameters(position):
    ops, levels = ["gn_conv3x3", "gn_conv1x1", "gn_conv3x3"], 5
    p_layer = [sum(p.numel() for p in build_op(o, W, OPS).parameters()) for o in ops]
    for k in range(len(ops) + 1):
        tower = HeadTower(ops, k, levels, W, shared_position=position)
        shared = set(range(len(ops) - k, len(ops))) if position == "last" else set(range(k))
        expected = sum(p if i in shared else levels * p for i, p in enumerate(p_layer))
        assert sum(p.numel() for p in tower.parameters()) == expected
        for i in range(len(ops)):
            ids = {id(tower.layers(level)[i]) for level in range(levels)}
            assert len(ids) == (1 if i in shared else levels), (k, i)
        # a loss on one level only reaches the shared layers and that level's own copies
        tower(torch.randn(2, W, 4, 4), level=3).square().mean().backward()
        for level in range(levels):
            for i in range(len(ops)):
                grad = tower.layers(level)[i][0].weight.grad
                assert (grad is not None and grad.abs().sum() > 0) == (i in shared or level == 3)


def test_head_projection_when_widths_differ():
    tower = HeadTower(["skip", "gn_conv3x3"], 1, 5, 16, in_channels=8)
    assert tower(torch.randn(1, 8, 3, 3), 0).shape == (1, 16, 3, 3)
    space = NASFCOSSpace(num_classes=2, part="head", width=8, head_width=16, num_head_layers=2)
    cls, _, _ = space.build(space.sample(np.random.default_rng(0)), SHAPES)(_feats(1, 64))
    assert cls[0].shape == (1, 2, 8, 8)


# ------------------------------------------------------------------------------------- invalid archs
def _bad(space: NASFCOSSpace, arch: Arch, *words: str) -> None:
    with pytest.raises(InvalidArch) as e:
        space.check(arch)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_invalid_archs_name_the_decision():
    fpn = NASFCOSSpace(part="fpn")
    good = fpn.default_arch()
    _bad(fpn, good.replace(**{"fpn.cell2.in0": 9}), "fpn.cell2.in0", "out of range")
    _bad(fpn, good.replace(**{"fpn.cell0.op1": "conv9x9"}), "fpn.cell0.op1", "conv9x9")
    _bad(fpn, good.replace(**{"fpn.cell4.agg": "max"}), "fpn.cell4.agg")
    _bad(fpn, good.replace(**{"fpn.cell1.in1": True}), "fpn.cell1.in1")
    # every cell consumed by a later one except two: P3-P5 cannot be formed
    chain = {f"fpn.cell{k}.in0": 3 + k - 1 if k else 2 for k in range(7)}
    _bad(fpn, good.replace(**chain), "P3-P5")
    _bad(fpn, Arch("nasfcos_fpn", good.choices[:-1]), "fpn.cell6.agg")
    _bad(fpn, Arch("nasfcos_fpn", good.choices + (("fpn.cell7.in0", 0),)), "fpn.cell7.in0")
    _bad(fpn, Arch("nasfcos_head", good.choices), "nasfcos_head")
    head = NASFCOSSpace(part="head")
    hgood = head.default_arch()
    _bad(head, hgood.replace(**{"head.op2": "sep_conv_3x3"}), "head.op2")  # a BN op, not a head op
    _bad(head, hgood.replace(**{"head.shared": 7}), "head.shared", "out of range")
    with pytest.raises(ValueError, match="fixed part"):
        NASFCOSSpace(part="head", fixed_fpn=good.replace(**{"fpn.cell3.in1": 12}))


def test_mmdet_modules_reject_invalid_archs():
    from densenas.decoders.mmdet_adapters import NASFCOSSearchedFPN, NASFCOSSearchedHead

    bad = default_fpn_arch().replace(**{"fpn.cell5.in1": 10})
    with pytest.raises(InvalidArch, match="fpn.cell5.in1"):
        NASFCOSSearchedFPN(bad.to_dict(), in_channels=[8, 12, 20], out_channels=W)
    with pytest.raises(InvalidArch, match="head.op0"):
        NASFCOSSearchedHead(2, W, default_head_arch().replace(**{"head.op0": "nope"}), feat_channels=W)


# ------------------------------------------------------------------------------ progressive / defaults
def test_progressive_search_fixes_one_part(tmp_path):
    rng = np.random.default_rng(3)
    fpn_space = NASFCOSSpace(num_classes=2, part="fpn", width=W)
    best_fpn = fpn_space.sample(rng)
    assert head_part(fpn_space.full_arch(best_fpn)) == plain_head_arch()  # FCOS head while searching FPN
    path = tmp_path / "best_fpn.json"
    best_fpn.save(path)
    head_space = NASFCOSSpace(num_classes=2, part="head", width=W, num_head_layers=4, fixed_fpn=path)
    assert all(d.name.startswith("head.") for d in head_space.decisions())
    a, b = head_space.sample(rng), head_space.sample(rng)
    for arch in (a, b):
        full = head_space.full_arch(arch)
        assert fpn_part(full) == best_fpn and head_part(full) == arch
    na = sum(p.numel() for p in head_space.build(a, SHAPES).neck.parameters())
    nb = sum(p.numel() for p in head_space.build(b, SHAPES).neck.parameters())
    assert na == nb == sum(p.numel() for p in fpn_space.build(best_fpn, SHAPES).neck.parameters())


def test_default_archs_follow_the_paper():
    fpn = default_fpn_arch()
    NASFCOSSpace(part="fpn").check(fpn)
    values = fpn.as_dict()
    assert {v for k, v in values.items() if k.endswith(".agg")} == {"concat"}
    assert {v for k, v in values.items() if ".op" in k} == {"deform_conv3x3", "skip"}
    specs = [FPNCellSpec(*(values[f"fpn.cell{k}.{f}"] for f in FPNCellSpec._fields)) for k in range(7)]
    assert collected_cells(specs, 3) == [2, 4, 5, 6]
    with_c2 = default_fpn_arch(4)  # C2 in the pool but unused, as in the paper
    assert with_c2["fpn.cell3.in0"] == 1 and 0 not in with_c2.as_dict().values()
    head = default_head_arch()
    assert [head[f"head.op{i}"] for i in range(6)] == ["gn_deform_conv3x3", "gn_conv3x3", "gn_deform_conv3x3",
                                                      "gn_conv1x1", "skip", "skip"]
    assert head["head.shared"] == 6
    NASFCOSSpace(part="head").check(head)
    joint = NASFCOSSpace(part="joint", width=W).default_arch()
    assert fpn_part(joint) == fpn and head_part(joint) == head


# ------------------------------------------------------------------------------------------ mmdet FCOS
def _det_batch(num_classes: int):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    samples = []
    per_image = [[[4.0, 6.0, 30.0, 40.0], [20.0, 20.0, 60.0, 58.0]], [[10.0, 2.0, 50.0, 30.0]]]
    for i, boxes in enumerate(per_image):
        s = DetDataSample()
        s.set_metainfo(dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64),
                            scale_factor=(1.0, 1.0), batch_input_shape=(64, 64)))
        s.gt_instances = InstanceData(bboxes=torch.tensor(boxes),
                                      labels=torch.tensor([(i + j) % num_classes for j in range(len(boxes))]))
        samples.append(s)
    return torch.randn(2, 3, 64, 64), samples


@pytest.mark.parametrize("which", ["paper", "sampled"])
def test_mmdet_fcos_detector_loss_and_predict(which):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import densenas.decoders.mmdet_adapters as ad
    import densenas.tasks.detection.mm  # noqa: F401  (registers the neck and head)

    register_all_modules()
    torch.manual_seed(0)
    num_classes = 3
    if which == "paper":
        fpn, head, position = default_fpn_arch(), default_head_arch(), "last"
    else:
        rng = np.random.default_rng(7)
        fpn = NASFCOSSpace(part="fpn").sample(rng)
        head = NASFCOSSpace(part="head", num_head_layers=3).sample(rng).replace(**{"head.shared": 1})
        position = "first"
    from densenas.tasks.detection.losses import head_losses

    cfg = ad.nasfcos_detector_cfg(fpn, head, num_classes, width=W,
                                  head_width=2 * W if which == "sampled" else None,
                                  pretrained=False, shared_position=position,
                                  losses=head_losses("fcos"))
    model = MODELS.build(cfg)
    assert type(model.backbone).__name__ == "DenseNASBackbone"
    assert isinstance(model.neck, ad.NASFCOSSearchedFPN)
    assert isinstance(model.bbox_head, ad.NASFCOSSearchedHead)
    assert isinstance(model.bbox_head.cls_convs, HeadTower) and model.neck.strides == [8, 16, 32, 64, 128]
    tower = model.bbox_head.reg_convs
    shared_ids = {id(tower.layers(lv)[0]) for lv in range(5)}
    assert len(shared_ids) == (1 if which == "paper" or position == "first" else 5)
    if which == "sampled":
        assert len({id(tower.layers(lv)[2]) for lv in range(5)}) == 5  # layers 1.. unshared per level

    images, samples = _det_batch(num_classes)
    model.train()
    losses = model.loss(images, samples)
    assert {"loss_cls", "loss_bbox", "loss_centerness"} <= set(losses)
    total = sum(v for k, v in losses.items() if k.startswith("loss"))
    assert all(torch.isfinite(v).all() for v in losses.values()) and total > 0
    total.backward()
    for part in (model.neck, model.bbox_head.conv_reg, model.bbox_head.cls_convs):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    assert not _grad_missing(model.neck)

    model.eval()
    with torch.no_grad():
        results = model.predict(images, samples)
    assert len(results) == 2
    for r in results:
        inst = r.pred_instances
        assert inst.bboxes.shape[-1] == 4 and len(inst.bboxes) == len(inst.scores) == len(inst.labels)
        assert len(inst.labels) == 0 or int(inst.labels.max()) < num_classes


def test_neck_start_level_drops_c2():
    from densenas.decoders.mmdet_adapters import NASFCOSSearchedFPN

    neck = NASFCOSSearchedFPN(default_fpn_arch(), in_channels=[4, 8, 12, 20], out_channels=W, start_level=1)
    outs = neck((torch.randn(1, 4, 32, 32),) + tuple(_feats(1, 128)))
    assert [o.shape[-1] for o in outs] == [16, 8, 4, 2, 1] and all(o.shape[1] == W for o in outs)
