"""Tests of the NAS-FPN search space (Ghiasi, Lin, Le, "NAS-FPN: Learning Scalable Feature Pyramid
Architecture for Object Detection", CVPR 2019) and its mmdet neck. Tiny inputs, CPU only."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from densenas.arch import Arch, InvalidArch
from densenas.decoders.nasfpn import (BINARY_OPS, CellSpec, MergingCell, NASFPNSpace, global_attention,
                                      plan_extras, resample, space_for_arch)
from densenas.space import ShapeSpec

C = 16
SHAPES = {"c3": ShapeSpec(32, 8), "c4": ShapeSpec(96, 16), "c5": ShapeSpec(320, 32)}  # MobileNetV2 C3..C5


def feats(side: int = 64, n: int = 2) -> list[torch.Tensor]:
    return [torch.randn(n, s.channels, -(-side // s.stride), -(-side // s.stride)) for s in SHAPES.values()]


def paper_arch(space: NASFPNSpace | None = None) -> Arch:
    return (space or NASFPNSpace(out_channels=C)).paper_arch()


# ------------------------------------------------------------------ merging-cell ops
def test_resample_up_down_and_odd_sizes():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(resample(x, (4, 4)), x)
    down = resample(x, (2, 2), factor=2)
    assert torch.equal(down, torch.tensor([[[[5.0, 7.0], [13.0, 15.0]]]]))  # max pooling
    up = resample(down, (4, 4))
    assert torch.equal(up[0, 0, :2, :2], torch.full((2, 2), 5.0))  # nearest
    odd = torch.randn(1, 2, 9, 9)
    assert resample(odd, (5, 5), factor=2).shape[-2:] == (5, 5)  # "same" padding: ceil(9 / 2)
    assert resample(odd, (2, 2), factor=8).shape[-2:] == (2, 2)
    assert resample(odd, (3, 4), factor=2).shape[-2:] == (3, 4)  # adaptive fallback
    assert resample(torch.randn(1, 2, 3, 3), (9, 9)).shape[-2:] == (9, 9)


def test_global_attention_formula():
    coarse, fine = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    gate = torch.sigmoid(coarse.flatten(2).max(dim=2).values)[..., None, None]
    assert torch.allclose(global_attention(coarse, fine), coarse + fine * gate)


@pytest.mark.parametrize("op", BINARY_OPS)
@pytest.mark.parametrize("levels,out_level", [((3, 5), 4), ((6, 4), 4), ((4, 4), 3), ((3, 4), 7)])
def test_merging_cell_shapes_and_gradients(op, levels, out_level):
    torch.manual_seed(0)
    sizes = {lv: 2 ** (8 - lv) for lv in range(3, 8)}  # a 256 px image at levels 3..7
    cell = MergingCell(CellSpec(0, 1, out_level, op), levels, C, extras=[2])
    a, b = (torch.randn(2, C, sizes[lv], sizes[lv], requires_grad=True) for lv in levels)
    extra = torch.randn(2, C, sizes[out_level], sizes[out_level], requires_grad=True)
    out = cell([a, b, extra], (sizes[out_level], sizes[out_level]))
    assert out.shape == (2, C, sizes[out_level], sizes[out_level])
    (out * torch.randn_like(out)).sum().backward()
    for t in (a, b, extra, cell.conv.weight, cell.bn.weight):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_attention_comes_from_coarser_input():
    cell = MergingCell(CellSpec(0, 1, 4, "gp_attention"), (4, 6), C)
    fine, coarse = torch.randn(1, C, 4, 4), torch.randn(1, C, 1, 1)
    expected = global_attention(resample(coarse, (4, 4)), fine)
    assert torch.allclose(cell.merge(fine, coarse, (4, 4)), expected)


# -------------------------------------------------------------------------- space
def test_decisions_and_size():
    space = NASFPNSpace(out_channels=C)
    decs = space.decisions()
    assert [d.name for d in decs[:4]] == ["cell0.in0", "cell0.in1", "cell0.level", "cell0.op"]
    assert len(decs) == 28 and decs[-4].options == tuple(range(11))
    assert decs[2].options == (4, 5, 6, 7) and decs[-2].options == (3, 4, 5, 6, 7)
    assert space.size() == 120 * 4 ** 2 * 2 ** 7 * np.prod([(5 + i) * (4 + i) for i in range(7)])


def test_paper_arch_matches_mmdet_nasfpn_wiring():
    from mmdet.models.necks import NASFPN

    space = NASFPNSpace(out_channels=C)
    cells = space.cells(paper_arch(space))
    levels = list(space.levels) + [c.level for c in cells]
    extras = plan_extras(cells, space.levels)
    assert extras == [[], [], [], [], [2], [4], []]  # P5 and P7 are summed into their outputs
    ours = sorted([("gp" if c.op == "gp_attention" else "sum",
                    tuple(sorted((levels[c.in0], levels[c.in1]))), c.level) for c in cells]
                  + [("sum", (levels[j],) * 2, levels[j]) for e in extras for j in e])
    stage = NASFPN([8, 16, 32], 8, num_outs=5, stack_times=1).fpn_stages[0]
    theirs = sorted((op, tuple(sorted(int(d) for d in ab)), int(out))
                    for op, ab, out in (re.fullmatch(r"(gp|sum)_(\d\d)_(\d)", k).groups() for k in stage))
    assert ours == theirs


@pytest.mark.parametrize("stack", [1, 2])
def test_sampled_archs_build_with_right_outputs(stack):
    space = NASFPNSpace(out_channels=C, stack=stack)
    rng = np.random.default_rng(stack)
    archs = [space.sample(rng) for _ in range(3)] + [paper_arch(space)]
    archs.append(space.mutate(archs[0], rng))
    x = feats(64)
    for arch in archs:
        assert Arch.from_json(arch.to_json()) == arch
        torch.manual_seed(0)
        neck = space.build(arch, SHAPES)
        assert len(neck.blocks) == stack and neck.strides == [8, 16, 32, 64, 128]
        outs = neck(x)
        assert [tuple(o.shape) for o in outs] == [(2, C, 64 // s, 64 // s) for s in (8, 16, 32)] + \
            [(2, C, 1, 1)] * 2
        sum((o * torch.randn_like(o)).sum() for o in outs).backward()
        for name, p in neck.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), (str(arch), name)


def test_neck_accepts_sizes_not_divisible_by_128():
    neck = NASFPNSpace(out_channels=C).build(paper_arch(), SHAPES).eval()
    with torch.no_grad():
        outs = neck(feats(72, n=1))  # 9, 5, 3 -> P6 2, P7 1
    assert [o.shape[-1] for o in outs] == [9, 5, 3, 2, 1]
    same = NASFPNSpace(out_channels=C).build(paper_arch(), {**SHAPES, "c3": ShapeSpec(C, 8)})
    assert isinstance(same.lateral[0], torch.nn.Identity)  # no projection when channels already match
    assert not isinstance(same.lateral[1], torch.nn.Identity)


def test_sample_and_mutate_stay_valid_and_cover_permutations():
    space = NASFPNSpace(out_channels=C)
    rng = np.random.default_rng(0)
    seen, arch = set(), space.sample(rng)
    for _ in range(200):
        arch = space.mutate(arch, rng)
        space.check(arch)
        seen.add(tuple(arch[f"cell{i}.level"] for i in range(2, 7)))
    assert len(seen) > 10  # output levels move (by swaps)
    for _ in range(50):
        a = space.sample(rng)
        assert sorted(a[f"cell{i}.level"] for i in range(2, 7)) == [3, 4, 5, 6, 7]


@pytest.mark.parametrize("field,value,match", [
    ("cell3.in1", 12, r"cell3\.in1=12 out of range 0\.\.7"),
    ("cell0.in0", 3, r"cell0\.in1=3 equals cell0\.in0"),
    ("cell1.level", 3, r"cell1\.level=3 .*finest level"),
    ("cell6.level", 3, r"cell6\.level=3 repeats cell2\.level"),
    ("cell4.op", "concat", r"cell4\.op='concat' is not a binary op"),
    ("cell2.in0", True, r"cell2\.in0=True is not an integer"),
])
def test_invalid_archs_name_the_decision(field, value, match):
    space = NASFPNSpace(out_channels=C)
    with pytest.raises(InvalidArch, match=match):
        space.check(paper_arch(space).replace(**{field: value}))
    with pytest.raises(InvalidArch, match=match):
        space.build(paper_arch(space).replace(**{field: value}), SHAPES)


def test_invalid_arch_structure():
    space = NASFPNSpace(out_channels=C)
    d = paper_arch(space).as_dict()
    with pytest.raises(InvalidArch, match="misses decision 'cell6.op'"):
        space.check(Arch("nasfpn", tuple((k, v) for k, v in d.items() if k != "cell6.op")))
    with pytest.raises(InvalidArch, match="not 'nasfpn'"):
        space.check(Arch("auxcell", tuple(d.items())))
    with pytest.raises(ValueError, match=r"first strides of \[8, 16, 32, 64, 128\].*got c2\(24ch, s4\)"):
        space.build(paper_arch(space), {"c2": ShapeSpec(24, 4), **SHAPES})
    with pytest.raises(ValueError, match="in_shapes is missing"):
        space.build(paper_arch(space))
    with pytest.raises(TypeError, match="must be a dict"):
        space.build(paper_arch(space), list(SHAPES.values()))
    with pytest.raises(ValueError, match="num_cells"):
        NASFPNSpace(num_cells=4)
    assert space_for_arch(paper_arch(space)).num_cells == 7


# --------------------------------------------------------------------------- mmdet
@pytest.fixture(scope="module")
def mmdet_models():
    pytest.importorskip("mmdet")
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    import densenas.tasks.detection.mm  # noqa: F401  (registers the neck)
    return MODELS


def det_batch(model, n: int = 2, side: int = 64) -> dict:
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    g = torch.Generator().manual_seed(0)
    samples = []
    for i in range(n):
        s = DetDataSample(metainfo=dict(img_shape=(side, side), ori_shape=(side, side),
                                        scale_factor=(1.0, 1.0)))
        s.gt_instances = InstanceData(bboxes=torch.tensor([[4.0, 6.0, 40.0, 44.0], [30.0, 20.0, 60.0, 62.0]]),
                                      labels=torch.tensor([i % 3, 1]))
        samples.append(s)
    imgs = [torch.randint(0, 256, (3, side, side), generator=g, dtype=torch.uint8) for _ in range(n)]
    return model.data_preprocessor(dict(inputs=imgs, data_samples=samples), training=True)


@pytest.mark.parametrize("detector", ["retinanet", "fcos"])
def test_detector_builds_trains_and_predicts(mmdet_models, detector):
    from mmengine.config import ConfigDict

    from densenas.decoders.nasfpn_mmdet import nasfpn_model_dict

    from densenas.tasks.detection.losses import head_losses

    cfg = nasfpn_model_dict(paper_arch().to_dict(), num_classes=3, detector=detector, out_channels=C,
                            stack=2, pretrained=False, stacked_convs=1, losses=head_losses(detector))
    assert cfg["bbox_head"]["loss_cls"]["type"] == "FocalLoss"  # the task's losses, handed in
    assert cfg["backbone"]["type"] == "DenseNASBackbone" and cfg["neck"]["in_channels"] == [32, 96, 320]
    if detector == "fcos":  # GroupNorm keeps >= 4 channels per group (1x1 P7 maps at small widths)
        assert C // cfg["bbox_head"]["norm_cfg"]["num_groups"] >= 4
    torch.manual_seed(0)
    model = mmdet_models.build(ConfigDict(cfg))  # as after loading a config file
    assert type(model.neck).__name__ == "NASFPNSearchedNeck" and len(model.neck.neck.blocks) == 2
    model.init_weights()
    data = det_batch(model)
    outs = model.extract_feat(data["inputs"])
    assert [tuple(o.shape[1:]) for o in outs] == [(C, 128 // s, 128 // s) for s in (8, 16, 32, 64, 128)]
    model.train()
    losses = model.loss(data["inputs"], data["data_samples"])
    loss, log_vars = model.parse_losses(losses)
    assert torch.isfinite(loss) and any(k.startswith("loss_bbox") for k in log_vars)
    loss.backward()
    grads = [p.grad for p in model.neck.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    model.eval()
    with torch.no_grad():
        results = model.predict(data["inputs"], data["data_samples"])
    assert len(results) == 2 and all(r.pred_instances.bboxes.shape[-1] == 4 for r in results)


def test_model_dict_rejects_bad_arch_and_detector(mmdet_models):
    from densenas.decoders.nasfpn_mmdet import nasfpn_model_dict

    bad = paper_arch().replace(**{"cell5.level": 5})
    with pytest.raises(InvalidArch, match=r"cell5\.level=5 repeats cell4\.level"):
        nasfpn_model_dict(bad, num_classes=3, pretrained=False, in_channels=[32, 96, 320], losses={})
    with pytest.raises(ValueError, match="detector"):
        nasfpn_model_dict(paper_arch(), num_classes=3, detector="yolo", in_channels=[32, 96, 320], losses={})
