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
