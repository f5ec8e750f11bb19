"""The segmentation decoder spaces express the baselines they are compared with (issue #24, item 3).

The extended variants of the aux-cell space (Nekrasov et al., CVPR 2019) and of the template space (Nekrasov
et al., WACV 2020) hold mmseg's ``ASPPHead`` (DeepLabV3) and ``DepthwiseSeparableASPPHead`` (DeepLabV3+, Chen
et al., ECCV 2018) as points of their own decisions (``space.baseline_archs()``): each is valid, builds, gives
the mmseg head's output shape on the proxy's feature shapes, trains (every parameter gets a gradient),
exports, and has the parameter count of the mmseg head built with the exporter's settings
(``tasks/segmentation/export.py: head_config``) within 10%. The paper's variants are unchanged: same default
candidates, decisions, default arch and parameter count as before the extension (numbers from git HEAD).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from densenas.arch import Arch, InvalidArch
from densenas.backbones import backbone_shapes, build_backbone
from densenas.decoders import auxcell, template
from densenas.decoders.auxcell import AuxCellSpace
from densenas.decoders.template import TemplateSpace
from densenas.ops import PRIMITIVES

ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 6  # the proxy fine-tune configs' (configs/finetune/_base_/proxy_mobilenetv2.py)
CROP = 128  # the proxy image size (configs/search/*_proxy.py: data.image_size)
BASELINES = ("aspp", "deeplabv3plus")

# Parameter ratio (space's point, auxiliary heads excluded / mmseg head) the docstrings of
# AuxCellSpace.baseline_archs and TemplateSpace.baseline_archs state; the test keeps them true.
AUXCELL_RATIO = {(48, "aspp"): 1.004, (128, "aspp"): 1.009, (48, "deeplabv3plus"): 1.015,
                 (128, "deeplabv3plus"): 1.016}
TEMPLATE_RATIO = {"aspp": 0.9998, "deeplabv3plus": 0.9997}


def _params(m: nn.Module | None) -> int:
    return 0 if m is None else sum(p.numel() for p in m.parameters())


def _deployed(decoder: nn.Module) -> int:
    return _params(decoder) - _params(decoder.aux_heads)


def _feats(shapes) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [torch.randn(2, s.channels, CROP // s.stride, CROP // s.stride) for s in shapes.values()]


def _mm_head(baseline: str, in_channels: list[int], width: int) -> nn.Module:
    """The mmseg baseline head as ``tools/export.py --baseline`` configures it (``head_config``)."""
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    from densenas.tasks.segmentation.export import head_config

    from mmengine.registry import DefaultScope

    register_all_modules(init_default_scope=False)
    cfg = head_config(None, baseline, NUM_CLASSES, in_channels, width)
    assert cfg["type"] == {"aspp": "ASPPHead", "deeplabv3plus": "DepthwiseSeparableASPPHead"}[baseline]
    with DefaultScope.overwrite_default_scope("mmseg"):  # whatever scope an earlier test left behind
        return MODELS.build(cfg).eval()


@pytest.fixture(scope="module")
def aux_shapes():
    """MobileNetV2's four levels (24/32/96/320 channels at strides 4/8/16/32), the aux-cell searches'."""
    return backbone_shapes({"type": "mobilenet_v2"})


@pytest.fixture(scope="module")
def tmpl_shapes():
    """MobileNetV2 ``features[0..6]`` (strides 4 and 8), the template searches' encoder."""
    return backbone_shapes({"type": "mobilenet_v2", "out_indices": (3, 6)})


# ------------------------------------------------------------------------------------- paper variants
# Obtained from git HEAD 12387dd (and again at bf14d55), before the extended variants existed:
# `git archive HEAD | tar -x -C d`, then in d: n = sum(p.numel() for p in space.build(space.default_arch(),
# shapes).parameters()) with space = AuxCellSpace(6, width=w) on the four MobileNetV2 levels of
# backbone_shapes({"type": "mobilenet_v2"}), TemplateSpace(6, widths=ws) on the two of out_indices=(3, 6);
# the signatures are _state_signature() of those networks (width 48, widths (32, 48, 64, 96)).
PAPER_PRIMITIVES = ("conv1x1", "conv3x3", "sep_conv_3x3", "sep_conv_5x5", "gap", "sep_conv_3x3_dil2",
                    "sep_conv_3x3_dil4", "skip")
PAPER_AUXCELL_DEFAULT = (
    ("cell0.in0", 3), ("cell0.in1", 2), ("cell1.in0", 4), ("cell1.in1", 1), ("cell2.in0", 5), ("cell2.in1", 0),
    ("tmpl.b0.in0", 0), ("tmpl.b0.in1", 1), ("tmpl.b0.op0", "sep_conv_3x3"), ("tmpl.b0.op1", "sep_conv_3x3"),
    ("tmpl.b0.merge", "sum"), ("tmpl.b1.in0", 2), ("tmpl.b1.in1", 0), ("tmpl.b1.op0", "sep_conv_3x3_dil2"),
    ("tmpl.b1.op1", "skip"), ("tmpl.b1.merge", "sum"))
PAPER_AUXCELL_PARAMS = {48: 70242, 128: 351122}  # aux heads included
PAPER_TEMPLATE_DEFAULT = tuple(
    [(f"tmpl{t}.b{b}.{f}", v) for t in (0, 1) for b in (0, 1)
     for f, v in (("in0", 0), ("in1", 0), ("op0", "sep_conv_3x3"), ("op1", "skip"), ("merge", "sum"))]
    + [(f"layer{n}.{f}", v) for n in range(4) for f, v in (("template", 0), ("repeat", 1), ("stride", 1))])
PAPER_TEMPLATE_PARAMS = {(32, 48, 64, 64): 41144, (32, 48, 64, 96): 65112}  # aux heads included
PAPER_SIGNATURE = {"auxcell": "4cf3d1803df0e72c", "template": "81c6237d14482e2d"}


def _state_signature(m: nn.Module) -> str:
    """Names and shapes of every parameter and buffer, in order (checkpoints of found archs load by these)."""
    text = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in m.state_dict().items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.parametrize("width", sorted(PAPER_AUXCELL_PARAMS))
def test_auxcell_paper_variant_unchanged(width, aux_shapes):
    assert PRIMITIVES == PAPER_PRIMITIVES
    space = AuxCellSpace(NUM_CLASSES, width=width)
    assert space.ops == PAPER_PRIMITIVES and space.proj_ops is None and space.fuse_ops is None
    arch = space.default_arch()
    assert arch.choices == PAPER_AUXCELL_DEFAULT
    assert [d.name for d in space.decisions()] == [k for k, _ in PAPER_AUXCELL_DEFAULT]
    assert _params(space.build(arch, aux_shapes)) == PAPER_AUXCELL_PARAMS[width]
    if width == 48:
        assert _state_signature(space.build(arch, aux_shapes)) == PAPER_SIGNATURE["auxcell"]
    assert space.baseline_archs() == {}  # the paper's op set cannot hold an ASPP on the raw level
    # the extended variant's default is the paper's network, with the paper's choices first
    ext = AuxCellSpace(NUM_CLASSES, width=width, **auxcell.EXTENDED)
    ext_arch = ext.default_arch()
    assert ext_arch.choices[:len(PAPER_AUXCELL_DEFAULT)] == PAPER_AUXCELL_DEFAULT
    assert _params(ext.build(ext_arch, aux_shapes)) == PAPER_AUXCELL_PARAMS[width]


@pytest.mark.parametrize("widths", sorted(PAPER_TEMPLATE_PARAMS))
def test_template_paper_variant_unchanged(widths, tmpl_shapes):
    space = TemplateSpace(NUM_CLASSES, widths=widths)
    arch = space.default_arch()
    assert arch.choices == PAPER_TEMPLATE_DEFAULT
    assert _params(space.build(arch, tmpl_shapes)) == PAPER_TEMPLATE_PARAMS[widths]
    if widths == (32, 48, 64, 96):
        assert _state_signature(space.build(arch, tmpl_shapes)) == PAPER_SIGNATURE["template"]
    assert space.baseline_archs() == {}
    ext = TemplateSpace(NUM_CLASSES, widths=widths, **template.EXTENDED)
    ext_arch = ext.default_arch()
    assert ext_arch.choices[:len(PAPER_TEMPLATE_DEFAULT)] == PAPER_TEMPLATE_DEFAULT
    assert _params(ext.build(ext_arch, tmpl_shapes)) == PAPER_TEMPLATE_PARAMS[widths]


# ------------------------------------------------------------------------------------- aux-cell space
@pytest.mark.parametrize("width", [48, 128])  # the search's width, and the proxy fine-tune baselines' channels
@pytest.mark.parametrize("baseline", BASELINES)
def test_auxcell_expresses_baseline(baseline, width, aux_shapes):
    space = AuxCellSpace(NUM_CLASSES, width=width, **auxcell.EXTENDED)
    arch = space.baseline_archs()[baseline]
    space.check(arch)
    decoder = space.build(arch, aux_shapes)
    feats = _feats(aux_shapes)
    mm = _mm_head(baseline, [s.channels for s in aux_shapes.values()], width)
    with torch.no_grad():
        logits = decoder.eval()(feats)
        expected = mm(feats).shape
    stride = {"aspp": 32, "deeplabv3plus": 4}[baseline]
    assert tuple(logits.shape) == tuple(expected) == (2, NUM_CLASSES, CROP // stride, CROP // stride)
    assert decoder.output_stride == stride
    ratio = _deployed(decoder) / _params(mm)
    assert 0.9 <= ratio <= 1.1, f"{baseline} at width {width}: {_deployed(decoder)} vs mmseg {_params(mm)}"
    assert ratio == pytest.approx(AUXCELL_RATIO[width, baseline], abs=1e-3)
    # it trains like any point of the space: every parameter (aux heads included) gets a gradient
    logits, aux = decoder.train()(feats)
    (logits.mean() + sum(a.mean() for a in aux)).backward()
    assert [n for n, p in decoder.named_parameters() if p.grad is None] == []


def test_auxcell_baseline_structure(aux_shapes):
    """The points are the baselines' structure: ASPP on the stride-32 level; DeepLabV3+ adds the stride-4
    level and the two separable convs after the concatenation."""
    space = AuxCellSpace(NUM_CLASSES, **auxcell.EXTENDED)
    points = space.baseline_archs()
    aspp, dlv3p = (space.build(points[k], aux_shapes) for k in BASELINES)
    assert aspp.used_levels == [3] and type(aspp.proj["3"]).__name__ == "ASPP" and not aspp.proj["3"].separable
    assert dlv3p.used_levels == [0, 3] and dlv3p.proj["3"].separable
    assert len(dlv3p.out_cells) == 2 and type(dlv3p.fuse).__name__ == "DeepLabV3PlusRefine"
    assert dlv3p.fuse[0][0][0].in_channels == 2 * space.width  # concatenation of the two paths
    assert [b[0].dilation[0] for b in aspp.proj["3"].branches] == [1, 6, 12, 18]  # the exporter's rates
    assert "enc3 (s32): sep_aspp" in space.describe(points["deeplabv3plus"], aux_shapes)


@pytest.mark.parametrize("kwargs, names", [
    (dict(proj_ops=("conv1x1", "aspp")), {"aspp"}),
    (dict(proj_ops=("conv1x1", "sep_aspp")), set()),  # no separable convs after the concatenation
    (dict(proj_ops=("conv1x1", "sep_aspp"), fuse_ops=("sep_conv_3x3_x2",)), {"deeplabv3plus"}),
    (dict(auxcell.EXTENDED, num_cells=1), {"aspp"}),  # DeepLabV3+ needs a cell per path
    (dict(auxcell.EXTENDED, ops=("conv1x1", "sep_conv_3x3")), set()),  # no skip: no relay cells
    (dict(auxcell.EXTENDED, num_cells=4, blocks_per_cell=3), {"aspp", "deeplabv3plus"}),
])
def test_auxcell_baselines_follow_the_op_set(kwargs, names, aux_shapes):
    space = AuxCellSpace(NUM_CLASSES, width=16, **kwargs)
    points = space.baseline_archs()
    assert set(points) == names
    for arch in points.values():
        logits = space.build(arch, aux_shapes).eval()(_feats(aux_shapes))
        assert logits.shape[:2] == (2, NUM_CLASSES)


@pytest.mark.parametrize("field, value, match", [
    ("enc1.proj", "aspp", r"enc1.proj='aspp': no cell reads encoder level 1"),
    ("enc3.proj", "psp", r"enc3.proj='psp' is not a projection of this space"),
    ("head.fuse", "sum", r"head.fuse='sum' is not a fusion of this space"),
])
def test_auxcell_extended_bad_values_are_named(field, value, match):
    space = AuxCellSpace(NUM_CLASSES, **auxcell.EXTENDED)
    with pytest.raises(InvalidArch, match=match):
        space.check(space.baseline_archs()["aspp"].replace(**{field: value}))


def test_auxcell_variants_do_not_mix():
    paper, ext = AuxCellSpace(NUM_CLASSES), AuxCellSpace(NUM_CLASSES, **auxcell.EXTENDED)
    with pytest.raises(InvalidArch, match="enc0.proj"):
        ext.check(paper.default_arch())
    with pytest.raises(InvalidArch, match="enc0.proj|head.fuse"):
        paper.check(ext.default_arch())
    with pytest.raises(ValueError, match="proj_ops must include 'conv1x1'"):
        AuxCellSpace(NUM_CLASSES, proj_ops=("aspp",))
    with pytest.raises(ValueError, match="fuse_ops"):
        AuxCellSpace(NUM_CLASSES, fuse_ops=("conv1x1", "concat"))


def test_auxcell_extended_space_samples_and_mutates(aux_shapes):
    space = AuxCellSpace(NUM_CLASSES, width=16, **auxcell.EXTENDED)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(40)]
    assert {a["head.fuse"] for a in archs} == set(auxcell.FUSE_OPS)
    assert {a[f"enc{i}.proj"] for a in archs for i in range(4)} == set(auxcell.PROJ_OPS)
    for arch in archs[:3]:
        child = space.mutate(arch, rng)
        space.check(child)
        assert space.build(child, aux_shapes).eval()(_feats(aux_shapes)).shape[:2] == (2, NUM_CLASSES)


# ------------------------------------------------------------------------------------- template space
@pytest.mark.parametrize("widths", [(32, 48, 64, 64), (32, 48, 64, 96)])  # ext config's; template_proxy.py's
@pytest.mark.parametrize("baseline", BASELINES)
def test_template_expresses_baseline(baseline, widths, tmpl_shapes):
    space = TemplateSpace(NUM_CLASSES, widths=widths, **template.EXTENDED)
    arch = space.baseline_archs()[baseline]
    space.check(arch)
    net = space.build(arch, tmpl_shapes)
    feats = _feats(tmpl_shapes)
    fine = list(tmpl_shapes.values())[0]
    mm = _mm_head(baseline, [fine.channels, widths[-1]], widths[-1])  # the head on the last layer
    with torch.no_grad():
        logits = net.eval()(feats)
        trunk = feats[1]
        for layer in net.layers:
            trunk = layer(trunk)
        expected = mm([feats[0], trunk]).shape
    stride = {"aspp": 32, "deeplabv3plus": 4}[baseline]
    assert tuple(trunk.shape[-2:]) == (CROP // 32, CROP // 32)  # the trunk ends at stride 32
    assert tuple(logits.shape) == tuple(expected) == (2, NUM_CLASSES, CROP // stride, CROP // stride)
    assert net.output_stride == stride
    head = sum(_params(m) for m in (net.context, net.skip, net.refine, net.classifier))
    ratio = head / _params(mm)
    assert 0.9 <= ratio <= 1.1, f"{baseline} on {widths}: {head} vs mmseg {_params(mm)}"
    assert ratio == pytest.approx(TEMPLATE_RATIO[baseline], abs=1e-3)
    logits, aux = net.train()(feats)
    (logits.mean() + sum(a.mean() for a in aux)).backward()
    assert [n for n, p in net.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize("kwargs, names", [
    (dict(context_ops=("none", "aspp"), fuse_ops=("none",)), {"aspp"}),
    (dict(context_ops=("aspp", "sep_aspp")), set()),  # the paper's final stage only: no ASPP head
    (dict(context_ops=("sep_aspp",), fuse_ops=("concat_sep_x2", "sum_sep")), {"deeplabv3plus"}),
    (dict(template.EXTENDED, widths=(16,)), {"aspp", "deeplabv3plus"}),  # one layer: trunk at stride 16
])
def test_template_baselines_follow_the_op_set(kwargs, names, tmpl_shapes):
    space = TemplateSpace(NUM_CLASSES, **kwargs)
    points = space.baseline_archs()
    assert set(points) == names
    for arch in points.values():
        assert space.build(arch, tmpl_shapes).eval()(_feats(tmpl_shapes)).shape[:2] == (2, NUM_CLASSES)


def test_template_extended_bad_values_are_named():
    space = TemplateSpace(NUM_CLASSES, **template.EXTENDED)
    arch = space.baseline_archs()["aspp"]
    with pytest.raises(InvalidArch, match=r"head.context='psp' is not one of"):
        space.check(arch.replace(**{"head.context": "psp"}))
    with pytest.raises(InvalidArch, match=r"head.fuse='concat' is not one of"):
        space.check(arch.replace(**{"head.fuse": "concat"}))
    with pytest.raises(ValueError, match="fuse_ops must be distinct final stages"):
        TemplateSpace(NUM_CLASSES, fuse_ops=("sum_sep", "concat"))
    with pytest.raises(ValueError, match="context_ops"):
        TemplateSpace(NUM_CLASSES, context_ops=("psp",))


# --------------------------------------------------------------------------------- configs and export
@pytest.mark.parametrize("name, cls", [("auxcell_ext_proxy.py", AuxCellSpace),
                                       ("template_ext_proxy.py", TemplateSpace)])
def test_extended_configs_hold_both_baselines(name, cls):
    """The shipped extended variants express both baselines; the template one within its parameter limit
    (encoder included, auxiliary heads excluded, as the search counts)."""
    from densenas.config import load_config, section

    cfg = load_config(str(ROOT / "configs/search" / name))
    opts = {k: v for k, v in section(cfg, "space").items() if k != "type"}
    space = cls(NUM_CLASSES, **opts)
    points = space.baseline_archs()
    assert set(points) == set(BASELINES)
    if cls is TemplateSpace:
        encoder, shapes = build_backbone(dict(section(cfg, "backbone"), pretrained=False))
        limit = section(cfg, "objective")["limit"]
        for arch in points.values():
            assert _params(encoder) + _deployed(space.build(arch, shapes)) <= limit


@pytest.mark.parametrize("kind", ["auxcell", "template"])
def test_baseline_points_export_as_searched(kind, tmp_path):
    """``tools/export.py`` (SegmentationTask.export) writes the extended arch as the mmseg head the search
    built: same parameter count (encoder included, aux heads excluded), same output shape."""
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    import densenas.tasks.segmentation.mm  # noqa: F401
    from densenas.tasks.segmentation.task import SegmentationTask

    if kind == "auxcell":
        space_cfg = dict(type="auxcell", width=48, **auxcell.EXTENDED)
        backbone = {"type": "mobilenet_v2"}
        space = AuxCellSpace(NUM_CLASSES, width=48, **auxcell.EXTENDED)
    else:
        space_cfg = dict(type="template", widths=[32, 48, 64, 64], **template.EXTENDED)
        backbone = {"type": "mobilenet_v2", "out_indices": (3, 6)}
        space = TemplateSpace(NUM_CLASSES, widths=(32, 48, 64, 64), **template.EXTENDED)
    arch = Arch.from_dict(space.baseline_archs()["deeplabv3plus"].to_dict())  # through its JSON form
    encoder, shapes = build_backbone(dict(backbone, pretrained=False))
    searched = _params(encoder) + _deployed(space.build(arch, shapes))
    out = SegmentationTask().export(tmp_path / f"{kind}.py", arch=arch, dataset="voc", data_root=str(tmp_path),
                                    num_classes=NUM_CLASSES, crop=64,
                                    search_cfg={"space": space_cfg, "backbone": backbone})
    cfg = Config.fromfile(str(out))
    from mmengine.registry import DefaultScope

    register_all_modules(init_default_scope=False)
    cfg.model.backbone.backbone.pretrained = False
    with DefaultScope.overwrite_default_scope("mmseg"):  # not left behind for later tests
        model = MODELS.build(cfg.model).eval()
    _, params, _, _ = SegmentationTask().test_cost_model(model, cfg)
    assert params == searched
    with torch.no_grad():
        assert model._forward(torch.zeros(1, 3, 64, 64)).shape == (1, NUM_CLASSES, 16, 16)
