"""Promotion to longer budgets (successive halving over a finished sampling search, :mod:`densenas.promotion`):
the pick made on the top rung over several seeds, ties within the seed noise broken by cost, resume after a
kill inside a rung, the time budget, the reports and the config checks. Toy space and evaluator; seconds."""
from __future__ import annotations

import json
import math

import pytest

from densenas.arch import Arch
from densenas.config import ConfigError, load_config
from densenas.history import History
from densenas.loop import Budget, default_hooks, run
from densenas.parallel import InProcessExecutor, Job
from densenas.promotion import PromotionCfg, noise_of, pick, standings
from densenas.result import Result
from densenas.strategies import RandomSearch
from densenas.viz import write_reports
from toy import ToySpace, reward_of


class Killed(BaseException):
    """Stands for SIGKILL (not an ``Exception``: nothing records it)."""


class Misleading:
    """A proxy whose short budget misranks: the search reward is the true quality plus a fixed bias that
    favours archs with ``d4 == 0``; a promoted run (``evaluate_at``) sees the true quality, plus a small
    seed noise that shrinks with the budget. Cost: ``madds`` = 10 - d0 (so archs differ in cost)."""

    def __init__(self, kill_at: int | None = None):
        self.calls: list[tuple[str, int, float | None]] = []
        self.kill_at = kill_at

    @staticmethod
    def true(arch: Arch) -> float:
        return reward_of(arch)

    def _cost(self, arch: Arch) -> dict[str, float]:
        return {"madds": 10.0 - arch["d0"], "params": 1.0}

    def evaluate(self, arch: Arch, seed: int = 0) -> Result:
        self.calls.append((arch.key, seed, None))
        r = self.true(arch) + (0.5 if arch["d4"] == 0 else 0.0)
        return Result(reward=r, metrics={"stage1_reward": r, "q": r}, stage=1, cost=self._cost(arch))

    def evaluate_at(self, arch: Arch, seed: int = 0, scale: float = 1.0) -> Result:
        if self.kill_at is not None and sum(s is not None for *_, s in self.calls) == self.kill_at:
            raise Killed()
        self.calls.append((arch.key, seed, scale))
        noise = ((seed * 7919) % 13 - 6) / 1000.0 / scale
        r = self.true(arch) + noise
        return Result(reward=r, metrics={"q": r}, stage=2, cost=self._cost(arch))


def _search(h: History, ev, promote: PromotionCfg | None, n: int = 24, log=None, time_budget_s=None, work_dir=None,
            hooks=()):
    space = ToySpace()
    return run(space, RandomSearch(space, seed=5), ev, h, Budget(candidates=n, seed=11), work_dir=work_dir,
               promotion=promote, hooks=[*default_hooks(log, live=False, time_budget_s=time_budget_s), *hooks])


CFG = PromotionCfg(rungs=2, top=6, eta=2, min_keep=2, scale=3, seeds=2)


def test_promotion_picks_on_the_top_rung_what_the_short_budget_misranks(tmp_path):
    ev = Misleading()
    lines: list[str] = []
    with History(tmp_path / "h.sqlite") as h:
        out = _search(h, ev, CFG, log=lines.append)
        search_best = h.best()
        runs = h.rung_runs()
        rung1 = sorted({r.candidate for r in runs if r.rung == 1})
        rung2 = sorted({r.candidate for r in runs if r.rung == 2})
        # rung 1: the 6 best search rewards; rung 2: the best 3 (ceil(6 / 2)) of rung 1 by their mean
        ok = sorted(h.candidates("ok"), key=lambda c: (-c.result.reward, c.id))
        assert rung1 == sorted(c.id for c in ok[:6])
        means1 = {cid: sum(r.result.reward for r in runs if r.rung == 1 and r.candidate == cid) / 2 for cid in rung1}
        assert rung2 == sorted(sorted(rung1, key=lambda c: (-means1[c], c))[:3])
        assert all(sum(1 for r in runs if r.rung == k and r.candidate == c) == 2
                   for k, ids in ((1, rung1), (2, rung2)) for c in ids)
        # every promoted run at its rung's budget, two seeds: the candidate's own and another
        assert {s for *_, s in ev.calls if s is not None} == {3.0, 9.0}
        assert all(r.seed in (h.get(r.candidate).seed, h.get(r.candidate).seed + 100_003) for r in runs)
        # the pick is the truly best of rung 2 (the bias of the short budget is gone there)
        assert out.best.id in rung2
        assert Misleading.true(out.arch) == max(Misleading.true(h.get(c).arch) for c in rung2)
        assert out.standing.rung == 2 and out.standing.runs == 2
    assert Misleading.true(out.arch) > Misleading.true(search_best.arch)  # promotion changed the pick
    assert any(line.startswith("promotion: rung 2: the best 3") for line in lines)


def test_resume_after_a_kill_inside_a_rung_trains_only_what_is_missing(tmp_path):
    with History(tmp_path / "ref.sqlite") as h:
        ref_out = _search(h, Misleading(), CFG)
        ref = [(r.candidate, r.rung, r.repeat, r.seed, r.result.reward) for r in h.rung_runs()]
    with History(tmp_path / "h.sqlite") as h, pytest.raises(Killed):
        _search(h, Misleading(kill_at=7), CFG)
    with History(tmp_path / "h.sqlite") as h:
        assert len(h.rung_runs()) == 7
        ev = Misleading()
        out = _search(h, ev, CFG)
        assert [(r.candidate, r.rung, r.repeat, r.seed, r.result.reward) for r in h.rung_runs()] == ref
        assert sum(s is not None for *_, s in ev.calls) == len(ref) - 7  # nothing trained twice
        assert not [c for c in ev.calls if c[2] is None]  # the search itself was complete
        assert out.best.id == ref_out.best.id


def test_time_budget_skips_promotion_and_a_failed_run_ranks_last_on_its_rung(tmp_path):
    lines: list[str] = []
    with History(tmp_path / "h.sqlite") as h:
        out = _search(h, Misleading(), CFG, time_budget_s=0.0, log=lines.append)
        assert out.stopped == "time_budget" and not h.rung_runs()
    assert "promotion not started: the time budget ran out during the search (--resume with more time trains the " \
           "rungs)" in lines

    class Diverging(Misleading):
        def evaluate_at(self, arch, seed=0, scale=1.0):
            r = super().evaluate_at(arch, seed, scale)
            return Result.failed("diverged: loss is nan at stage 1 iter 3", stage=1) if arch["d4"] == 0 else r

    with History(tmp_path / "f.sqlite") as h:
        out = _search(h, Diverging(), PromotionCfg(rungs=1, top=6, seeds=2))
        ranked = standings(h)
        failed = {r.candidate for r in h.rung_runs() if not r.result.ok}
        assert failed and out.best.id not in failed
        # a candidate whose promoted runs all failed keeps rung 0 but ranks below the search's others there
        rung0 = [s for s in ranked if s.rung == 0]
        assert [s.id for s in rung0 if s.id in failed] == [s.id for s in rung0[-len(failed):]]


def _hist_with_runs(tmp_path, runs: dict[int, list[float]], madds: dict[int, float]) -> History:
    h = History(tmp_path / "t.sqlite")
    for cid in sorted(runs):
        arch = Arch("toy", tuple((f"d{i}", v) for i, v in enumerate([cid % 3, cid // 3 % 3, 0, 0, 0])))
        i = h.start(arch, seed=cid)
        h.finish(i, Result(reward=0.5, metrics={}, stage=1, cost={"madds": madds[cid], "params": 1.0}))
        for j, v in enumerate(runs[cid]):
            h.add_rung(i, 1, j, cid + j, Result(reward=v, stage=2))
    return h


def test_ties_within_the_seed_noise_and_the_cheapest_pick(tmp_path):
    # A: 0.80, 0.82 (mean 0.81); B: 0.79, 0.81 (0.80); C: 0.70, 0.71 (0.705)
    # pooled s.d. = sqrt((0.0002 + 0.0002 + 0.00005) / 3) = 0.012247; band = 1.96 * s * sqrt(1/2 + 1/2) = 0.0240
    h = _hist_with_runs(tmp_path, {1: [0.80, 0.82], 2: [0.79, 0.81], 3: [0.70, 0.71]}, {1: 9.0, 2: 5.0, 3: 1.0})
    ranked = standings(h)
    assert [s.id for s in ranked] == [1, 2, 3]
    assert math.isclose(noise_of(ranked), math.sqrt(0.00045 / 3), rel_tol=1e-9)
    assert [s.tied for s in ranked] == [True, True, False]
    assert math.isclose(ranked[0].score, 0.81) and math.isclose(ranked[0].sd, math.sqrt(0.0002))
    assert pick(ranked).id == 2  # the cheaper of the tied A and B (MAdds 5 < 9), not the cheapest overall C
    assert pick(ranked, "params").id == 1  # equal params among the tied: the higher score, A
    assert [s.tied for s in standings(h, tie_z=0.1)] == [True, False, False]
    out = write_reports(h, tmp_path, metrics=())
    best = json.loads(out["best_arch"].read_text())
    board = out["md"].read_text()
    h.close()
    assert best["result"]["candidate"] == 2 and best["result"]["tied_with"] == [1]
    assert best["result"]["rung"] == 1 and math.isclose(best["result"]["score"], 0.80)
    assert "| 1 | #1 * = | 1 | 0.8100 ± 0.0141 (2) |" in board and "#2 * = (pick)" in board
    assert "Seed s.d. at rung 1: 0.0122" in board and "the cheapest of the 2 tied" in board
    assert "rung,score,score_sd,seeds,tied" in out["csv"].read_text()


def test_no_seeds_no_ties_and_reports_of_old_histories_unchanged(tmp_path):
    h = _hist_with_runs(tmp_path, {1: [0.80], 2: [0.79], 3: [0.70]}, {1: 9.0, 2: 5.0, 3: 1.0})
    ranked = standings(h)
    assert noise_of(ranked) is None and [s.tied for s in ranked] == [True, False, False]
    assert pick(ranked).id == 1
    h.close()
    (tmp_path / "plain").mkdir()
    with History(tmp_path / "plain.sqlite") as p:  # no promotion: the leaderboard of before
        _search(p, Misleading(), None, n=6)
        out = write_reports(p, tmp_path / "plain", metrics=(("q", "q"),))
        assert out["md"].read_text().startswith("| rank | cand | reward | stage | q |")
        assert json.loads(out["best_arch"].read_text())["result"]["candidate"] == p.best().id


def test_executor_jobs_with_a_scale_train_at_the_promoted_budget():
    ev = Misleading()
    arch = ToySpace().from_indices([2, 0, 1, 2, 1])
    ex = InProcessExecutor(ev, ToySpace())
    ex.submit(Job(1, arch, 4, None, 3.0))
    ex.submit(Job(2, arch, 4))
    a, b = ex.wait(), ex.wait()
    assert ev.calls == [(arch.key, 4, 3.0), (arch.key, 4, None)]
    assert a.result.stage == 2 and b.result.stage == 1


def test_config_checks(tmp_path):
    with pytest.raises(ValueError, match="search.promote.seeds must be an integer >= 1, got 0"):
        PromotionCfg(seeds=0)
    with pytest.raises(ValueError, match="search.promote.scale must be a number > 1, got 1"):
        PromotionCfg(scale=1)
    assert [PromotionCfg(top=None, eta=3).keep(r, 40) for r in (1, 2, 3)] == [14, 5, 2]
    assert [PromotionCfg(top=4, eta=3, min_keep=2).keep(r, 40) for r in (1, 2)] == [4, 2]
    assert PromotionCfg(top=8).keep(1, 3) == 3
    from densenas.build import plan_search

    base = "configs/search/auxcell_proxy.py"
    with pytest.raises(ConfigError, match=r"unknown key 'search.promote.rung' \(did you mean 'rungs'\?\)"):
        plan_search(load_config(base, ["search.promote.rung=2"]))
    with pytest.raises(ConfigError, match="search.promote.*eta must be a number > 1"):
        plan_search(load_config(base, ["search.promote.eta=0.5"]))
    with pytest.raises(ConfigError, match="'search.baselines' must be True"):
        plan_search(load_config(base, ["search.baselines=3"]))
    plan = plan_search(load_config(base, ["search.promote.rungs=2"]))
    assert plan["promotion"].rungs == 2 and "promote" not in plan["budget"]


def test_baselines_are_proposed_first_and_refused_where_the_space_has_none():
    from densenas.build import build_search

    quiet = lambda msg: None  # noqa: E731
    ext = "configs/search/auxcell_ext_proxy.py"
    search = build_search(load_config(ext), build_evaluator=False, log=quiet)
    assert search.baselines == ("all",)
    archs = search.seed_baselines(log=quiet)
    assert [a.key for a in archs] == [a.key for a in search.space.baseline_archs().values()] and len(archs) == 2
    assert [search.strategy.propose() for _ in archs] == archs
    with pytest.raises(ConfigError, match="space 'auxcell' cannot express a hand-designed baseline"):
        build_search(load_config("configs/search/auxcell_proxy.py", ["search.baselines=True"]),
                     build_evaluator=False, log=quiet)
    with pytest.raises(ConfigError, match=r"cannot express \['fpn'\]; it can express \['aspp', 'deeplabv3plus'\]"):
        build_search(load_config(ext, ["search.baselines=[fpn]"]), build_evaluator=False, log=quiet)


def test_time_budget_is_checked_before_each_promoted_run(tmp_path):
    class Slow(Misleading):
        def evaluate_at(self, arch, seed=0, scale=1.0):
            import time

            time.sleep(0.2)
            return super().evaluate_at(arch, seed, scale)

    lines: list[str] = []
    with History(tmp_path / "h.sqlite") as h:
        _search(h, Slow(), None)  # the search first, then its promotion under a budget (a resumed run)
        out = _search(h, Slow(), PromotionCfg(rungs=1, top=6, seeds=2), time_budget_s=0.5, log=lines.append)
        assert out.stopped == "complete" and h.count() == 24
        n = len(h.rung_runs())
        assert 1 <= n < 12  # started while time was left, not all twelve at once
        assert any(f"({12 - n} run(s) not started; --resume trains them)" in line for line in lines)
        out = _search(h, Slow(), PromotionCfg(rungs=1, top=6, seeds=2))  # resumed without a budget
        assert len(h.rung_runs()) == 12 and out.standing.rung == 1


def test_seeded_baselines_are_carried_to_every_rung_whatever_their_rank(tmp_path):
    from dataclasses import replace

    from densenas.build import build_search

    lines: list[str] = []
    with History(tmp_path / "h.sqlite") as h:
        _search(h, Misleading(), None)  # the search first; then the worst search reward is "the baseline"
        worst = min(h.candidates("ok"), key=lambda c: (c.result.reward, -c.id))
        cfg = replace(CFG, carry=(worst.arch.key,))
        out = _search(h, Misleading(), cfg, log=lines.append)
        runs = h.rung_runs()
        for rung, best in ((1, 6), (2, 3)):  # the best keep(r) plus the baseline, two seeds each
            ids = {r.candidate for r in runs if r.rung == rung}
            assert worst.id in ids and len(ids) == best + 1
            assert sum(1 for r in runs if r.rung == rung and r.candidate == worst.id) == 2
        assert out.standing.rung == 2
        assert any(line.startswith(f"promotion: rung 2: the best 3 (") and f"and the baseline(s) #{worst.id} x 2"
                   in line for line in lines), lines
    quiet = lambda msg: None  # noqa: E731
    ext = "configs/search/auxcell_ext_proxy.py"
    search = build_search(load_config(ext, ["search.promote.rungs=1"]), build_evaluator=False, log=quiet)
    assert search.promotion.carry == tuple(a.key for a in search.space.baseline_archs().values())
    off = build_search(load_config(ext, ["search.promote.rungs=1", "search.promote.baselines=False"]),
                       build_evaluator=False, log=quiet)
    assert off.promotion.carry == ()
    with pytest.raises(ValueError, match="search.promote.baselines must be True or False"):
        PromotionCfg(baselines="yes")


@pytest.mark.parametrize("jobs", [1, 2])
def test_final_rung_fine_tunes_the_top_of_the_last_proxy_rung_and_the_baseline(tmp_path, monkeypatch, jobs):
    """search.promote.final_iters: the best final_top of the top proxy rung and the carried baseline are
    fine-tuned (here a stand-in for tools/export.py + train.py + test.py that scores the true quality), the
    run's headline metric is recorded as rung rungs + 1, the pick is made there, a resume trains nothing
    again, and a missing config.py is a clear error. final_jobs=2: the same runs, two at a time, each told to
    use half the cores."""
    import os
    from dataclasses import replace

    import densenas.finetune as ft

    calls: list[tuple[str, int]] = []
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    want_env = None if jobs == 1 else {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // 2))}

    def fake_fine_tune(export_args, config, run, seed, keep_checkpoints=True, env=None):
        assert env == want_env
        arch = Arch.load(export_args[0])
        assert export_args[1:3] == ["--iters", "7"] and export_args[3:] == ["--crop", "64"]
        assert (run.parent / "config.py").read_text() == "# the search's config\n"
        calls.append((arch.key, seed))
        # the baseline is truly best after fine-tuning; lower-is-better metric (an RMSE) to check the sign
        rmse = 1.0 - Misleading.true(arch) - (1.0 if arch.key == baseline.key else 0.0)
        return {"metrics": {"depth/rmse": rmse, "depth/abs_rel": 0.5}, "params": 1e6, "madds": 2e9,
                "train_seconds": 1.5}

    monkeypatch.setattr(ft, "fine_tune", fake_fine_tune)
    (tmp_path / "config.py").write_text("# the search's config\n")
    with History(tmp_path / "h.sqlite") as h:
        _search(h, Misleading(), None)
        baseline = min(h.candidates("ok"), key=lambda c: (c.result.reward, -c.id)).arch
        cfg = replace(CFG, carry=(baseline.key,), final_iters=7, final_top=2, final_args=("--crop", "64"),
                      final_jobs=jobs, final_metric=(r"(^|/)rmse$", False))
        lines: list[str] = []
        out = _search(h, Misleading(), cfg, work_dir=tmp_path, log=lines.append)
        runs = [r for r in h.rung_runs() if r.rung == 3]
        rung2 = {r.candidate: [] for r in h.rung_runs() if r.rung == 2}
        for r in h.rung_runs():
            if r.rung == 2:
                rung2[r.candidate].append(r.result.reward)
        top2 = sorted(rung2, key=lambda c: (-sum(rung2[c]) / 2, c))[:2]
        base_id = next(c.id for c in h.candidates("ok") if c.arch.key == baseline.key)
        assert sorted({r.candidate for r in runs}) == sorted(top2 + [base_id]) and len(runs) == 6
        assert all(r.result.reward == pytest.approx(-r.result.metrics["depth/rmse"]) for r in runs)
        assert out.standing.rung == 3 and out.arch == baseline  # the pick is made on the fine-tuned metric
        assert (tmp_path / "promotion_final" / f"cand_{base_id:04d}" / "arch.json").is_file()
        assert any(line.startswith("promotion: final rung 3: ") for line in lines)
        write_reports(h, tmp_path, metrics=(("q", "Q"),), promotion=cfg)
        board = (tmp_path / "leaderboard.md").read_text()
        row = next(ln for ln in board.splitlines() if "(pick)" in ln)
        assert "| 3 |" in row and "| – |" in row  # the final rung has tools/test.py's metrics, not q
        assert "Rung 3 is the final rung" in board
        n = len(calls)
        _search(h, Misleading(), cfg, work_dir=tmp_path)  # resumed: nothing fine-tuned again
        assert len(calls) == n == 6
    (tmp_path / "config.py").unlink()
    with History(tmp_path / "h2.sqlite") as h:
        with pytest.raises(ValueError, match="config.py .*is missing"):
            _search(h, Misleading(), cfg, work_dir=tmp_path)
    with pytest.raises(ValueError, match="search.promote.final_args must be a list"):
        PromotionCfg(final_args="--crop 64")
    with pytest.raises(ValueError, match=r"search.promote.final_jobs must be an integer >= 1, got 0"):
        PromotionCfg(final_jobs=0)


@pytest.mark.slow
def test_final_rung_end_to_end_with_the_real_tools(tmp_path):
    """tools/search.py with search.promote.final_iters on a tiny proxy set: the best of rung 1 is exported,
    fine-tuned by tools/train.py and tested by tools/test.py; its mIoU is rung 2's score and the leaderboard
    says so."""
    from pathlib import Path

    from test_tools import _tool as tool

    root = Path(__file__).resolve().parents[1]
    work = tmp_path / "search"
    opts = [f"data.root={tmp_path / 'proxy'}", "data.image_size=64", "data.proxy.num_train=16",
            "data.proxy.num_val=8", "data.proxy.size=64", "evaluator.stage1.iters=4", "evaluator.stage1.batch_size=4",
            "evaluator.stage2.iters=1", "evaluator.stage2.batch_size=4", "task.teacher=None",
            "backbone.pretrained=False", "search.num_candidates=3", "search.time_budget_s=None",
            "search.promote.rungs=1", "search.promote.top=2", "search.promote.seeds=1",
            "search.promote.final_iters=2", "search.promote.final_top=1",
            f"search.promote.final_args=['--data-root','{tmp_path / 'proxy'}','--crop','64','--batch-size','2',"
            f"'--workers','0']"]
    assert tool("search")([str(root / "configs/search/auxcell_proxy.py"), "--work-dir", str(work),
                           "--cfg-options", *opts]) == 0
    with History(work / "history.sqlite") as h:
        final = [r for r in h.rung_runs() if r.rung == 2]
        assert len(final) == 1 and final[0].result.ok, final
        assert 0.0 <= final[0].result.reward <= 100.0 and "mIoU" in final[0].result.metrics
    chosen = json.loads((work / "best_arch.json").read_text())
    assert Arch.from_dict(chosen).key == h_arch_key(work, final[0].candidate)
    assert "Rung 2 is the final rung" in (work / "leaderboard.md").read_text()
    assert list((work / "promotion_final").glob("cand_*/seed*/test.json"))


def h_arch_key(work, cid: int) -> str:
    with History(work / "history.sqlite") as h:
        return h.get(cid).arch.key
