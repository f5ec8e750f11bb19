"""Every export works with either pretrained backbone: the found decoder / neck of a search on
EfficientNet-Lite0 becomes an mmseg / mmdet config whose model builds and runs, with the channels read
from the backbone (nothing hard-coded)."""
from pathlib import Path

import numpy as np
import pytest
import torch

from densenas.backbones import backbone_shapes

LITE0_SEG = {"type": "efficientnet_lite0"}
LITE0_DET = {"type": "efficientnet_lite0", "out_indices": (2, 3, 4)}


def _build(path: Path, scope: str):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.utils import import_modules_from_strings

    cfg = Config.fromfile(str(path))
    import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(scope)
    cfg.model.backbone.backbone.pretrained = False
    registry = __import__(f"{scope}.registry", fromlist=["MODELS"]).MODELS
    return cfg, registry.build(cfg.model).eval()


def test_segmentation_export_on_lite0(tmp_path):
    from densenas.decoders.auxcell import AuxCellSpace
    from densenas.task import task_class

    arch = AuxCellSpace(num_classes=3).sample(np.random.default_rng(0))
    search_cfg = {"task": {"type": "segmentation"}, "backbone": LITE0_SEG,
                  "data": {"layout": "voc", "num_classes": 3}, "space": {"type": "auxcell", "width": 16}}
    out = task_class("segmentation")().export(tmp_path / "seg.py", arch=arch, search_cfg=search_cfg,
                                              dataset="voc", data_root=str(tmp_path))
    cfg, model = _build(out, "mmseg")
    channels = [s.channels for s in backbone_shapes(LITE0_SEG).values()]
    assert cfg.model.decode_head.in_channels == channels == [24, 40, 112, 320]
    assert cfg.model.backbone.backbone.type == "efficientnet_lite0"
    # the search's 3 classes, not the 21 of the VOC layout
    assert cfg.model.decode_head.num_classes == 3 and len(cfg.train_dataloader.dataset.metainfo.classes) == 3
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 64, 64), mode="tensor")
    assert logits.shape[:2] == (1, 3) and torch.isfinite(logits).all()


@pytest.mark.parametrize("space", ["nasfpn", "nasfcos"])
def test_detection_export_on_lite0(tmp_path, space):
    from densenas.datasets.det_fixtures import write_coco_fixture
    from densenas.decoders.nasfcos import NASFCOSSpace
    from densenas.decoders.nasfpn import NASFPNSpace
    from densenas.task import task_class

    root = tmp_path / "coco"
    write_coco_fixture(root)
    sp = NASFPNSpace(out_channels=16) if space == "nasfpn" else NASFCOSSpace(part="fpn", width=16)
    arch = sp.sample(np.random.default_rng(0))
    section = {"type": "nasfpn", "out_channels": 16} if space == "nasfpn" else \
        {"type": "nasfcos", "part": "fpn", "width": 16}
    search_cfg = {"task": {"type": "detection", "detector": "retinanet", "stacked_convs": 1},
                  "backbone": LITE0_DET, "space": section}
    out = task_class("detection")().export(tmp_path / "det.py", arch=arch, search_cfg=search_cfg,
                                           data_root=str(root), crop=64)
    cfg, model = _build(out, "mmdet")
    assert cfg.model.neck.in_channels == [s.channels for s in backbone_shapes(LITE0_DET).values()] == [40, 112, 320]
    with torch.no_grad():
        cls_scores = model(torch.rand(1, 3, 128, 128), mode="tensor")[0]
    assert len(cls_scores) == 5 and all(torch.isfinite(c).all() for c in cls_scores)
