"""Every shipped config builds (mmseg ``test_config.py`` style): search configs resolve every section,
fine-tune configs build their mmseg segmentor / depth estimator, mmdet detector or mmpose pose
estimator and run a forward pass."""
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SEARCH = sorted((ROOT / "configs/search").glob("*.py"))
FINETUNE = sorted((ROOT / "configs/finetune").glob("*.py"))


@pytest.mark.parametrize("path", SEARCH, ids=[p.name for p in SEARCH])
def test_search_config_builds(path, tmp_path):
    """Through the builder ``tools/search.py`` uses: every section checked, data read, space and strategy
    built, a proposed (or derived) arch valid and buildable on the backbone's real shapes."""
    from densenas.backbones import backbone_shapes
    from densenas.build import build_search
    from densenas.config import load_config, section

    raw = load_config(str(path))
    # a progressive head search fixes the FPN another search found: the paper's FPN stands in for it here
    overrides = ["space.fixed_fpn=None"] if section(raw, "space").get("fixed_fpn") else []
    if section(raw, "data").get("proxy", {}).get("num_train", 0) > 1000:  # a GPU-scale set: built small here
        overrides += [f"data.root={tmp_path / 'proxy'}", "data.proxy.num_train=8", "data.proxy.num_val=4"]
    cfg = load_config(str(path), overrides)
    search = build_search(cfg, build_evaluator=False, log=lambda m: None)
    if search.kind == "supernet":
        arch = search.space.build_supernet().derive()
        net = search.space.build(arch)
    else:
        arch = search.strategy.propose()
        net = search.space.build(arch, backbone_shapes(section(cfg, "backbone")))
    search.space.check(arch)
    assert isinstance(net, torch.nn.Module) and sum(p.numel() for p in net.parameters()) > 0


@pytest.mark.parametrize("path", FINETUNE, ids=[p.name for p in FINETUNE])
def test_finetune_config_builds_and_runs(path):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.utils import import_modules_from_strings

    cfg = Config.fromfile(str(path))
    import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.default_scope)
    bb = cfg.model.backbone
    (bb.backbone if bb.type == "DenseNASBackbone" else bb).pretrained = False  # structure, not weights
    assert cfg.train_cfg.max_iters > 0 and cfg.train_dataloader.dataset.type
    if cfg.default_scope == "mmdet":
        from mmdet.registry import MODELS

        assert cfg.val_evaluator.type == "CocoMetric" and not Path(cfg.val_evaluator.ann_file).is_absolute()
        model = MODELS.build(cfg.model).eval()
        with torch.no_grad():
            cls_scores = model(torch.rand(1, 3, 128, 128), mode="tensor")[0]
        assert [tuple(c.shape[-2:]) for c in cls_scores] == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
        per_loc = cfg.model.bbox_head.num_classes * (9 if cfg.model.type == "RetinaNet" else 1)
        assert all(c.shape[1] == per_loc and torch.isfinite(c).all() for c in cls_scores)
        return
    if cfg.default_scope == "mmpose":  # top-down keypoints: K heatmaps at the codec's heatmap size
        from mmpose.registry import MODELS

        model = MODELS.build(cfg.model).eval()
        w, h = cfg.model.head.decoder.input_size
        with torch.no_grad():
            heat = model(torch.rand(1, 3, h, w), None, mode="tensor")  # mmpose: data_samples positional
        hw, hh = cfg.model.head.decoder.heatmap_size
        assert tuple(heat.shape) == (1, cfg.model.head.out_channels, hh, hw) and torch.isfinite(heat).all()
        return
    from mmseg.registry import MODELS

    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 64, 64), mode="tensor")
    num_classes = cfg.model.decode_head.num_classes
    assert logits.shape[:2] == (1, num_classes) and torch.isfinite(logits).all()


def test_paper_scale_config_trains_the_papers_epochs():
    """auxcell_paper_scale.py: FastDenseNAS's budget (5 epochs at batch 64, then 1 at batch 32, on a 3,600-image
    meta-train split at 512 px), so the iteration counts follow the set size and batch sizes."""
    import math

    from densenas.config import load_config, section

    cfg = load_config(str(ROOT / "configs/search/auxcell_paper_scale.py"))
    data, ev = section(cfg, "data"), section(cfg, "evaluator")
    n = data["proxy"]["num_train"]
    assert (n, data["proxy"]["num_val"], data["image_size"], data["proxy"]["size"]) == (3600, 400, 512, 512)
    assert (ev["stage1"]["batch_size"], ev["stage2"]["batch_size"]) == (64, 32)
    assert ev["stage1"]["iters"] == math.ceil(5 * n / 64) and ev["stage2"]["iters"] == math.ceil(n / 32)
