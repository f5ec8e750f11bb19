"""Differentiable searches through ``tools/search.py``: Auto-DeepLab and IR-NAS configs run, resume
without repeating an epoch, refuse bad configs, and the derived Auto-DeepLab net exports and retrains."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from densenas.arch import Arch
from densenas.history import History
from test_tools import _tool

ROOT = Path(__file__).resolve().parents[1]
ADL = ROOT / "configs/search/autodeeplab_proxy.py"
IRNAS = ROOT / "configs/search/irnas_denoise_proxy.py"
DERAIN = ROOT / "configs/search/irnas_derain_proxy.py"


def adl_opts(tmp: Path, epochs: int) -> list[str]:
    return [f"data.root={tmp / 'proxy'}", "data.image_size=32", "data.proxy.num_train=8",
            "data.proxy.num_val=4", "data.proxy.size=32", "space.layers=2", "space.blocks=2",
            "space.filter_multiplier=4", "space.aspp_channels=8", "strategy.batch_size=4",
            "strategy.warmup_epochs=0", f"search.epochs={epochs}"]


def irnas_opts(tmp: Path, epochs: int) -> list[str]:
    return [f"data.root={tmp / 'restore'}", "data.image_size=16", "data.proxy.num_train=6",
            "data.proxy.num_val=2", "data.proxy.size=32", "space.width=4", "space.layers=2",
            "strategy.batch_size=3", "strategy.warmup_epochs=0", f"search.epochs={epochs}"]


def _epochs(work: Path) -> dict[int, tuple[str, float]]:
    """The supernet run's steps (one per epoch): derived arch and when the step was recorded."""
    with History(work / "history.sqlite") as h:
        return {s.step: (s.arch.key, s.finished) for s in h.steps()}


@pytest.mark.parametrize("config", [IRNAS, DERAIN], ids=["denoise", "derain"])
def test_irnas_search_runs_and_resumes(tmp_path, config):
    work = tmp_path / "irnas"
    assert _tool("search")([str(config), "--work-dir", str(work), "--cfg-options", *irnas_opts(tmp_path, 1)]) == 0
    first = _epochs(work)
    assert list(first) == [1]
    assert _tool("search")([str(config), "--work-dir", str(work), "--resume", "--cfg-options",
                            *irnas_opts(tmp_path, 2)]) == 0
    both = _epochs(work)
    assert sorted(both) == [1, 2] and both[1] == first[1]  # epoch 1 neither lost nor re-run
    derived = Arch.load(work / "derived_arch.json")
    from densenas.decoders.irnas import IRNASSpace

    IRNASSpace(width=4, layers=2).check(derived)
    with History(work / "history.sqlite") as h:
        assert len(h.finished()) == 1  # one run, its epochs are steps
        assert all(s.result.metrics["psnr"] > 0 and "ssim" in s.result.metrics for s in h.steps())


@pytest.mark.parametrize("opt, match", [
    ("space=auxcell", "task.type='restoration' cannot search space.type='auxcell'"),
    ("strategy.arch_lrr=0.1", "arch_lr"),
    ("task.sigmaa=3", "sigma"),
    ("strategy.type=reinforce", "strategy.type='reinforce', evaluator.type='supernet' and space.type='irnas'"),
])
def test_bad_darts_config_is_named(tmp_path, capsys, opt, match):
    cfg, opts = IRNAS, irnas_opts(tmp_path, 1)
    if opt == "space=auxcell":  # a whole section swapped for a non-differentiable space
        cfg = tmp_path / "bad.py"
        text = re.sub(r'space = dict\(type="irnas".*\)', 'space = dict(type="auxcell")', IRNAS.read_text())
        assert 'type="auxcell"' in text
        cfg.write_text(text)
        opts = [o for o in opts if not o.startswith("space.")]
    else:
        opts.append(opt)
    rc = _tool("search")([str(cfg), "--work-dir", str(tmp_path / "w"), "--cfg-options", *opts])
    assert rc == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "w" / "supernet.pth").exists()


@pytest.mark.slow
def test_autodeeplab_search_resume_export_train(tmp_path):
    work = tmp_path / "adl"
    assert _tool("search")([str(ADL), "--work-dir", str(work), "--cfg-options", *adl_opts(tmp_path, 1)]) == 0
    first = _epochs(work)
    assert _tool("search")([str(ADL), "--work-dir", str(work), "--resume", "--cfg-options",
                            *adl_opts(tmp_path, 2)]) == 0
    both = _epochs(work)
    assert sorted(both) == [1, 2] and both[1] == first[1]
    for f in ("best_arch.json", "derived_arch.json", "leaderboard.md", "rewards.png", "supernet.pth"):
        assert (work / f).is_file(), f

    cfg = tmp_path / "found.py"
    assert _tool("export")([str(work / "derived_arch.json"), "--out", str(cfg), "--data-root",
                            str(tmp_path / "proxy"), "--crop", "32", "--iters", "2", "--batch-size", "2",
                            "--workers", "0", "--work-dir", str(tmp_path / "ft")]) == 0
    assert _tool("train")([str(cfg)]) == 0
    ckpt = sorted((tmp_path / "ft").glob("iter_*.pth"))
    out = tmp_path / "test.json"
    assert _tool("test")([str(cfg), str(ckpt[-1]), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert "mIoU" in res["metrics"] and res["params"] > 1000


@pytest.mark.slow
def test_irnas_derived_and_dncnn_export_train_test(tmp_path):
    work = tmp_path / "irnas"
    assert _tool("search")([str(IRNAS), "--work-dir", str(work), "--cfg-options", *irnas_opts(tmp_path, 1)]) == 0
    derived = str(work / "derived_arch.json")
    common = ["--data-root", str(tmp_path / "restore"), "--crop", "16", "--iters", "2", "--batch-size", "2",
              "--workers", "0"]
    figures = {}
    for name, extra in (("irnas", []), ("dncnn", ["--baseline", "dncnn"])):
        cfg = tmp_path / f"{name}.py"
        assert _tool("export")([derived, *extra, "--out", str(cfg), *common,
                                "--work-dir", str(tmp_path / name)]) == 0
        assert _tool("train")([str(cfg)]) == 0
        ckpt = sorted((tmp_path / name).glob("iter_*.pth"))
        out = tmp_path / f"{name}.json"
        assert _tool("test")([str(cfg), str(ckpt[-1]), "--json", str(out),
                              "--cfg-options", "test_dataloader.dataset.sigma=50"]) == 0
        figures[name] = json.loads(out.read_text())
        assert figures[name]["metrics"]["psnr"] > 0 and 0 < figures[name]["metrics"]["ssim"] <= 1
    assert figures["dncnn"]["params"] >= figures["irnas"]["params"] > 1000
