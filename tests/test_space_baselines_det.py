"""Detection spaces that contain the baselines they are compared with (issue #24, item 3).

NAS-FPN (Ghiasi et al., CVPR 2019) and NAS-FCOS (Wang et al., CVPR 2020) are compared with mmdet's
hand-designed FPN (Lin et al., CVPR 2017) + FCOS head (Tian et al., ICCV 2019) / RetinaNet head, as
``tools/export.py --baseline fpn_fcos|fpn_retinanet`` exports them. Their ``with_fpn`` variants contain those
baselines (``space.baseline_archs()``); the paper's variants stay the default, decision for decision. Each
baseline arch is checked, built on the proxy searches' backbone levels (MobileNetV2 C3-C5 at 128 px), run,
and its parameter count compared with the mm module built by mmdet's registry from the exporter's own
settings (``tasks/detection/export.baseline_model``); where the structures coincide, the outputs are
compared with the mm module's under shared weights.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math

import numpy as np
import pytest
import torch

from densenas.arch import Arch, InvalidArch
from densenas.decoders.nasfcos import (NASFCOSSpace, fcos_head_arch, is_fcos_head, is_plain_fpn,
                                       plain_fpn_arch)
from densenas.decoders.nasfpn import NASFPNSpace, space_for_arch
from densenas.space import ShapeSpec

NUM_CLASSES = 4  # the proxy COCO set's classes
WIDTH = 32  # pyramid and head width of the proxy searches (configs/search/nas*_proxy.py)
SIDE = 128  # proxy image size
TOLERANCE = 0.10  # parameter count within +-10% of the mm module


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module", autouse=True)
def _mmdet_scope():
    """mmdet's registry scope for this module's builds, whatever scope an earlier test left behind."""
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope("mmdet"):
        yield


@pytest.fixture(scope="module")
def shapes() -> dict[str, ShapeSpec]:
    """The proxy searches' backbone levels (MobileNetV2, ``out_indices=(6, 13, 17)``: C3-C5)."""
    from densenas.backbones import backbone_shapes

    return backbone_shapes(dict(type="mobilenet_v2", out_indices=(6, 13, 17), pretrained=False))


@pytest.fixture(scope="module")
def mm_models() -> dict[str, dict[str, torch.nn.Module]]:
    """mmdet's neck and head of each exported baseline, built by mmdet's registry from the exporter's dicts."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from densenas.tasks.detection.export import baseline_model

    register_all_modules(init_default_scope=False)
    out = {}
    for name in ("fpn_fcos", "fpn_retinanet"):
        cfg = baseline_model(name, NUM_CLASSES, width=WIDTH, pretrained=False)
        out[name] = {"neck": MODELS.build(cfg["neck"]).eval(), "head": MODELS.build(cfg["bbox_head"]).eval()}
    return out


def _feats(shapes: dict[str, ShapeSpec], batch: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, s.channels, SIDE // s.stride, SIDE // s.stride, generator=g)
            for s in shapes.values()]


def _within(ours: int, theirs: int) -> None:
    assert abs(ours / theirs - 1) <= TOLERANCE, f"{ours} parameters vs {theirs} of the mm module " \
                                                f"(ratio {ours / theirs:.3f})"


# ------------------------------------------------------------- the paper's variants are unchanged
def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj).encode()).hexdigest()[:16]


def _summary(space, shapes: dict[str, ShapeSpec]) -> tuple:
    """Decisions (names and options), size, default and seed-0 sample archs, and their built parameters."""
    default, sample = space.default_arch(), space.sample(np.random.default_rng(0))
    return (len(space.decisions()), _digest([(d.name, list(d.options)) for d in space.decisions()]), space.size(),
            _params(space.build(default, shapes)), _params(space.build(sample, shapes)),
            _digest([list(c) for c in default.choices]), _digest([list(c) for c in sample.choices]))


# Measured on git HEAD 12387dd, before the variants existed, with this module's _summary on the same
# shapes (MobileNetV2 C3-C5: 32/96/320 channels at strides 8/16/32):
#   NASFPNSpace(out_channels=32); NASFCOSSpace(num_classes=4, part=..., width=32).
PAPER = {
    ("nasfpn", None): (28, "77d838bb1ef38058", 247210809753600000, 78400, 78400, "06e739fff4009e97",
                       "a6b9baa7d4e163ea"),
    ("nasfcos", "fpn"): (35, "3c17b2e625ff8b5e", 18532579079727531373363200, 329650, 186377, "3458b0906870fc8b",
                         "4217c7ddfdce3f0f"),
    ("nasfcos", "head"): (7, "5fce099835e55410", 326592, 344478, 479410, "366a40160d7a1db2", "0c587b9b477080ea"),
    ("nasfcos", "joint"): (42, "ef0f9953cdc199d0", 6052592066806373926289434214400, 344478, 348493,
                           "fbd97703994f3e30", "fd10c6aa87d23906"),
}


@pytest.mark.parametrize("key", sorted(PAPER, key=str), ids=lambda k: f"{k[0]}-{k[1]}")
def test_paper_variant_is_unchanged(key, shapes):
    kind, part = key
    space = NASFPNSpace(out_channels=WIDTH) if kind == "nasfpn" else \
        NASFCOSSpace(num_classes=NUM_CLASSES, part=part, width=WIDTH)
    assert space.variant == "paper"
    assert _summary(space, shapes) == PAPER[key]


@pytest.mark.parametrize("space", [NASFPNSpace(out_channels=WIDTH),
                                   NASFCOSSpace(num_classes=NUM_CLASSES, part="fpn", width=WIDTH),
                                   NASFCOSSpace(num_classes=NUM_CLASSES, part="joint", width=WIDTH)],
                         ids=["nasfpn", "nasfcos_fpn", "nasfcos_joint"])
def test_paper_variant_cannot_express_fpn(space):
    assert space.baseline_archs() == {}


def test_variant_names_are_checked():
    with pytest.raises(ValueError, match="variant must be one of.*'fpn'"):
        NASFPNSpace(variant="fpn")
    with pytest.raises(ValueError, match="variant must be one of.*'paper '"):
        NASFCOSSpace(variant="paper ")


# ------------------------------------------------------------------------------- NAS-FPN + FPN
def test_nasfpn_fpn_baseline_builds_runs_and_matches_mmdet_fpn(shapes, mm_models):
    space = NASFPNSpace(out_channels=WIDTH, variant="with_fpn")
    archs = space.baseline_archs()
    assert list(archs) == ["fpn"]
    arch = archs["fpn"]
    space.check(arch)
    neck = space.build(arch, shapes).eval()
    with torch.no_grad():
        outs = neck(_feats(shapes))
    assert [tuple(o.shape) for o in outs] == [(2, WIDTH, SIDE // s, SIDE // s) for s in (8, 16, 32, 64, 128)]
    # the same FPN for both exported baselines (FCOS and RetinaNet heads)
    for name in ("fpn_fcos", "fpn_retinanet"):
        _within(_params(neck), _params(mm_models[name]["neck"]))
    assert (_params(neck), _params(mm_models["fpn_fcos"]["neck"])) == (59712, 60672)  # the docstring's numbers


def test_nasfpn_fpn_equals_mmdet_fpn_on_p3_p5_with_shared_weights(shapes, mm_models):
    """Top-down nearest upsampling + sum and the 3x3 output convs are mmdet's: with mmdet's weights copied
    (the BN laterals made affine maps, the identity lateral of C3 an identity conv), P3-P5 coincide."""
    space = NASFPNSpace(out_channels=WIDTH, variant="with_fpn")
    neck = space.build(space.baseline_archs()["fpn"], shapes).eval()
    mm = mm_models["fpn_fcos"]["neck"]
    torch.manual_seed(0)
    with torch.no_grad():
        for lat, mm_lat in zip(neck.lateral, mm.lateral_convs):
            if isinstance(lat, torch.nn.Identity):
                mm_lat.conv.weight.copy_(torch.eye(WIDTH)[:, :, None, None])
                mm_lat.conv.bias.zero_()
                continue
            conv, bn = lat
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0)
            bn.weight.fill_(math.sqrt(1 + bn.eps))
            bn.bias.normal_()
            mm_lat.conv.weight.copy_(conv.weight)
            mm_lat.conv.bias.copy_(bn.bias)
        block = neck.blocks[0]
        by_level = {c.spec.level: c for c in block.cells[space.first_output:]}
        for level, mm_conv in zip((3, 4, 5), mm.fpn_convs):
            assert by_level[level].spec.post == "conv"
            mm_conv.conv.weight.copy_(by_level[level].conv.weight)
            mm_conv.conv.bias.copy_(by_level[level].conv.bias)
        feats = _feats(shapes, seed=1)
        ours, theirs = neck(feats), mm(feats)
    for level in range(3):
        torch.testing.assert_close(ours[level], theirs[level], atol=1e-5, rtol=1e-5)
    # P6 / P7 differ by construction (conv on max-pooled maps here, stride-2 convs in mmdet): same shapes
    assert [o.shape for o in ours[3:]] == [o.shape for o in theirs[3:]]
    assert not torch.allclose(ours[3], theirs[3])


def test_nasfpn_with_fpn_contains_the_paper_arch_and_round_trips(shapes):
    space = NASFPNSpace(out_channels=WIDTH, variant="with_fpn")
    paper = space.paper_arch()
    assert {v for k, v in paper.choices if k.endswith(".post")} == {"relu_conv_bn"}
    assert _params(space.build(paper, shapes)) == PAPER[("nasfpn", None)][3]
    fpn = space.baseline_archs()["fpn"]
    again = space_for_arch(Arch.from_json(fpn.to_json()), out_channels=WIDTH)
    assert again.variant == "with_fpn" and again.baseline_archs() == {"fpn": fpn}
    assert space_for_arch(NASFPNSpace(out_channels=WIDTH).paper_arch()).variant == "paper"
    rng = np.random.default_rng(0)
    arch = space.sample(rng)
    for _ in range(20):
        arch = space.mutate(arch, rng)
        space.check(arch)
    with pytest.raises(InvalidArch, match=r"cell0\.post='relu'"):
        space.check(fpn.replace(**{"cell0.post": "relu"}))
    with pytest.raises(InvalidArch, match=r"cell0\.op='first'"):
        NASFPNSpace(out_channels=WIDTH).check(
            Arch("nasfpn", tuple((k, v) for k, v in fpn.choices if not k.endswith(".post"))))


def test_nasfpn_with_fpn_size_is_exact():
    space = NASFPNSpace(num_cells=2, out_channels=4, levels=(3, 4), variant="with_fpn")
    decs = space.decisions()
    count = sum(space.is_valid(Arch(space.name, tuple(zip([d.name for d in decs], values)))) for values in
                itertools.product(*[d.options for d in decs]))
    assert count == space.size() == 2 * 3 ** 2 * 3 ** 2 * (2 * 1) * (3 * 2)


@pytest.mark.parametrize("kwargs, expressible", [
    (dict(num_cells=5), False),  # the top-down inner P4 needs an intermediate cell
    (dict(num_cells=6), True), (dict(num_cells=9), True), (dict(stack=2), False),
    (dict(num_cells=4, levels=(3, 4, 5, 6)), False), (dict(num_cells=5, levels=(3, 4, 5, 6)), True),
    (dict(num_cells=3, levels=(3, 4)), True)])
def test_nasfpn_fpn_over_cell_counts_and_levels(kwargs, expressible, shapes):
    space = NASFPNSpace(out_channels=8, variant="with_fpn", **kwargs)
    archs = space.baseline_archs()
    assert bool(archs) == expressible
    if expressible:
        levels = dict(list(shapes.items())[:min(3, len(space.levels))])
        neck = space.build(archs["fpn"], levels).eval()
        with torch.no_grad():
            outs = neck(_feats(levels))
        assert [o.shape[-1] for o in outs] == [SIDE // 2 ** lv for lv in space.levels]
        # three output convs + one per extra level, whatever the cell count (aliases have no parameters)
        convs = [c for c in neck.blocks[0].cells if c.conv is not None]
        assert len(convs) == len(space.levels)


def test_nasfpn_fpn_through_the_mmdet_exporter(shapes):
    from mmdet.registry import MODELS

    import densenas.tasks.detection.mm  # noqa: F401  (registers the NAS-FPN neck)
    from densenas.tasks.detection.export import found_model

    space = NASFPNSpace(out_channels=WIDTH, variant="with_fpn")
    arch = space.baseline_archs()["fpn"]
    model, _ = found_model(arch, NUM_CLASSES, space=dict(type="nasfpn", out_channels=WIDTH, variant="with_fpn"),
                           task=dict(detector="retinanet", stacked_convs=2), pretrained=False)
    neck = MODELS.build(model["neck"])
    assert _params(neck) == _params(space.build(arch, shapes))


# ------------------------------------------------------------------------------ NAS-FCOS + FPN + FCOS
def test_nasfcos_fpn_fcos_baseline_in_the_fpn_search(shapes, mm_models):
    space = NASFCOSSpace(num_classes=NUM_CLASSES, part="fpn", width=WIDTH, variant="with_fpn")
    archs = space.baseline_archs()
    assert list(archs) == ["fpn_fcos"]
    arch = archs["fpn_fcos"]
    space.check(arch)
    net = space.build(arch, shapes).eval()
    with torch.no_grad():
        pyramid = net.neck(_feats(shapes))
        cls, box, ctr = net(_feats(shapes))
    strides = (8, 16, 32, 64, 128)
    assert [tuple(p.shape) for p in pyramid] == [(2, WIDTH, SIDE // s, SIDE // s) for s in strides]
    assert [tuple(c.shape) for c in cls] == [(2, NUM_CLASSES, SIDE // s, SIDE // s) for s in strides]
    assert [tuple(b.shape) for b in box] == [(2, 4, SIDE // s, SIDE // s) for s in strides]
    assert [tuple(c.shape) for c in ctr] == [(2, 1, SIDE // s, SIDE // s) for s in strides]
    mm = mm_models["fpn_fcos"]
    _within(_params(net.neck), _params(mm["neck"]))
    _within(_params(net.head), _params(mm["head"]))
    _within(_params(net), _params(mm["neck"]) + _params(mm["head"]))
    # the docstring's numbers: the head is mmdet's FCOSHead parameter for parameter
    assert (_params(net.neck), _params(net.head)) == (61312, 76846)
    assert _params(net.head) == _params(mm["head"])


def test_nasfcos_fcos_head_equals_mmdet_fcos_head_with_shared_weights(shapes, mm_models):
    space = NASFCOSSpace(num_classes=NUM_CLASSES, part="joint", width=WIDTH, variant="with_fpn")
    net = space.build(space.baseline_archs()["fpn_fcos"], shapes).eval()
    head, mm = net.head, mm_models["fpn_fcos"]["head"]
    torch.manual_seed(0)
    with torch.no_grad():
        for tower, mm_convs in ((head.cls_tower, mm.cls_convs), (head.reg_tower, mm.reg_convs)):
            layers = [m for m in tower.layers(0) if not isinstance(m, torch.nn.Identity)]
            assert len(layers) == len(mm_convs) == 4
            for (conv, gn, _), mm_conv in zip(layers, mm_convs):
                gn.weight.normal_()
                gn.bias.normal_()
                mm_conv.conv.weight.copy_(conv.weight)
                mm_conv.norm.weight.copy_(gn.weight)
                mm_conv.norm.bias.copy_(gn.bias)
        for name in ("conv_cls", "conv_reg", "conv_centerness"):
            getattr(head, name).weight.normal_(std=0.1)
            getattr(mm, name).weight.copy_(getattr(head, name).weight)
            getattr(mm, name).bias.copy_(getattr(head, name).bias)
        head.scales.uniform_(0.5, 1.5)
        for scale, mm_scale in zip(head.scales, mm.scales):
            mm_scale.scale.fill_(float(scale))
        feats = [torch.randn(2, WIDTH, SIDE // s, SIDE // s) for s in (8, 16, 32, 64, 128)]
        ours, theirs = head(feats), mm(tuple(feats))
    for a, b in zip(ours, theirs):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)


def test_nasfcos_head_search_expresses_the_fcos_head(shapes, mm_models):
    # the paper's head list holds the FCOS head: on the paper's found FPN it is "fcos_head" ...
    space = NASFCOSSpace(num_classes=NUM_CLASSES, part="head", width=WIDTH)
    assert list(space.baseline_archs()) == ["fcos_head"]
    arch = space.baseline_archs()["fcos_head"]
    space.check(arch)
    net = space.build(arch, shapes).eval()
    with torch.no_grad():
        cls, _, _ = net(_feats(shapes))
    assert [tuple(c.shape) for c in cls] == [(2, NUM_CLASSES, SIDE // s, SIDE // s) for s in (8, 16, 32, 64, 128)]
    assert _params(net.head) == _params(mm_models["fpn_fcos"]["head"])
    # ... and on the plain FPN (fixed by the FPN stage) the whole "fpn_fcos" baseline, in either variant
    fixed = NASFCOSSpace(num_classes=NUM_CLASSES, part="head", width=WIDTH, fixed_fpn=plain_fpn_arch())
    assert fixed.baseline_archs() == {"fpn_fcos": Arch("nasfcos_head", fcos_head_arch().choices)}
    net = fixed.build(fixed.baseline_archs()["fpn_fcos"], shapes)
    mm = mm_models["fpn_fcos"]
    _within(_params(net), _params(mm["neck"]) + _params(mm["head"]))


def test_nasfcos_fpn_search_with_another_fixed_head_has_no_fpn_fcos():
    other = Arch("nasfcos_head", tuple((f"head.op{i}", "gn_conv1x1") for i in range(4)) + (("head.shared", 4),))
    space = NASFCOSSpace(num_classes=NUM_CLASSES, part="fpn", width=WIDTH, variant="with_fpn", fixed_head=other)
    assert space.baseline_archs() == {}
    assert is_fcos_head(fcos_head_arch()) and not is_fcos_head(other)
    # four convs of six layers with only the last four shared: two convs per level, not FCOS's head
    partly = Arch("nasfcos_head", fcos_head_arch().choices[:-1] + (("head.shared", 4),))
    assert not is_fcos_head(partly) and is_fcos_head(partly, shared_position="first")


@pytest.mark.parametrize("num_inputs, num_cells", [(3, 5), (3, 7), (4, 7), (3, 9)])
def test_nasfcos_plain_fpn_over_cell_counts(num_inputs, num_cells, shapes):
    space = NASFCOSSpace(num_classes=NUM_CLASSES, part="joint", width=8, num_inputs=num_inputs,
                         num_cells=num_cells, variant="with_fpn")
    arch = space.baseline_archs()["fpn_fcos"]
    assert is_plain_fpn(arch, num_inputs)
    levels = ({"c2": ShapeSpec(24, 4)} if num_inputs == 4 else {}) | dict(shapes)
    net = space.build(arch, levels).eval()
    with torch.no_grad():
        pyramid = net.neck(_feats(levels))
    assert [p.shape[-1] for p in pyramid] == [SIDE // s for s in (8, 16, 32, 64, 128)]
    assert net.neck.used_levels == list(range(num_inputs - 3, num_inputs))  # C2 is not read
    assert not NASFCOSSpace(num_classes=NUM_CLASSES, part="joint", num_cells=4, variant="with_fpn").baseline_archs()


def test_nasfcos_fpn_fcos_through_the_mmdet_exporter(shapes, mm_models):
    from mmdet.registry import MODELS

    import densenas.tasks.detection.mm  # noqa: F401  (registers the NAS-FCOS neck and head)
    from densenas.tasks.detection.export import found_model

    sp = dict(type="nasfcos", part="fpn", width=WIDTH, variant="with_fpn")
    arch = NASFCOSSpace(num_classes=NUM_CLASSES, **{k: v for k, v in sp.items() if k != "type"}) \
        .baseline_archs()["fpn_fcos"]
    model, _ = found_model(arch, NUM_CLASSES, space=sp, pretrained=False)
    neck, head = MODELS.build(model["neck"]), MODELS.build(model["bbox_head"])
    assert _params(head) == _params(mm_models["fpn_fcos"]["head"])
    _within(_params(neck), _params(mm_models["fpn_fcos"]["neck"]))


def test_paper_fpn_ops_refuse_the_plain_fpn():
    space = NASFCOSSpace(num_classes=NUM_CLASSES, part="fpn", width=WIDTH)
    arch = Arch("nasfcos_fpn", plain_fpn_arch().choices)
    with pytest.raises(InvalidArch, match=r"fpn\.cell0\.op1='zero'"):
        space.check(arch)


def test_the_head_search_on_the_plain_fpn_is_named_and_holds_the_fcos_baseline():
    """``fixed_fpn="plain"`` (configs/search/nasfcos_head_with_fpn_proxy.py) is mmdet's FPN, so the head
    search's ``fpn_fcos`` point is the whole FPN + FCOS baseline; ``"paper"`` is the default fixed FPN."""
    plain = NASFCOSSpace(num_classes=4, part="head", width=32, variant="with_fpn", fixed_fpn="plain")
    assert plain.fixed_fpn.choices == plain_fpn_arch(3, 7).choices
    assert list(plain.baseline_archs()) == ["fpn_fcos"]
    assert plain.baseline_archs()["fpn_fcos"].choices == fcos_head_arch(6).choices
    paper = NASFCOSSpace(num_classes=4, part="head", width=32, fixed_fpn="paper")
    assert paper.fixed_fpn == NASFCOSSpace(num_classes=4, part="head", width=32).fixed_fpn
    assert list(paper.baseline_archs()) == ["fcos_head"]
    with pytest.raises(ValueError, match="fixed_fpn='plain' needs num_cells >= 5"):
        NASFCOSSpace(part="head", num_cells=4, fixed_fpn="plain")
