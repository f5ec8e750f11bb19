"""Every shipped config builds (mmseg ``test_config.py`` style): search configs resolve every section,
fine-tune configs build their mmseg segmentor or mmdet detector and run a forward pass."""
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SEARCH = sorted((ROOT / "configs/search").glob("*.py"))
FINETUNE = sorted((ROOT / "configs/finetune").glob("*.py"))


@pytest.mark.parametrize("path", SEARCH, ids=[p.name for p in SEARCH])
def test_search_config_resolves(path):
    from densenas.config import check_keys, load_config, section
    from densenas.differentiable import SEARCH_KEYS, TASK_KEYS, is_differentiable
    from densenas.pipeline import build_space, evaluator_config
    from densenas.pipeline_det import det_evaluator_config, is_detection
    from densenas.search import run_search
    from densenas.strategies import STRATEGIES, build_strategy
    from densenas.strategies.darts import DartsCfg
    from densenas.supernet import DifferentiableSpace

    # a progressive head search fixes the FPN another search found: the paper's FPN stands in for it here
    overrides = ["space.fixed_fpn=None"] if section(load_config(str(path)), "space").get("fixed_fpn") else []
    cfg = load_config(str(path), overrides)
    num_classes = section(cfg, "data").get("proxy", {}).get("num_classes", 5)
    space = build_space(section(cfg, "space"), num_classes, source=str(path))
    scfg = section(cfg, "strategy", {"type": "random"})
    if is_differentiable(cfg):
        check_keys("strategy", {k: v for k, v in scfg.items() if k != "type"}, DartsCfg)
        check_keys("search", section(cfg, "search"), lambda **kw: None, extra=SEARCH_KEYS)
        check_keys("task", section(cfg, "task", {}), lambda **kw: None, extra=TASK_KEYS)
        assert isinstance(space, DifferentiableSpace)
        arch = space.build_supernet().derive()
        assert isinstance(space.build(arch), torch.nn.Module)
    else:
        check_keys("search", section(cfg, "search", {}), run_search, source=str(path))
        det_evaluator_config(cfg) if is_detection(cfg) else evaluator_config(cfg)
        assert scfg["type"] in STRATEGIES
        arch = build_strategy({"seed": 0, **scfg}, space).propose()
    space.check(arch)


@pytest.mark.parametrize("path", FINETUNE, ids=[p.name for p in FINETUNE])
def test_finetune_config_builds_and_runs(path):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.utils import import_modules_from_strings

    cfg = Config.fromfile(str(path))
    import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.default_scope)
    cfg.model.backbone.pretrained = False  # the structure is under test, not the weights
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
    from mmseg.registry import MODELS

    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 64, 64), mode="tensor")
    num_classes = cfg.model.decode_head.num_classes
    assert logits.shape[:2] == (1, num_classes) and torch.isfinite(logits).all()
