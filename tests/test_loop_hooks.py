"""The loop's short signature and its hooks as the only outputs and stops (issue #25 item 4): ``run(space,
strategy, evaluator, history, Budget(...), hooks=[...])``; the time budget, a stop file and a user's rule stop
a run gracefully through :meth:`Hook.stop_reason` (what is in flight finishes, ``--resume`` goes on with the
rows of an uninterrupted run); the reports are a hook, written also when the run raised; a failing user hook
is switched off; the old keywords are refused by name. Toy space and evaluator; seconds, CPU."""
from __future__ import annotations

import types
from pathlib import Path

import pytest

import densenas.hooks as hooks_mod
from densenas.config import load_config
from densenas.history import History
from densenas.hooks import (Hook, HookList, LogLines, Reports, StopFile, TensorBoard, TimeBudget, build_hooks,
                            default_hooks)
from densenas.loop import Budget, run
from densenas.promotion import PromotionCfg
from densenas.strategies import Darts, RandomSearch, build_strategy
from test_loop import Killed, _darts_run, _steps
from test_promotion import Misleading
from test_promotion import _search as promoted_search
from toy import ToyEvaluator, ToySpace


class Clock:
    """A fake ``time.perf_counter`` for :class:`TimeBudget`: each evaluation takes one 'second'."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class Ticking(ToyEvaluator):
    def __init__(self, clock: Clock, **kw):
        super().__init__(**kw)
        self.clock = clock

    def evaluate(self, arch, seed=0):
        self.clock.now += 1.0
        return super().evaluate(arch, seed)


class StopAfter(Hook):
    """A user hook: stops the run once ``n`` candidates (or epochs) are done in this call."""

    def __init__(self, n: int, reason: str = "enough"):
        self.n, self.reason, self.seen = n, reason, 0

    def after_candidate(self, progress) -> None:
        self.seen += 1

    def stop_reason(self) -> str | None:
        return self.reason if self.seen >= self.n else None


def _rows(h: History) -> list[tuple]:
    return [(c.id, c.arch.key, c.seed, c.status, c.result.reward) for c in h.finished()]


def _reference(tmp_path, n: int, **budget) -> list[tuple]:
    space = ToySpace()
    with History(tmp_path / "ref.sqlite") as h:
        out = run(space, build_strategy({"type": "reinforce", "lr": 0.05, "seed": 3}, space), ToyEvaluator(), h,
                  Budget(candidates=n, seed=7, **budget))
        assert out.stopped == "complete" and out.done == n
        return _rows(h)


# ------------------------------------------------------------------------------------------ time budget
@pytest.mark.parametrize("batch, done", [(1, 3), (2, 4)])
def test_time_budget_stops_after_the_candidates_in_flight_and_resume_goes_on(tmp_path, monkeypatch, batch, done):
    clock = Clock()
    monkeypatch.setattr(hooks_mod, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    space, n = ToySpace(), 8
    ref = _reference(tmp_path, n, batch=batch)
    lines: list[str] = []
    with History(tmp_path / "h.sqlite") as h:
        # 2.5 s: polled at 0, 1, 2 (go) and 3 (stop) with batch 1; at 0, 2 (go) and 4 (stop) with batch 2
        out = run(space, build_strategy({"type": "reinforce", "lr": 0.05, "seed": 3}, space), Ticking(clock), h,
                  Budget(candidates=n, seed=7, batch=batch),
                  hooks=default_hooks(lines.append, live=False, time_budget_s=2.5))
        assert out.stopped == "time_budget" and out.done == done and h.count() == done and not h.running()
        assert _rows(h) == ref[:done]
        # the time left shown is capped by the budget: ~0s once it is spent
        assert lines[-1].endswith("left ~0m00s"), lines[-1]
        out = run(space, build_strategy({"type": "reinforce", "lr": 0.05, "seed": 3}, space), ToyEvaluator(), h,
                  Budget(candidates=n, seed=7, batch=batch), hooks=default_hooks(lines.append, live=False))
        assert out.stopped == "complete" and out.done == n
        assert _rows(h) == ref  # the stop cost nothing: the rows of an uninterrupted run
    assert f"resuming: {done} finished, 0 interrupted candidate(s)" in lines


def test_a_user_hook_stops_a_supernet_run_between_epochs_and_resume_goes_on(tmp_path):
    _, calls, out = _darts_run(tmp_path, 3, hooks=[StopAfter(1, "user")])
    steps, (row,) = _steps(tmp_path)
    assert calls == [0] and out.stopped == "user" and [s.step for s in steps] == [1] and row.status == "running"
    _, calls, out = _darts_run(tmp_path, 3)  # resumed: from the checkpoint, the next epoch
    steps, (row,) = _steps(tmp_path)
    assert calls == [1, 2] and out.stopped == "complete" and [s.step for s in steps] == [1, 2, 3]
    assert row.status == "ok"


def test_time_budget_hook_checks_its_argument():
    with pytest.raises(ValueError, match="seconds must be a number >= 0"):
        TimeBudget(-1)
    with pytest.raises(ValueError, match="seconds must be a number >= 0"):
        TimeBudget("10")
    tb = TimeBudget(0)
    assert tb.stop_reason() is None and tb.seconds_left() is None  # its clock starts in before_run


# ------------------------------------------------------------------------------------------ user stops
def test_a_user_hook_and_a_stop_file_stop_the_run_with_their_reason(tmp_path):
    space, n = ToySpace(), 8
    ref = _reference(tmp_path, n)
    strategy = lambda: build_strategy({"type": "reinforce", "lr": 0.05, "seed": 3}, space)  # noqa: E731
    with History(tmp_path / "h.sqlite") as h:
        out = run(space, strategy(), ToyEvaluator(), h, Budget(candidates=n, seed=7), hooks=[StopAfter(2)])
        assert out.stopped == "enough" and out.done == 2 and _rows(h) == ref[:2]

        class TouchAt(Hook):  # makes the stop file appear after the 4th candidate
            def after_candidate(self, progress):
                if progress.done == 4:
                    (tmp_path / "STOP").touch()

        said: list[str] = []
        out = run(space, strategy(), ToyEvaluator(), h, Budget(candidates=n, seed=7), work_dir=tmp_path,
                  hooks=[LogLines(said.append), TouchAt(), StopFile("STOP")])  # relative to the work dir
        assert out.stopped == "stop_file" and out.done == 4 and _rows(h) == ref[:4]
        assert sum("STOP found: stopping after the candidates in flight" in m for m in said) == 1
        said.clear()
        out = run(space, strategy(), ToyEvaluator(), h, Budget(candidates=n, seed=7), work_dir=tmp_path,
                  hooks=[LogLines(said.append), StopFile("STOP")])  # the file is still there: nothing starts
        assert out.stopped == "stop_file" and h.count(finished_only=False) == 4
        assert sum("STOP exists: nothing new starts (delete it to go on)" in m for m in said) == 1
        (tmp_path / "STOP").unlink()
        out = run(space, strategy(), ToyEvaluator(), h, Budget(candidates=n, seed=7), work_dir=tmp_path,
                  hooks=[StopFile(tmp_path / "STOP")])
        assert out.stopped == "complete" and _rows(h) == ref


def test_a_user_hook_whose_stop_reason_raises_is_switched_off_and_the_run_completes(tmp_path):
    class Broken(Hook):
        def __init__(self):
            self.polls = 0

        def stop_reason(self):
            self.polls += 1
            raise OSError("sensor offline")

    space, lines, broken = ToySpace(), [], Broken()
    with History(tmp_path / "h.sqlite") as h:
        out = run(space, RandomSearch(space, seed=1), ToyEvaluator(), h, Budget(candidates=4),
                  hooks=[broken, StopAfter(10), LogLines(lines.append)])
        assert out.stopped == "complete" and out.done == 4 and h.count() == 4
    assert broken.polls == 1  # asked once, then off
    assert lines.count("hook Broken switched off: stop_reason raised OSError: sensor offline") == 1
    assert sum(ln.startswith("[") for ln in lines) == 4


def test_a_built_in_hook_that_raises_stops_the_run(tmp_path):
    def dead_log(msg):
        raise OSError("disk full")

    space = ToySpace()
    with History(tmp_path / "h.sqlite") as h, pytest.raises(OSError, match="disk full"):
        run(space, RandomSearch(space, seed=1), ToyEvaluator(), h, Budget(candidates=4), hooks=[LogLines(dead_log)])


def test_a_hook_stop_skips_promotion_and_stops_a_rung(tmp_path):
    lines: list[str] = []
    cfg = PromotionCfg(rungs=1, top=6, seeds=2)
    with History(tmp_path / "h.sqlite") as h:
        out = promoted_search(h, Misleading(), cfg, log=lines.append, hooks=[StopAfter(5, "paused")])
        assert out.stopped == "paused" and out.done == 5 and not h.rung_runs()
        assert ("promotion not started: the search was stopped (paused) (--resume with more time trains the rungs)"
                in lines)
        lines.clear()

        class StopInRung(Hook):  # stops once 3 promoted runs are done (their log lines are notices)
            def __init__(self):
                self.runs = 0

            def note(self, msg):
                self.runs += msg.startswith("  rung 1 #")

            def stop_reason(self):
                return "paused" if self.runs >= 3 else None

        out = promoted_search(h, Misleading(), cfg, log=lines.append, hooks=[StopInRung()])
        assert out.stopped == "complete" and h.count() == 24 and len(h.rung_runs()) == 3  # then stopped in the rung
        assert any("promotion: the run was stopped (paused) at rung 1 (9 run(s) not started" in ln for ln in lines)
        out = promoted_search(h, Misleading(), cfg)
        assert len(h.rung_runs()) == 12 and out.standing.rung == 1


# ------------------------------------------------------------------------------------------ reports
def test_reports_are_written_after_the_run_every_n_and_also_when_it_raised(tmp_path):
    space = ToySpace()
    seen: list[bool] = []

    class Peek(Hook):  # user hooks run after the built-in ones: the reports of candidate 2 are written already
        def after_candidate(self, progress):
            seen.append((tmp_path / "a" / "leaderboard.md").is_file())

    with History(tmp_path / "a.sqlite") as h:
        rep = Reports(every=2, metrics=(("stage1_reward", "S1"),))
        run(space, RandomSearch(space, seed=1), ToyEvaluator(), h, Budget(candidates=3), work_dir=tmp_path / "a",
            hooks=[Peek(), rep])
    assert seen == [False, True, True]
    md = (tmp_path / "a" / "leaderboard.md").read_text()
    assert "3 candidates finished" in md and "S1" in md and set(rep.written) >= {"md", "csv", "best_arch"}

    class Dies(ToyEvaluator):
        def evaluate(self, arch, seed=0):
            if len(self.calls) == 2:
                raise Killed()
            return super().evaluate(arch, seed)

    with History(tmp_path / "b.sqlite") as h, pytest.raises(Killed):
        run(space, RandomSearch(space, seed=1), Dies(), h, Budget(candidates=5), hooks=[Reports(tmp_path / "b")])
    assert "2 candidates finished" in (tmp_path / "b" / "leaderboard.md").read_text()
    assert (tmp_path / "b" / "best_arch.json").is_file()

    with History(tmp_path / "c.sqlite") as h:  # stopped before the first row: nothing to report
        run(space, RandomSearch(space, seed=1), ToyEvaluator(), h, Budget(candidates=5), work_dir=tmp_path / "c",
            hooks=[TimeBudget(0), Reports()])
    assert not (tmp_path / "c" / "leaderboard.md").exists()


def test_reports_hook_checks_its_arguments(tmp_path):
    with pytest.raises(ValueError, match="every must be a positive integer"):
        Reports(every=0)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['colour'\]"):
        Reports(colour="red")
    space = ToySpace()
    with History(tmp_path / "h.sqlite") as h, pytest.raises(ValueError, match="Reports needs a work dir"):
        run(space, RandomSearch(space), ToyEvaluator(), h, Budget(candidates=1), hooks=[Reports()])


def test_search_run_builds_its_hooks_log_tensorboard_time_budget_reports_then_the_config_hooks(tmp_path):
    from densenas.build import build_search

    cfg = load_config("configs/search/auxcell_proxy.py", ["search.time_budget_s=60"])
    cfg.hooks = [dict(type="densenas.hooks:StopFile", path="STOP")]
    search = build_search(cfg, build_evaluator=False, log=lambda *_: None)
    made = search.loop_hooks(tmp_path, log=lambda *_: None)
    assert [type(x).__name__ for x in made] == ["LogLines", "TensorBoard", "TimeBudget", "Reports", "StopFile",
                                                "StopFile"]  # <work_dir>/STOP always, then the config's
    assert made[4].path == Path("STOP")
    assert made[2].seconds == 60 and made[3].options["metrics"] == search.task.report_metrics
    assert search.loop_budget() == Budget(candidates=int(cfg.search.num_candidates), seed=search.seed,
                                          max_duplicates=int(cfg.search.get("max_duplicates", 200)),
                                          mode=search.parallel.mode, batch=search.parallel.batch_size)


# ------------------------------------------------------------------------------------------ signature
@pytest.mark.parametrize("kw, msg", [
    (dict(), "exactly one of candidates= .* and epochs="),
    (dict(candidates=3, epochs=2), "exactly one of candidates="),
    (dict(candidates=0), "candidates must be a positive integer, got 0"),
    (dict(epochs=2.5), "epochs must be a positive integer, got 2.5"),
    (dict(candidates=True), "candidates must be a positive integer, got True"),
    (dict(candidates=3, mode="eager"), r"mode must be one of \['pipeline', 'batch', 'async'\], got 'eager'"),
    (dict(candidates=3, batch=0), "batch must be a positive integer, got 0"),
    (dict(candidates=3, max_duplicates=-1), "max_duplicates must be a positive integer"),
    (dict(candidates=3, seed="7"), "seed must be an integer"),
])
def test_budget_is_checked(kw, msg):
    with pytest.raises(ValueError, match=msg):
        Budget(**kw)


def test_budget_is_frozen_and_knows_its_kind():
    b = Budget(candidates=3)
    assert not b.one_shot and b.total == 3 and Budget(epochs=4).one_shot and Budget(epochs=4).total == 4
    with pytest.raises(AttributeError):
        b.candidates = 5


def test_old_keywords_are_refused_by_name(tmp_path):
    space = ToySpace()
    with History(tmp_path / "h.sqlite") as h:
        args = (space, RandomSearch(space), ToyEvaluator(), h)
        with pytest.raises(TypeError, match=r"num_candidates= is gone: use budget=Budget\(candidates=\.\.\.\)"):
            run(*args, num_candidates=3)
        with pytest.raises(TypeError, match=r"time_budget_s= is gone: use hooks=\[TimeBudget\(seconds\)\]"):
            run(*args, Budget(candidates=3), time_budget_s=5)
        with pytest.raises(TypeError, match=r"log= is gone: use hooks=default_hooks\(log=\.\.\.\)"):
            run(*args, Budget(candidates=3), log=print)
        with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
            run(*args, Budget(candidates=3), colour=1)
        with pytest.raises(TypeError, match=r"run\(\) needs a budget: Budget\(candidates=N\)"):
            run(*args)
        with pytest.raises(TypeError, match="budget must be a densenas.loop.Budget, got 3"):
            run(*args, 3)
        assert h.count(finished_only=False) == 0  # refused before anything was written


def test_default_hooks_and_their_order(tmp_path):
    made = default_hooks(print, live=False, work_dir=tmp_path, time_budget_s=3, reports=dict(top=5),
                         on_progress=lambda p: None)
    assert [type(x).__name__ for x in made] == ["LogLines", "Callback", "TensorBoard", "TimeBudget", "Reports"]
    assert made[2].tb_dir == tmp_path / "tb" and made[4].options == {"top": 5}
    assert default_hooks(None, live=False) == [] and default_hooks(None, live=False, tensorboard=False,
                                                                   work_dir=tmp_path) == []
    with pytest.raises(TypeError, match="reports must be"):
        default_hooks(reports="yes")

    class Mine(LogLines):  # a subclass of a built-in hook is a user hook: after the built-in ones, switched off
        pass

    mine, log, stop = Mine(print), LogLines(print), StopFile()
    assert HookList([mine, log, stop]).hooks == [log, stop, mine]
    (spec,) = build_hooks([dict(type="densenas.hooks:TimeBudget", seconds=9)])
    assert isinstance(spec, TimeBudget) and spec.seconds == 9


def test_tensorboard_notices_reach_the_log_through_the_hook_list(tmp_path, monkeypatch):
    monkeypatch.setattr(hooks_mod, "tensorboard_available", lambda: False)
    space, lines = ToySpace(), []
    with History(tmp_path / "h.sqlite") as h:
        run(space, RandomSearch(space), ToyEvaluator(), h, Budget(candidates=1),
            hooks=[TensorBoard(tmp_path / "tb"), LogLines(lines.append)])
    assert lines[0].startswith("TensorBoard logging off: the 'tensorboard' package is not installed")


def test_one_shot_and_sampling_budgets_fit_their_strategy(tmp_path):
    from test_darts import ToyMixedSpace, _toy

    _, trainer = _toy()
    with History(tmp_path / "h.sqlite") as h, pytest.raises(ValueError, match="needs work_dir="):
        run(ToyMixedSpace(), Darts(ToyMixedSpace()), trainer, h, Budget(epochs=1))
