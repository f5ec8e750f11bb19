"""Tools: bad input gives a clear error and loses no history; one real search end to end (slow)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _tools import tool as _tool

from densenas.arch import Arch
from densenas.result import Result
from densenas.history import History

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "configs/search/auxcell_proxy.py"


def tiny_opts(tmp: Path, root: Path | None = None, n: int = 3) -> list[str]:
    """CPU-seconds budgets: 24/8 proxy images at 64 px, a few iterations per stage."""
    return [f"data.root={root or tmp / 'proxy'}", "data.image_size=64",
            "data.proxy.num_train=24", "data.proxy.num_val=8", "data.proxy.size=64",
            "evaluator.stage1.iters=6", "evaluator.stage1.batch_size=8",
            "evaluator.stage2.iters=2", "evaluator.stage2.batch_size=4",
            "task.teacher.iters=3", "task.teacher.batch_size=4", f"search.num_candidates={n}",
            "backbone.pretrained=False"]


def _history_with_one_row(path: Path) -> bytes:
    with History(path) as h:
        cid = h.start(Arch("auxcell", (("x", 1),)), seed=0)
        h.finish(cid, Result(reward=0.5, stage=1))
    return path.read_bytes()


def test_unknown_config_key_is_named(tmp_path, capsys):
    rc = _tool("search")([str(CFG), "--work-dir", str(tmp_path / "w"),
                          "--cfg-options", "evaluator.stage1.itres=3"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "evaluator.stage1.itres" in err and "did you mean 'iters'" in err


def test_unknown_top_level_key(tmp_path, capsys):
    rc = _tool("search")([str(CFG), "--work-dir", str(tmp_path / "w"), "--cfg-options", "serch.x=1"])
    assert rc == 2 and "serch" in capsys.readouterr().err


def test_missing_config_file(tmp_path, capsys):
    assert _tool("search")([str(tmp_path / "nope.py")]) == 2
    assert "nope.py" in capsys.readouterr().err


def test_missing_data_root_is_named_and_history_kept(tmp_path, capsys):
    work = tmp_path / "w"
    work.mkdir()
    before = _history_with_one_row(work / "history.sqlite")
    missing = tmp_path / "no_such_voc"
    rc = _tool("search")([str(CFG), "--work-dir", str(work), "--resume", "--cfg-options",
                          "data.layout=voc", f"data.root={missing}"])
    assert rc == 2
    assert str(missing) in capsys.readouterr().err
    assert (work / "history.sqlite").read_bytes() == before


def test_corrupted_annotation_is_named_and_history_kept(tmp_path, capsys):
    from densenas.datasets.fixtures import write_voc_fixture

    root = tmp_path / "voc"
    write_voc_fixture(root, n=4)
    bad = sorted((root / "SegmentationClass").glob("*.png"))[0]
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    work = tmp_path / "w"
    work.mkdir()
    before = _history_with_one_row(work / "history.sqlite")
    rc = _tool("search")([str(CFG), "--work-dir", str(work), "--resume", "--cfg-options",
                          "data.layout=voc", f"data.root={root}", "data.num_classes=3"])
    assert rc == 2
    assert bad.name in capsys.readouterr().err
    assert (work / "history.sqlite").read_bytes() == before


def test_refuses_to_mix_runs_without_resume(tmp_path, capsys):
    work = tmp_path / "w"
    work.mkdir()
    _history_with_one_row(work / "history.sqlite")
    assert _tool("search")([str(CFG), "--work-dir", str(work)]) == 2
    assert "--resume" in capsys.readouterr().err


def test_resume_refuses_a_damaged_history_row_cleanly(tmp_path, capsys):
    import sqlite3

    work = tmp_path / "w"
    work.mkdir()
    _history_with_one_row(work / "history.sqlite")
    with sqlite3.connect(work / "history.sqlite") as db:
        db.execute("UPDATE candidates SET metrics_json = 'not json' WHERE id = 1")
    before = (work / "history.sqlite").read_bytes()
    rc = _tool("search")([str(CFG), "--work-dir", str(work), "--resume", "--cfg-options", *tiny_opts(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert str(work / "history.sqlite") in err and "candidate 1" in err and "metrics_json" in err
    assert (work / "history.sqlite").read_bytes() == before  # nothing written before the refusal


@pytest.mark.parametrize("text, match", [("{oops", "not valid JSON"),
                                         ('{"space": "auxcell"}', "'choices'")])
def test_export_rejects_malformed_arch(tmp_path, capsys, text, match):
    p = tmp_path / "arch.json"
    p.write_text(text)
    assert _tool("export")([str(p), "--out", str(tmp_path / "c.py")]) == 2
    err = capsys.readouterr().err
    assert str(p) in err and match in err


def test_export_rejects_arch_invalid_for_space(tmp_path, capsys):
    from densenas.decoders.auxcell import AuxCellSpace

    arch = AuxCellSpace(num_classes=3).default_arch()
    name = next(k for k, _ in arch.choices if k.endswith(".op0"))
    d = arch.to_dict()
    d["choices"][name] = "conv9x9"
    p = tmp_path / "arch.json"
    p.write_text(json.dumps(d))
    rc = _tool("export")([str(p), "--out", str(tmp_path / "c.py"), "--dataset", "voc",
                          "--data-root", str(tmp_path), "--classes", "3"])  # no masks to count them from
    assert rc == 2
    err = capsys.readouterr().err
    assert str(p) in err and name in err and "conv9x9" in err
    assert not (tmp_path / "c.py").exists()


def test_export_refuses_lraspp_on_small_crops(tmp_path, capsys):
    rc = _tool("export")(["--baseline", "lraspp", "--out", str(tmp_path / "c.py"), "--dataset", "voc",
                          "--data-root", str(tmp_path), "--crop", "512", "--classes", "21"])
    assert rc == 2
    assert "crop 512" in capsys.readouterr().err and not (tmp_path / "c.py").exists()
    assert _tool("export")(["--baseline", "lraspp", "--out", str(tmp_path / "c.py"), "--dataset",
                            "voc", "--data-root", str(tmp_path), "--crop", "1600", "--classes", "21"]) == 0


@pytest.mark.slow
def test_search_end_to_end_resume_export_train(tmp_path):
    """A real search (pretrained-free MobileNetV2 for speed), resumed, exported, fine-tuned, tested."""
    work = tmp_path / "search"
    assert _tool("search")([str(CFG), "--work-dir", str(work), "--cfg-options",
                            *tiny_opts(tmp_path, n=3)]) == 0
    with History(work / "history.sqlite") as h:
        first = {c.id: (c.arch.key, c.finished) for c in h.finished()}
    assert len(first) == 3
    assert _tool("search")([str(CFG), "--work-dir", str(work), "--resume", "--cfg-options",
                            *tiny_opts(tmp_path, n=5)]) == 0
    with History(work / "history.sqlite") as h:
        rows = h.finished()
        assert len(rows) == 5 and len({c.arch.key for c in rows}) == 5
        assert {c.id: (c.arch.key, c.finished) for c in rows if c.id in first} == first
        assert any(c.result.ok for c in rows)
    for f in ("best_arch.json", "leaderboard.md", "leaderboard.csv", "rewards.png", "search.log"):
        assert (work / f).is_file(), f
    best = json.loads((work / "best_arch.json").read_text())
    assert best["space"] == "auxcell" and 0 < best["result"]["reward"] <= 1
    # the default config promotes the best 4 (of 5 after the resume) to twice the budget, 2 seeds each
    with History(work / "history.sqlite") as h:
        runs = h.rung_runs()
    assert {r.rung for r in runs} == {1} and len({r.candidate for r in runs if r.result.ok}) == 4
    assert best["result"]["rung"] == 1 and best["result"]["seeds"] == 2
    assert "promotion: rung 1: the best 4" in (work / "search.log").read_text()

    cfg = tmp_path / "found.py"
    assert _tool("export")([str(work / "best_arch.json"), "--out", str(cfg), "--data-root",
                            str(tmp_path / "proxy"), "--crop", "64", "--iters", "4",
                            "--batch-size", "2", "--workers", "0",
                            "--work-dir", str(tmp_path / "ft")]) == 0
    assert _tool("train")([str(cfg), "--cfg-options", "model.backbone.backbone.pretrained=False"]) == 0
    ckpt = sorted((tmp_path / "ft").glob("*.pth"))
    assert ckpt, list((tmp_path / "ft").iterdir())
    out = tmp_path / "test.json"
    assert _tool("test")([str(cfg), str(ckpt[-1]), "--json", str(out), "--cfg-options",
                          "model.backbone.backbone.pretrained=False"]) == 0
    res = json.loads(out.read_text())
    assert "mIoU" in res["metrics"] and res["params"] > 1e5 and res["madds"] > 1e6
    shutil.rmtree(tmp_path / "ft", ignore_errors=True)


def test_a_config_error_is_reported_before_ray_starts(tmp_path, capsys, monkeypatch):
    """A bad key with several workers: refused without starting Ray (it used to start first, seconds)."""
    import densenas.ray_executor as rx

    def no_ray(*a, **k):
        raise AssertionError("Ray was started for a config that plan_search refuses")

    monkeypatch.setattr(rx, "start_ray", no_ray)
    rc = _tool("search")([str(ROOT / "configs/search/auxcell_proxy.py"), "--work-dir", str(tmp_path / "w"),
                          "--workers", "2", "--cfg-options", "space.widht=3"])
    assert rc == 2 and "unknown key 'space.widht'" in capsys.readouterr().err


def test_a_stop_file_in_the_work_dir_stops_the_search_before_anything_new_and_says_so(tmp_path, capsys):
    work = tmp_path / "w"
    work.mkdir()
    (work / "STOP").touch()  # left over from stopping an earlier run
    rc = _tool("search")([str(CFG), "--work-dir", str(work), "--workers", "1", "--cfg-options",
                          *tiny_opts(tmp_path), "search.promote=None", "search.time_budget_s=None"])
    out = capsys.readouterr().out
    assert rc == 0 and f"touch {work / 'STOP'}" in out
    assert "STOP exists: nothing new starts (delete it to go on)" in out and "(stop_file)" in out
    with History(work / "history.sqlite") as h:
        assert h.count(finished_only=False) == 0
