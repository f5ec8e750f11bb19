"""The template space of compact networks (Nekrasov et al., WACV 2020): decisions act as described (template,
repeat, stride), bad values are named, the mmseg export counts the same parameters as the search, and the
shipped config searches end to end under its hard limit."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from densenas.arch import InvalidArch
from densenas.decoders.template import Template, TemplateSpace
from densenas.space import ShapeSpec
from test_tools import _tool, tiny_opts

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "configs/search/template_proxy.py"
SHAPES = {"c2": ShapeSpec(24, 4), "c3": ShapeSpec(32, 8)}


def _arch(space: TemplateSpace, **set_: object):
    return space.default_arch().replace(**set_)


def test_repeat_stride_and_template_decisions_shape_the_network():
    space = TemplateSpace(5, widths=(16, 24, 32))
    feats = [torch.randn(2, 24, 32, 32), torch.randn(2, 32, 16, 16)]
    base = space.build(space.default_arch(), SHAPES).train()
    logits, aux = base(feats)
    assert logits.shape == (2, 5, 32, 32) and [a.shape[-1] for a in aux] == [16, 16]  # stride 1 everywhere
    arch = _arch(space, **{"layer0.repeat": 3, "layer1.stride": 2, "layer2.stride": 2})
    net = space.build(arch, SHAPES).train()
    assert sum(isinstance(m, Template) for m in net.layers[0]) == 3
    logits, aux = net(feats)
    assert logits.shape == (2, 5, 32, 32)  # always back at stride 4
    assert [a.shape[-1] for a in aux] == [16, 8]  # layer 1 halves the resolution, layer 2 again
    # the second template is used only where a layer picks it; every parameter gets a gradient
    arch = _arch(space, **{"layer2.template": 1, "tmpl1.b0.op0": "conv3x3", "tmpl1.b1.merge": "concat"})
    net = space.build(arch, SHAPES).train()
    logits, aux = net(feats)
    (logits.mean() + sum(a.mean() for a in aux)).backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("field, value, match", [("layer1.repeat", 4, r"layer1.repeat=4 is not one of \[1, 2, 3\]"),
                                                 ("layer0.stride", 3, "layer0.stride=3"),
                                                 ("layer2.template", 2, "layer2.template=2 out of range"),
                                                 ("tmpl0.b1.in0", 2, "tmpl0.b1.in0=2 out of range"),
                                                 ("tmpl1.b0.op1", "conv9x9", "tmpl1.b0.op1='conv9x9'")])
def test_bad_values_are_named(field, value, match):
    space = TemplateSpace(5, widths=(16, 24, 32))
    with pytest.raises(InvalidArch, match=match):
        space.check(_arch(space, **{field: value}))


def test_constructor_refuses_bad_settings():
    with pytest.raises(ValueError, match="widths"):
        TemplateSpace(5, widths=())
    with pytest.raises(ValueError, match="ops"):
        TemplateSpace(5, ops=("conv9x9",))


def test_mmseg_export_counts_what_the_search_counted(tmp_path):
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    import densenas.tasks.segmentation.mm  # noqa: F401
    from densenas.backbones import build_backbone
    from densenas.evaluation.proxy import deploy_params
    from densenas.tasks.segmentation.candidate import build_seg_candidate
    from densenas.tasks.segmentation.task import SegmentationTask

    space = TemplateSpace(6, widths=(32, 48, 64, 96))
    arch = space.sample(np.random.default_rng(3))
    encoder, shapes = build_backbone({"type": "mobilenet_v2", "out_indices": (3, 6), "pretrained": False})
    searched = sum(p.numel() for p in encoder.parameters()) + deploy_params(build_seg_candidate(space, arch, shapes))
    search_cfg = {"space": {"type": "template", "widths": [32, 48, 64, 96]},
                  "backbone": {"type": "mobilenet_v2", "out_indices": [3, 6]}}
    out = SegmentationTask().export(tmp_path / "t.py", arch=arch, search_cfg=search_cfg, dataset="voc",
                                    data_root=str(tmp_path), num_classes=6, crop=64)
    cfg = Config.fromfile(str(out))
    assert cfg.model.decode_head.type == "TemplateHead" and cfg.model.decode_head.widths == [32, 48, 64, 96]
    register_all_modules(init_default_scope=True)
    cfg.model.backbone.backbone.pretrained = False
    model = MODELS.build(cfg.model).eval()
    _, params, _, _ = SegmentationTask().test_cost_model(model, cfg)
    assert params == searched
    with torch.no_grad():
        assert model._forward(torch.zeros(1, 3, 64, 64)).shape == (1, 6, 16, 16)


@pytest.mark.slow
def test_template_search_end_to_end_under_its_limit(tmp_path):
    from densenas.history import History

    work = tmp_path / "w"
    limit = 300_000  # about half the tiny-budget space is over it
    assert _tool("search")([str(CFG), "--work-dir", str(work), "--cfg-options", *tiny_opts(tmp_path, n=5),
                            f"objective.limit={limit}"]) == 0
    with History(work / "history.sqlite") as h:
        rows = h.finished()
    trained = [c for c in rows if not c.result.over_limit]  # the rejected are not trained and do not count
    assert len(trained) == 5 and all(c.result.cost["params"] <= limit for c in trained if c.result.ok)
    assert all(c.result.cost["params"] > limit and c.result.stage == 0 for c in rows if c.result.over_limit)
    assert any(c.result.ok for c in rows)
    best = json.loads((work / "best_arch.json").read_text())
    assert best["space"] == "template" and best["result"]["cost"]["params"] <= limit
    assert (work / "pareto.png").is_file()
