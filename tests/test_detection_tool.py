"""Detection searches through ``tools/search.py``: NAS-FPN and NAS-FCOS (FPN, then head with the found
FPN fixed) on a tiny proxy COCO set, resumed without losing or re-running a candidate, bad keys named."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from densenas.arch import Arch
from densenas.history import History
from test_tools import _tool

ROOT = Path(__file__).resolve().parents[1]
NASFPN = ROOT / "configs/search/nasfpn_proxy.py"
FCOS_FPN = ROOT / "configs/search/nasfcos_fpn_proxy.py"
FCOS_HEAD = ROOT / "configs/search/nasfcos_head_proxy.py"


def det_opts(tmp: Path, n: int) -> list[str]:
    return [f"data.root={tmp / 'coco'}", "data.image_size=64", "data.proxy.num_train=8",
            "data.proxy.num_val=4", "data.proxy.size=64", "data.proxy.num_classes=2",
            "backbone.pretrained=False", "evaluator.stage1.iters=3", "evaluator.stage1.batch_size=4",
            "evaluator.stage2.iters=1", "evaluator.stage2.batch_size=2", f"search.num_candidates={n}"]


def _rows(work: Path) -> dict[int, tuple[str, str]]:
    with History(work / "history.sqlite") as h:
        return {c.id: (c.arch.key, c.finished) for c in h.finished()}


def test_nasfpn_search_resumes(tmp_path):
    work = tmp_path / "fpn"
    opts = det_opts(tmp_path, 2) + ["space.out_channels=8"]
    assert _tool("search")([str(NASFPN), "--work-dir", str(work), "--cfg-options", *opts]) == 0
    first = _rows(work)
    assert _tool("search")([str(NASFPN), "--work-dir", str(work), "--resume", "--cfg-options",
                            *opts[:-2], "space.out_channels=8", "search.num_candidates=3"]) == 0
    rows = _rows(work)
    assert len(rows) == 3 and {k: rows[k] for k in first} == first
    best = json.loads((work / "best_arch.json").read_text())
    assert best["space"] == "nasfpn" and {"ap", "ap50", "neg_loss"} <= set(best["result"]["metrics"])
    assert "AP" in (work / "leaderboard.md").read_text()


@pytest.mark.slow
def test_nasfcos_progressive_fpn_then_head(tmp_path):
    fpn_work, head_work = tmp_path / "fpn", tmp_path / "head"
    opts = det_opts(tmp_path, 2) + ["space.width=8"]
    assert _tool("search")([str(FCOS_FPN), "--work-dir", str(fpn_work), "--cfg-options", *opts]) == 0
    fpn = Arch.load(fpn_work / "best_arch.json")
    assert fpn.space == "nasfcos_fpn"
    assert _tool("search")([str(FCOS_HEAD), "--work-dir", str(head_work), "--cfg-options", *opts,
                            f"space.fixed_fpn={fpn_work / 'best_arch.json'}"]) == 0
    with History(head_work / "history.sqlite") as h:
        archs = [c.arch for c in h.finished()]
    assert archs and all(a.space == "nasfcos_head" for a in archs)


def test_bad_detection_key_is_named(tmp_path, capsys):
    rc = _tool("search")([str(NASFPN), "--work-dir", str(tmp_path / "w"), "--cfg-options",
                          *det_opts(tmp_path, 1), "task.detectr=fcos"])
    assert rc == 2 and "detectr" in capsys.readouterr().err
