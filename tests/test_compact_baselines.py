"""mmseg's compact networks (CGNet, Fast-SCNN, ERFNet) as baselines: exported by tools/export.py, built
by mmseg with the documented parameter counts, trained and tested by the ordinary runner."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from test_tools import _tool

# parameters with the fixture's 3 classes (tools/export.py counts them from its masks): the 6-class counts of the
# module docstring less 3 classes of each head's 1x1 classifier (in_channels + bias per class: 256 + 1 for
# CGNet, 128 + 1 for the others)
NUM_CLASSES = 3
PARAMS = {"cgnet": 492_984 - 3 * 257, "fastscnn": 1_398_262 - 3 * 129, "erfnet": 2_082_418 - 3 * 129}


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    from densenas.datasets.fixtures import write_voc_fixture

    root = tmp_path_factory.mktemp("voc")
    write_voc_fixture(root, n=4, size=(64, 64), num_classes=NUM_CLASSES)
    return root


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_compact_baseline_exports_and_builds(name, voc, tmp_path):
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    out = tmp_path / f"{name}.py"
    assert _tool("export")(["--baseline", name, "--out", str(out), "--dataset", "voc", "--data-root", str(voc),
                            "--crop", "64"]) == 0
    cfg = Config.fromfile(str(out))
    assert cfg.model.backbone.type.lower() == {"cgnet": "cgnet", "fastscnn": "fastscnn", "erfnet": "erfnet"}[name]
    register_all_modules(init_default_scope=True)
    model = MODELS.build(cfg.model).eval()
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    with torch.no_grad():
        logits = model._forward(torch.zeros(1, 3, 64, 64))
    assert logits.shape[:2] == (1, NUM_CLASSES)  # the data's classes, not VOC's 21
    # trained from scratch: no lr multiplier on the backbone
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys.backbone.lr_mult == 1.0


@pytest.mark.slow
def test_cgnet_baseline_trains_and_tests_with_the_runner(voc, tmp_path):
    cfg = tmp_path / "cgnet.py"
    work = tmp_path / "ft"
    assert _tool("export")(["--baseline", "cgnet", "--out", str(cfg), "--dataset", "voc", "--data-root", str(voc),
                            "--crop", "64", "--iters", "2", "--batch-size", "2", "--workers", "0",
                            "--work-dir", str(work)]) == 0
    assert _tool("train")([str(cfg)]) == 0
    ckpt = sorted(work.glob("*.pth"))
    assert ckpt
    res = tmp_path / "test.json"
    assert _tool("test")([str(cfg), str(ckpt[-1]), "--json", str(res)]) == 0
    out = json.loads(res.read_text())
    assert "mIoU" in out["metrics"] and out["params"] == PARAMS["cgnet"]
