"""Proxy fidelity: rank statistics against hand-computed values, the early-stopping replay, the verdict,
and tools/fidelity.py end to end (tiny budgets) with resume, shards and clear errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from densenas.fidelity_stats import RankStats, bootstrap_ci, early_stop_replay, kendall, rank_stats, verdict
from densenas.fidelity_run import PLAN, ROWS, report
from test_tools import _tool as tool

ROOT = Path(__file__).resolve().parents[1]


def test_rank_stats_against_hand_counts():
    # x ranks 1 2 3 4, y ranks 1 3 2 4: 5 concordant pairs, 1 discordant -> tau = 4/6;
    # rank differences 0 1 1 0 -> rho = 1 - 6 * 2 / (4 * 15) = 0.8
    s = rank_stats([1, 2, 3, 4], [10, 30, 20, 40], n_boot=200)
    assert s.tau == pytest.approx(4 / 6)
    assert s.rho == pytest.approx(0.8)
    # top-2 by x: archs 2, 3 (x = 3, 4); by y: archs 1, 3 (y = 30, 40) -> overlap 1/2
    assert s.top_k == 2 and s.overlap == pytest.approx(0.5)
    assert s.regret == pytest.approx(0.0)  # x's best (arch 3) is y's best
    s = rank_stats([4, 3, 2, 1], [10, 30, 20, 40], top_k=1, n_boot=200)
    assert s.regret == pytest.approx(30.0) and s.overlap == 0.0  # x picks y = 10, the best is 40


def test_kendall_tau_b_against_hand_counts():
    # [1..5] vs [3, 1, 2, 5, 4]: discordant pairs (1,2), (1,3), (4,5); concordant 7 -> (7 - 3) / 10
    assert kendall(np.array([1, 2, 3, 4, 5.]), np.array([3, 1, 2, 5, 4.])) == pytest.approx(0.4)
    # with ties (tau-b): C = 4, D = 0, one pair tied only in a, one only in b -> 4 / sqrt(5 * 5)
    assert kendall(np.array([1, 1, 2, 3.]), np.array([1, 2, 2, 3.])) == pytest.approx(0.8)
    assert kendall(np.array([1, 2, 3.]), np.array([3, 2, 1.])) == pytest.approx(-1.0)
    assert np.isnan(kendall(np.array([1, 1, 1.]), np.array([1, 2, 3.])))  # a constant list ranks nothing


def test_bootstrap_interval_brackets_the_estimate_and_is_tight_for_perfect_agreement():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = x + rng.normal(scale=0.8, size=40)
    lo, hi = bootstrap_ci(x, y, kendall, n_boot=500)
    assert lo < kendall(x, y) < hi and hi - lo < 0.5
    assert bootstrap_ci(x, 2 * x, kendall, n_boot=200) == pytest.approx((1.0, 1.0))
    few_lo, few_hi = bootstrap_ci(x[:8], y[:8], kendall, n_boot=500)
    assert few_hi - few_lo > hi - lo  # fewer archs, wider interval


def test_rank_stats_refuses_bad_input():
    with pytest.raises(ValueError, match="equal length"):
        rank_stats([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 3"):
        rank_stats([1, 2], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        rank_stats([1, 2, float("nan")], [1, 2, 3])


def test_early_stop_replay_follows_the_running_mean_rule():
    # arch 0: no mean yet -> stage 2; arch 1: 0.2 < 0.5 -> stopped; arch 2: 0.6 >= mean(0.5, 0.2) -> stage 2;
    # arch 3: 0.4 < mean(0.5, 0.2, 0.6) = 0.433 -> stopped
    rewards, stopped = early_stop_replay([0.5, 0.2, 0.6, 0.4], [0.7, 0.9, 0.8, 0.3])
    assert stopped == [False, True, False, True]
    assert rewards == [0.7, 0.2, 0.8, 0.4]


def _stats(tau: float, lo: float, n: int = 16) -> RankStats:
    return RankStats(n=n, tau=tau, tau_ci=(lo, min(1.0, tau + 0.3)), rho=tau, rho_ci=(lo, 1.0), top_k=4,
                     overlap=0.5, regret=0.0)


def test_verdict_reads_tau_against_its_interval_and_the_noise_ceiling():
    ceiling = _stats(0.6, 0.4)
    assert verdict(_stats(0.45, 0.2), ceiling).startswith("this budget ranks")
    assert "ranks weakly" in verdict(_stats(0.2, 0.05), ceiling)
    assert verdict(_stats(0.25, -0.1), ceiling).startswith("inconclusive") and "--archs 32" in \
        verdict(_stats(0.25, -0.1), ceiling)
    assert "does not rank" in verdict(_stats(-0.05, -0.4), ceiling)
    assert verdict(_stats(0.5, 0.2), _stats(0.1, -0.3)).startswith("cannot judge")  # long training is noise


def _row(i: int, s1: float, s2: float, long1: float, long2: float) -> dict:
    return {"index": i, "arch": {}, "cheap": {"1": {"stage1": s1, "stage2": s2, "seconds": 2.0}},
            "long": [{"target": long1, "seconds": 8.0}, {"target": long2, "seconds": 8.0}]}


def test_report_on_hand_made_rows(tmp_path):
    plan = {"archs": [{}] * 5, "long_iters": 40, "long_stage2_iters": 8, "seeds": 2, "cheap_scales": [1.0],
            "target": "miou", "stage1_iters": 10, "stage2_iters": 2, "source": "test"}
    rows = [_row(0, 0.1, 0.2, 0.1, 0.12), _row(1, 0.3, 0.4, 0.3, 0.28), _row(2, 0.2, 0.3, 0.2, 0.22),
            _row(3, 0.5, 0.6, 0.5, 0.52), dict(_row(4, 0.0, 0.0, 0.0, 0.0), error="diverged")]
    text, summary = report(plan, rows, tmp_path, "mIoU", n_boot=200)
    assert summary["n"] == 4 and summary["failed"] == 1
    st = summary["scales"]["1"]
    assert st["stats"]["stage1"]["tau"] == pytest.approx(1.0) and st["stats"]["stage2"]["tau"] == pytest.approx(1.0)
    assert summary["noise_ceiling"]["tau"] == pytest.approx(1.0)
    assert st["cost_ratio"] == pytest.approx(4.0)
    # replay: arch 1 (0.3 >= 0.1), arch 2 (0.2, not below the mean 0.2 of 0.1 and 0.3) and arch 3 go on
    assert st["early_stop"]["stopped"] == 0
    assert "ranks" in st["verdict"] and (tmp_path / "fidelity.png").stat().st_size > 1000
    assert json.loads((tmp_path / "fidelity.json").read_text())["n"] == 4


def _tool():
    return tool("fidelity")


def _opts(tmp: Path) -> list[str]:
    return [f"data.root={tmp / 'proxy'}", "data.image_size=64", "data.proxy.num_train=16",
            "data.proxy.num_val=8", "data.proxy.size=64", "evaluator.stage1.iters=4",
            "evaluator.stage1.batch_size=4", "evaluator.stage2.iters=1", "evaluator.stage2.batch_size=4",
            "task.teacher.iters=2", "task.teacher.batch_size=4", "backbone.pretrained=False"]


@pytest.mark.slow
def test_fidelity_tool_end_to_end_with_shards_and_resume(tmp_path, capsys):
    cfg, work = str(ROOT / "configs/search/auxcell_proxy.py"), tmp_path / "fid"

    def args(*extra: str, long_mult: str = "2") -> list[str]:
        return [cfg, "--work-dir", str(work), "--archs", "3", "--long-mult", long_mult, "--bootstrap", "100",
                *extra, "--cfg-options", *_opts(tmp_path)]

    main = _tool()
    assert main(args("--shard", "0/2")) == 0  # archs 0 and 2
    assert sorted(p.name for p in (work / ROWS).iterdir()) == ["arch_000.json", "arch_002.json"]
    assert "still to measure" in capsys.readouterr().out
    before = {p.name: p.stat().st_mtime_ns for p in (work / ROWS).iterdir()}
    assert main(args()) == 0  # measures arch 1 only, then reports
    out = capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (work / ROWS).iterdir() if p.name in before} == before
    assert "1 archs to measure" in out and "noise ceiling" in out and "verdict:" in out
    summary = json.loads((work / "fidelity.json").read_text())
    assert summary["n"] + summary["failed"] == 3 and summary["plan"]["long_iters"] == 8
    row = json.loads((work / ROWS / "arch_001.json").read_text())
    assert len(row["long"]) == 2 and 0.0 <= row["long"][0]["target"] <= 1.0
    # other settings in the same work dir are refused, naming the plan file and the setting
    assert main(args(long_mult="3")) == 2
    err = capsys.readouterr().err
    assert PLAN in err and "long_iters" in err


def test_fidelity_tool_refuses_bad_input(tmp_path, capsys):
    main = _tool()
    cfg = str(ROOT / "configs/search/auxcell_proxy.py")
    assert main([cfg, "--archs", "2", "--work-dir", str(tmp_path / "a")]) == 2
    assert "at least 3" in capsys.readouterr().err
    assert main([cfg, "--shard", "2/2", "--work-dir", str(tmp_path / "b")]) == 2
    assert "--shard" in capsys.readouterr().err
    assert main([cfg, "--final-iters", "2", "--final-jobs", "0", "--work-dir", str(tmp_path / "b")]) == 2
    assert "--final-jobs 0: must be at least 1" in capsys.readouterr().err
    missing = tmp_path / "nope.sqlite"
    assert main([cfg, "--from-history", str(missing), "--work-dir", str(tmp_path / "c"),
                 "--cfg-options", *_opts(tmp_path)]) == 2
    assert str(missing) in capsys.readouterr().err
    assert main([str(ROOT / "configs/search/autodeeplab_proxy.py"), "--work-dir", str(tmp_path / "d"),
                 "--cfg-options", "search.epochs=1"]) == 2
    assert "evaluator.type='proxy'" in capsys.readouterr().err


@pytest.mark.slow
def test_fidelity_final_target_exports_and_fine_tunes_each_arch(tmp_path, capsys):
    """--final-iters: every arch exported by tools/export.py, fine-tuned by tools/train.py with two seeds (two
    fine-tunes side by side, --final-jobs 2) and tested by tools/test.py; tau against that metric and its noise ceiling are reported; a rerun trains
    nothing again and other final settings are refused."""
    from densenas.fidelity_final import FINAL

    cfg, work = str(ROOT / "configs/search/auxcell_proxy.py"), tmp_path / "fid"
    final = ["--final-iters", "2", "--final-seeds", "2", "--final-jobs", "2",
             f"--final-args=--data-root {tmp_path / 'proxy'} --crop 64 --batch-size 2 --workers 0"]
    args = [cfg, "--work-dir", str(work), "--archs", "3", "--long-mult", "1", "--bootstrap", "50", "--seeds", "1",
            "--cfg-options", *_opts(tmp_path)]
    main = _tool()
    assert main(args + final) == 0
    out = capsys.readouterr().out
    assert "final target: mIoU" in out and "noise ceiling (fine-tune seed 1 vs seed 2)" in out
    assert "long proxy    vs final: tau" in out
    rows = [json.loads((work / FINAL / f"arch_{i:03d}.json").read_text()) for i in range(3)]
    for row in rows:
        assert "error" not in row, row
        assert len(row["final"]) == 2 and all(0.0 <= x["target"] <= 100.0 for x in row["final"])
        assert row["final"][0]["params"] > 0
    tests = sorted((work / FINAL).glob("arch_*/seed*/test.json"))
    assert len(tests) == 6 and not list((work / FINAL).glob("arch_*/seed*/*.pth"))
    summary = json.loads((work / "fidelity.json").read_text())["final"]
    assert summary["n"] == 3 and set(summary["tau"]) >= {"stage1 x1", "search x1", "long proxy"}
    assert "each cheap metric at x1 as the reward" in out
    assert {"miou", "fwiou", "pixel_acc", "stage1_miou"} <= set(summary["tau_metric"])
    before = [p.stat().st_mtime_ns for p in tests]
    assert main(args + final) == 0  # resumed: nothing trained again
    assert [p.stat().st_mtime_ns for p in tests] == before
    capsys.readouterr()
    assert main(args + ["--final-iters", "3"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_metric_scores_rank_every_recorded_metric_with_losses_negated():
    from densenas.fidelity_final import metric_scores

    cheap = [{"metrics": {"miou": 0.5, "stage1_loss_last": 2.0, "const": 1.0, "only_here": 3.0}},
             {"metrics": {"miou": 0.7, "stage1_loss_last": 1.0, "const": 1.0}},
             {"metrics": {"miou": 0.6, "stage1_loss_last": 3.0, "const": 1.0}}]
    assert metric_scores(cheap) == {"miou": [0.5, 0.7, 0.6], "-stage1_loss_last": [-2.0, -1.0, -3.0]}
    assert metric_scores(cheap[:2] + [{"stage1": 0.3}]) == {}  # a row from before metrics were recorded
    # a loss recorded already negated (detection's neg_loss reward) keeps its sign and its name
    det = [{"metrics": {"neg_loss": -1.5, "stage1_neg_loss": -1.6, "ap": 0.2}},
           {"metrics": {"neg_loss": -1.2, "stage1_neg_loss": -1.3, "ap": 0.3}}]
    assert metric_scores(det) == {"neg_loss": [-1.5, -1.2], "stage1_neg_loss": [-1.6, -1.3], "ap": [0.2, 0.3]}
