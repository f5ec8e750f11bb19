"""Depth end to end through the tools: a real search on the proxy depth set (tiny budget), its export,
fine-tuning and test; a segmentation-found decoder transferred to depth on the real Middlebury sample in
the NYU layout; found and baseline configs share data, schedule and backbone."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from _tools import tool as _tool

from densenas.decoders.auxcell import AuxCellSpace
from densenas.history import History

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "configs/search/depth_proxy.py"
NO_WEIGHTS = ["--cfg-options", "model.backbone.backbone.pretrained=False"]


def _train_test(cfg: Path, work: Path) -> dict:
    assert _tool("train")([str(cfg), "--work-dir", str(work), *NO_WEIGHTS]) == 0
    ckpt = sorted(work.glob("iter_*.pth"))
    assert ckpt, list(work.iterdir())
    out = work / "test.json"
    assert _tool("test")([str(cfg), str(ckpt[-1]), "--json", str(out), *NO_WEIGHTS]) == 0
    return json.loads(out.read_text())


@pytest.mark.slow
def test_depth_search_export_train_test(tmp_path):
    work, data = tmp_path / "search", tmp_path / "proxy_nyu"
    opts = [f"data.root={data}", "data.image_size=[48,64]", "data.proxy.num_train=8", "data.proxy.num_test=4",
            "data.proxy.height=48", "data.proxy.width=64", "evaluator.stage1.iters=4", "evaluator.stage1.batch_size=4",
            "evaluator.stage2.iters=2", "evaluator.stage2.batch_size=4", "search.num_candidates=3",
            "backbone.pretrained=False"]
    assert _tool("search")([str(CFG), "--work-dir", str(work), "--cfg-options", *opts]) == 0
    with History(work / "history.sqlite") as h:
        rows = h.finished()
    assert len(rows) == 3 and any(c.result.ok for c in rows)
    best = json.loads((work / "best_arch.json").read_text())
    assert 0 < best["result"]["reward"] <= 1 and {"d1", "rmse", "rmse_log"} <= set(best["result"]["metrics"])
    assert "RMSE" in (work / "leaderboard.md").read_text()

    cfg = tmp_path / "found.py"  # the task comes from the search's config.py
    assert _tool("export")([str(work / "best_arch.json"), "--out", str(cfg), "--data-root", str(data), "--crop", "48",
                            "--iters", "3", "--batch-size", "2", "--workers", "0"]) == 0
    res = _train_test(cfg, tmp_path / "ft")
    assert res["task"] == "depth" and res["input_size"] == [48, 64]
    assert {"d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log"} <= set(res["metrics"])
    assert all(math.isfinite(v) for v in res["metrics"].values())
    assert res["params"] > 1e6 and res["madds"] > 1e6


@pytest.fixture(scope="module")
def motorcycle(tmp_path_factory) -> Path:
    from densenas.datasets.nyu import write_motorcycle_fixture

    return write_motorcycle_fixture(tmp_path_factory.mktemp("nyu_motorcycle"), size=(480, 640))


def _seg_search_dir(tmp: Path) -> Path:
    """A segmentation search's work dir (arch JSON + its config.py) whose data section must not be used."""
    d = tmp / "seg_search"
    d.mkdir()
    AuxCellSpace(num_classes=5, width=16).default_arch().save(d / "best_arch.json")
    (d / "config.py").write_text("task = dict(type='segmentation')\nspace = dict(type='auxcell', width=16)\n"
                                 "backbone = dict(type='mobilenet_v2', pretrained=True)\n"
                                 "data = dict(layout='proxy', root='/nonexistent/proxy_voc')\n")
    return d / "best_arch.json"


@pytest.mark.slow
def test_transfer_a_segmentation_decoder_to_the_real_nyu_layout_sample(tmp_path, motorcycle):
    from mmengine.config import Config

    args = ["--data-root", str(motorcycle), "--dataset", "nyu", "--crop", "64", "--iters", "2", "--batch-size", "1",
            "--workers", "0"]
    found, fcn = tmp_path / "found.py", tmp_path / "fcn.py"
    assert _tool("export")([str(_seg_search_dir(tmp_path)), "--task", "depth", "--out", str(found), *args]) == 0
    assert _tool("export")(["--baseline", "fcn", "--task", "depth", "--width", "16", "--out", str(fcn), *args]) == 0
    a, b = Config.fromfile(str(found)).to_dict(), Config.fromfile(str(fcn)).to_dict()
    assert a["model"]["decode_head"]["type"] == "DepthAuxCellHead" and a["model"]["decode_head"]["channels"] == 16
    assert b["model"]["decode_head"]["type"] == "DepthFCNHead" and b["model"]["decode_head"]["channels"] == 16
    for key in ("train_dataloader", "test_dataloader", "val_evaluator", "optim_wrapper", "param_scheduler",
                "train_cfg"):
        assert a[key] == b[key], key  # the same data, schedule and budget
    assert a["model"]["backbone"] == b["model"]["backbone"]
    assert a["val_evaluator"]["crop_type"] == "nyu_crop" and a["train_dataloader"]["dataset"]["type"] == "NYUDataset"
    res = _train_test(found, tmp_path / "ft_found")
    assert 0 <= res["metrics"]["d1"] <= 1 and math.isfinite(res["metrics"]["rmse"])
    assert res["input_size"] == [64, 85]  # mmseg's NYU test resize: the short side to the crop, aspect kept


@pytest.mark.slow
def test_bad_depth_export_is_named(tmp_path, capsys):
    assert _tool("export")(["--baseline", "aspp", "--task", "depth", "--out", str(tmp_path / "x.py")]) == 2
    assert "baseline 'aspp'" in capsys.readouterr().err
