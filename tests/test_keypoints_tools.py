"""The keypoint task through the tools, end to end: a real (tiny) search with tools/search.py, and
tools/export.py -> tools/train.py -> tools/test.py on the found decoder and the SimpleBaseline head."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from _tools import tool as _tool

from densenas.history import History

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "configs/search/keypoints_proxy.py"


def _tiny_proxy(root: Path) -> list[str]:
    return [f"data.root={root}", "data.input_size=(64,48)", "data.proxy.num_train=8", "data.proxy.num_val=4",
            "data.proxy.size=96"]


@pytest.mark.slow
def test_keypoint_search_end_to_end_and_resume(tmp_path):
    work = tmp_path / "w"
    opts = [*_tiny_proxy(tmp_path / "proxy"), "space.width=8", "evaluator.stage1.iters=4",
            "evaluator.stage1.batch_size=4", "evaluator.stage2.iters=2", "evaluator.stage2.batch_size=4",
            "backbone.pretrained=False", "search.num_candidates=2"]
    assert _tool("search")([str(CFG), "--work-dir", str(work), "--cfg-options", *opts]) == 0
    with History(work / "history.sqlite") as h:
        rows = h.candidates()
        assert len(rows) == 2 and all(c.result is not None and c.result.ok for c in rows)
        assert all({"pckh05", "pckh01", "ap", "ar"} <= set(c.result.metrics) for c in rows)
    assert "PCKh@0.5" in (work / "leaderboard.md").read_text()
    best = json.loads((work / "best_arch.json").read_text())
    assert best["space"] == "auxcell"
    # resume with a larger budget: the finished candidates are kept, one more is trained
    assert _tool("search")([str(CFG), "--work-dir", str(work), "--resume", "--cfg-options", *opts[:-1],
                            "search.num_candidates=3"]) == 0
    with History(work / "history.sqlite") as h:
        assert len(h.candidates()) == 3


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["found", "heatmap"])
def test_export_train_test_a_keypoint_model(tmp_path, kind):
    """The transferred segmentation decoder (the default search's best arch; its search config is a
    segmentation one, whose data section must not leak in) and the baseline, a few iterations each."""
    out = tmp_path / f"{kind}.py"
    arch = ROOT / "work_dirs/auxcell_proxy_newcomer/best_arch.json"
    if kind == "found" and not arch.is_file():
        pytest.skip(f"{arch} is not in this checkout")
    what = [str(arch)] if kind == "found" else ["--baseline", "heatmap", "--width", "32"]
    common = ["--task", "keypoints", "--data-root", str(tmp_path / "proxy"), "--iters", "3", "--batch-size", "4",
              "--workers", "0", "--crop", "64" if kind == "found" else "128", "--work-dir", str(tmp_path / "wd"), "--out", str(out)]
    assert _tool("export")([*what, *common]) == 0
    text = out.read_text()
    assert "densenas_task = 'keypoints'" in text and ("AuxCellHeatmapHead" in text) == (kind == "found")
    assert _tool("train")([str(out), "--cfg-options", "model.backbone.backbone.pretrained=False"]) == 0
    ckpt = tmp_path / "wd" / "iter_3.pth"
    assert ckpt.is_file()
    report = tmp_path / "test.json"
    assert _tool("test")([str(out), str(ckpt), "--json", str(report),
                          "--cfg-options", "model.backbone.backbone.pretrained=False"]) == 0
    figures = json.loads(report.read_text())
    assert figures["task"] == "keypoints" and figures["input_size"] == ([64, 48] if kind == "found" else [128, 96])
    assert {"coco/AP", "coco/AR", "pckh@0.5/PCKh", "pckh@0.1/PCKh"} <= set(figures["metrics"])
    assert figures["params"] > 0 and figures["madds"] > 0


def test_template_archs_are_searched_exported_and_fine_tuned_for_keypoints(tmp_path):
    """The keypoint task accepts ``dense_map`` spaces: a template search (Nekrasov et al., WACV 2020) on the
    proxy keypoint set, its best arch exported as the found heatmap head (built through the space plugin)
    and trained by the mmengine runner; the head's aux heads are left out of the inference parameters."""
    import json

    from mmengine.config import Config
    from mmengine.registry import DefaultScope, MODELS

    from densenas.task import task_of_config

    cfg = tmp_path / "kpt_template.py"
    cfg.write_text(
        f"_base_ = [{str(ROOT / 'configs/search/keypoints_proxy.py')!r}]\n"
        "space = dict(_delete_=True, type='template', num_templates=2, blocks=2, widths=(16, 24, 32, 48))\n"
        "backbone = dict(out_indices=(3, 6), pretrained=False)\n"
        "search = dict(num_candidates=2)\n"
        "evaluator = dict(stage1=dict(iters=3, batch_size=4), stage2=dict(iters=1, batch_size=4))\n"
        f"data = dict(root={str(tmp_path / 'kpt')!r}, proxy=dict(num_train=8, num_val=4))\n")
    work = tmp_path / "search"
    assert _tool("search")([str(cfg), "--work-dir", str(work), "--workers", "1"]) == 0
    assert json.loads((work / "best_arch.json").read_text())["space"] == "template"
    out = tmp_path / "found.py"
    assert _tool("export")([str(work / "best_arch.json"), "--out", str(out), "--iters", "2", "--val-interval", "2",
                            "--batch-size", "2", "--workers", "0", "--work-dir", str(tmp_path / "ft")]) == 0
    c = Config.fromfile(str(out))
    assert c.model.head.type == "AuxCellHeatmapHead" and c.model.head.space["type"] == "template"
    assert _tool("train")([str(out), "--cfg-options", "model.backbone.backbone.pretrained=False"]) == 0
    with DefaultScope.overwrite_default_scope("mmpose"):
        model = MODELS.build(c.model)
    _, params, _, _ = task_of_config(c).test_cost_model(model, c)
    aux = sum(p.numel() for p in model.head.aux_heads.parameters())
    assert aux > 0 and params == sum(p.numel() for p in model.parameters()) - aux
