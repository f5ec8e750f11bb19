"""The one search loop (:func:`densenas.loop.run`) for sampling strategies (REINFORCE after Zoph & Le,
random) and the one-shot DARTS strategy (Liu, Simonyan, Yang, ICLR 2019): one history, steps of a
supernet run, resume after a kill at any point, time budget, failures, weights-only checkpoints, reports
and progress output. Toy space/evaluator and a toy supernet; CPU, seconds."""
from __future__ import annotations

import io
import json
import sqlite3

import pytest
import torch

from densenas.arch import Arch
from densenas.evaluation.supernet import Splits
from densenas.history import History
from densenas.loop import CHECKPOINT, DERIVED, Budget, default_hooks, load_checkpoint, run
from densenas.result import OVER_LIMIT, Result
from densenas.sampling import MAX_REJECTIONS
from densenas.hooks import tensorboard_available
from densenas.strategies import Darts, RandomSearch, build_strategy
from densenas.viz import write_reports
from test_darts import SPLITS, ToyMixedSpace, _toy
from toy import ToyEvaluator, ToySpace


class Killed(BaseException):
    """Stands for SIGKILL: not an ``Exception``, so the loop does not record it as a failure."""


# ------------------------------------------------------------------------------------------ sampling
def _reinforce(space: ToySpace):
    return build_strategy({"type": "reinforce", "lr": 0.05, "seed": 3}, space)


def test_sampling_resume_after_kill_reevaluates_running_row(tmp_path):
    space, n = ToySpace(), 10
    with History(tmp_path / "ref.sqlite") as h:
        out = run(space, _reinforce(space), ToyEvaluator(), h, Budget(candidates=n, seed=7))
        ref = [(c.arch.key, c.seed, c.result.reward) for c in h.finished()]
        assert out.done == n and out.stopped == "complete" and out.best.result.reward == max(r for *_, r in ref)

    class Dying(ToyEvaluator):
        def evaluate(self, arch, seed=0):
            if len(self.calls) == 4:
                raise Killed()
            return super().evaluate(arch, seed)

    with History(tmp_path / "h.sqlite") as h, pytest.raises(Killed):
        run(space, _reinforce(space), Dying(), h, Budget(candidates=n, seed=7))
    with History(tmp_path / "h.sqlite") as h:
        (left,) = h.running()
        before = {c.id: c.finished for c in h.finished()}
        assert len(before) == 4 and left.id == 5
        lines: list[str] = []
        ev = ToyEvaluator()
        run(space, _reinforce(space), ev, h, Budget(candidates=n, seed=7),
            hooks=default_hooks(lines.append, live=False))
        rows = h.finished()
        assert [(c.arch.key, c.seed, c.result.reward) for c in rows] == ref and not h.running()
        assert {c.id: c.finished for c in rows if c.id in before} == before  # not re-run
        assert ev.calls[0] == left.arch.key and len(ev.calls) == n - 4  # the interrupted arch, same seed
    assert lines[0] == "resuming: 4 finished, 1 interrupted candidate(s)"
    assert lines[1].startswith("[5/10] #5 reward") and "left ~" in lines[-1]


def test_failed_candidate_is_recorded_and_the_loop_goes_on(tmp_path):
    space = ToySpace()
    bad = RandomSearch(space, seed=0).propose()
    with History(tmp_path / "h.sqlite") as h:
        run(space, RandomSearch(space, seed=0), ToyEvaluator(fail_on={bad.key}), h, Budget(candidates=5))
        rows = h.finished()
        assert len(rows) == 5 and rows[0].arch == bad
        assert rows[0].status == "failed" and rows[0].result.error == "RuntimeError: boom"
        assert all(c.status == "ok" for c in rows[1:])


class Limited(ToyEvaluator):
    """A toy evaluator under a hard limit: archs with ``d0 == 0`` (a third of the space) are over it."""

    def screen(self, arch):
        if arch["d0"] == 0:
            return Result(status="failed", cost={"params": 9.0}, error=f"{OVER_LIMIT}: params 9 > 5 (not trained)")
        return None


@pytest.mark.parametrize("mode", ["batch", "async", "pipeline"])
def test_proposals_over_a_hard_limit_are_recorded_untrained_and_do_not_count(tmp_path, mode):
    space, ev, lines = ToySpace(), Limited(), []
    with History(tmp_path / "h.sqlite") as h:
        out = run(space, RandomSearch(space, seed=0), ev, h, Budget(candidates=10, mode=mode),
                  hooks=default_hooks(lines.append, live=False))
        rows = h.finished()
        over = [c for c in rows if c.result.over_limit]
        trained = [c for c in rows if not c.result.over_limit]
        assert out.done == 10 and out.stopped == "complete" and len(trained) == 10 and over
        assert all(c.arch["d0"] == 0 for c in over) and all(c.arch["d0"] != 0 for c in trained)
        assert sorted(ev.calls) == sorted(c.arch.key for c in trained)  # the rejected never reached it
        assert h.count(counted_only=True) == 10 and h.count() == len(rows)
        assert any(line.endswith("(not trained), not counted") for line in lines)
        assert any(line.startswith("[10/10] ") for line in lines)  # progress counts trained candidates
        out = run(space, RandomSearch(space, seed=0), ev, h, Budget(candidates=12, mode=mode))
        assert out.done == 12 and h.count(counted_only=True) == 12 and len(ev.calls) == 12
        board = write_reports(h, tmp_path)["md"].read_text()
        n_over = len([c for c in h.finished() if c.result.over_limit])
        assert f"12 candidates finished, 0 failed, {n_over} rejected over the hard limit (not trained" in board
        assert "- rejected over the hard limit (params > 5): #" in board and "failed: over" not in board


def test_only_rejections_by_a_hard_limit_leave_the_count(tmp_path):
    with History(tmp_path / "h.sqlite") as h:
        for i, r in enumerate([Result(status="failed", error=None), Result(status="failed", error="boom"),
                               Result(status="failed", error=f"{OVER_LIMIT}: params 9 > 5 (not trained)"),
                               Result(reward=0.5, stage=1)]):
            h.finish(h.start(Arch("toy", (("d0", i),)), seed=i), r)
        h.start(Arch("toy", (("d0", 9),)), seed=9)  # running
        assert (h.count(), h.count(counted_only=True), h.count(finished_only=False, counted_only=True)) == (4, 3, 4)


def test_a_search_whose_proposals_are_all_over_the_limit_stops_and_says_so(tmp_path):
    class Nothing(ToyEvaluator):
        def screen(self, arch):
            return Result(status="failed", error=f"{OVER_LIMIT}: params 9 > 5 (not trained)")

    space, ev, lines = ToySpace(n=6), Nothing(), []
    with History(tmp_path / "h.sqlite") as h:
        out = run(space, RandomSearch(space, seed=0), ev, h, Budget(candidates=2, max_duplicates=1000),
                  hooks=default_hooks(lines.append, live=False))
        assert out.stopped == "over_limit" and out.done == 0 and not ev.calls
        assert h.count() == MAX_REJECTIONS * 2 and h.count(counted_only=True) == 0
    assert "raise objective.limit" in lines[-1]


def test_time_budget_stops_between_candidates(tmp_path):
    space = ToySpace()
    with History(tmp_path / "h.sqlite") as h:
        out = run(space, RandomSearch(space), ToyEvaluator(), h, Budget(candidates=5),
                  hooks=default_hooks(None, live=False, time_budget_s=0.0))
        assert out.stopped == "time_budget" and h.count(finished_only=False) == 0
        out = run(space, RandomSearch(space), ToyEvaluator(delay=0.05), h, Budget(candidates=50),
                  hooks=default_hooks(None, live=False, time_budget_s=0.12))
        assert out.stopped == "time_budget" and 2 <= h.count() <= 4 and not h.running()


def test_strategy_state_is_stored_weights_only(tmp_path):
    space = ToySpace()
    for kind in ("reinforce", "evolution", "random"):
        with History(tmp_path / f"{kind}.sqlite") as h:
            run(space, build_strategy({"type": kind, "seed": 1}, space), ToyEvaluator(), h, Budget(candidates=6))
        with sqlite3.connect(tmp_path / f"{kind}.sqlite") as db:
            (blob,) = db.execute("SELECT value FROM meta WHERE key='strategy_state'").fetchone()
        state = torch.load(io.BytesIO(blob), weights_only=True)
        fresh = build_strategy({"type": kind, "seed": 99}, space)
        fresh.load_state_dict(state)
    with History(tmp_path / "x.sqlite") as h, pytest.raises(TypeError, match="meta 'obj'.*plain data"):
        h.set_meta("obj", {"space": ToySpace()})


def test_budget_key_and_history_kind_are_checked(tmp_path):
    space = ToySpace()
    with History(tmp_path / "h.sqlite") as h:
        with pytest.raises(ValueError, match=r"samples candidates: give Budget\(candidates=\.\.\.\)"):
            run(space, RandomSearch(space), ToyEvaluator(), h, Budget(epochs=3))
        run(space, RandomSearch(space), ToyEvaluator(), h, Budget(candidates=2))
        net, trainer = _toy()
        with pytest.raises(ValueError, match=r"is one-shot: give Budget\(epochs=\.\.\.\)"):
            run(ToyMixedSpace(), Darts(ToyMixedSpace()), trainer, h, Budget(candidates=2), work_dir=tmp_path)
        with pytest.raises(ValueError, match="holds a sampling search"):
            run(ToyMixedSpace(), Darts(ToyMixedSpace()), trainer, h, Budget(epochs=2), work_dir=tmp_path)


# ------------------------------------------------------------------------------------------ one-shot
def _darts_run(work, epochs: int, seed: int = 5, splits: Splits = SPLITS, log=None, tensorboard: bool = False,
               time_budget_s: float | None = None, hooks=()):
    """A fresh 'process': new supernet and trainer (init from ``seed``), state from the work dir."""
    net, trainer = _toy(seed=seed, splits=splits)
    calls: list[int] = []
    orig = trainer.train_epoch
    trainer.train_epoch = lambda *a, **k: (calls.append(trainer.epoch), orig(*a, **k))[1]
    space = ToyMixedSpace()
    own = default_hooks(log, live=False, work_dir=work, tensorboard=tensorboard, time_budget_s=time_budget_s)
    with History(work / "history.sqlite") as h:
        out = run(space, Darts(space), trainer, h, Budget(epochs=epochs), work_dir=work, hooks=[*own, *hooks])
    return net, calls, out


def _steps(work):
    with History(work / "history.sqlite") as h:
        return h.steps(), h.candidates()


def test_darts_run_records_steps_of_one_candidate(tmp_path):
    lines: list[str] = []
    net, calls, out = _darts_run(tmp_path, 3, log=lines.append)
    steps, (row,) = _steps(tmp_path)
    assert calls == [0, 1, 2] and [s.step for s in steps] == [1, 2, 3] and out.done == 3
    assert all(s.candidate == row.id and s.result.ok and {"mse", "w_loss", "a_loss", "lr"} <= set(s.result.metrics)
               for s in steps)
    assert row.status == "ok" and row.arch == steps[-1].arch == out.arch == net.derive()
    assert row.result.reward == steps[-1].result.reward and row.result.stage == 3
    assert row.result.wall_time == pytest.approx(sum(s.result.wall_time for s in steps))
    assert Arch.load(tmp_path / DERIVED) == out.arch
    assert lines[0].startswith("[1/3] #1 epoch 1 reward") and "best" in lines[0] and len(lines) == 3


def test_darts_resume_from_checkpoint_reproduces_uninterrupted_run(tmp_path):
    ref_net, _, _ = _darts_run(tmp_path / "ref", 4)
    ref, _ = _steps(tmp_path / "ref")
    work = tmp_path / "run"
    _darts_run(work, 2)
    first, (row,) = _steps(work)
    assert row.status == "ok" and row.result.stage == 2  # finished for the 2 epochs asked then
    lines: list[str] = []
    net, calls, _ = _darts_run(work, 4, seed=77, log=lines.append)  # other init: state from supernet.pth
    steps, (row,) = _steps(work)
    assert calls == [2, 3]  # no epoch trained twice
    assert [s.finished for s in steps[:2]] == [s.finished for s in first]  # nor recorded twice
    assert [s.result.reward for s in steps] == [s.result.reward for s in ref]
    assert [s.arch for s in steps] == [s.arch for s in ref]
    assert torch.equal(net.alpha, ref_net.alpha) and torch.equal(net.scale, ref_net.scale)
    assert row.status == "ok" and row.result.stage == 4
    assert lines[0] == f"resuming the supernet run #1 after epoch 2 from {work / CHECKPOINT}"
    _, calls, out = _darts_run(work, 4)  # nothing left to do
    assert calls == [] and out.done == 4 and len(_steps(work)[0]) == 4


def test_darts_kill_mid_epoch_and_between_checkpoint_and_row(tmp_path, monkeypatch):
    ref_net, _, _ = _darts_run(tmp_path / "ref", 3)
    ref, _ = _steps(tmp_path / "ref")
    work = tmp_path / "run"
    real_add = History.add_step

    def dying_add(self, cid, step, *a, **k):
        if step == 2:
            raise Killed()
        return real_add(self, cid, step, *a, **k)

    monkeypatch.setattr(History, "add_step", dying_add)
    with pytest.raises(Killed):
        _darts_run(work, 3)
    monkeypatch.setattr(History, "add_step", real_add)
    steps, (row,) = _steps(work)
    assert [s.step for s in steps] == [1] and row.status == "running"
    assert load_checkpoint(work / CHECKPOINT)["record"]["step"] == 2

    net, trainer = _toy(seed=5)  # now killed inside epoch 3: the checkpoint still holds epoch 2
    orig = trainer.train_epoch

    def dying_epoch(*a, **k):
        if trainer.epoch == 2:
            raise Killed()
        return orig(*a, **k)

    trainer.train_epoch = dying_epoch
    with History(work / "history.sqlite") as h, pytest.raises(Killed):
        run(ToyMixedSpace(), Darts(ToyMixedSpace()), trainer, h, Budget(epochs=3), work_dir=work)
    assert [s.step for s in _steps(work)[0]] == [1, 2]  # the row the first kill prevented
    net, calls, _ = _darts_run(work, 3)
    steps, (row,) = _steps(work)
    assert calls == [2] and [s.result.reward for s in steps] == [s.result.reward for s in ref]
    assert row.status == "ok" and torch.equal(net.alpha, ref_net.alpha)


def test_checkpoint_loads_weights_only(tmp_path):
    _darts_run(tmp_path, 1)
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert state["trainer"]["epoch"] == 1 and state["record"]["step"] == 1
    assert state["trainer"]["cfg"]["w_lr"] == 0.05 and isinstance(state["trainer"]["torch_rng"], torch.Tensor)
    assert state["strategy"]["strategy"] == "darts"
    with sqlite3.connect(tmp_path / "history.sqlite") as db:
        (blob,) = db.execute("SELECT value FROM meta WHERE key='strategy_state'").fetchone()
    assert torch.load(io.BytesIO(blob), weights_only=True)["one_shot"] is True


def test_darts_time_budget_divergence_and_missing_checkpoint(tmp_path):
    _, calls, out = _darts_run(tmp_path / "t", 5, time_budget_s=0.0)
    assert calls == [] and out.stopped == "time_budget" and out.arch is None
    steps, (row,) = _steps(tmp_path / "t")
    assert steps == [] and row.status == "running"

    work = tmp_path / "nan"
    _darts_run(work, 1)
    bad = Splits(SPLITS.weights, (SPLITS.arch[0], SPLITS.arch[1] * float("nan")), SPLITS.val)
    with pytest.raises(FloatingPointError, match="architecture loss is nan"):
        _darts_run(work, 3, splits=bad)
    steps, (row,) = _steps(work)
    assert [s.step for s in steps] == [1] and row.status == "failed" and row.result.stage == 2
    assert "FloatingPointError: DARTS architecture loss is nan" in row.result.error
    _, calls, _ = _darts_run(work, 3)  # resumed with good data: from the last good epoch
    steps, (row,) = _steps(work)
    assert calls == [1, 2] and [s.step for s in steps] == [1, 2, 3] and row.status == "ok"

    (work / CHECKPOINT).unlink()
    with pytest.raises(RuntimeError, match="missing"):
        _darts_run(work, 4)
    _darts_run(tmp_path / "other", 1)
    (tmp_path / "other" / "history.sqlite").unlink()
    with pytest.raises(RuntimeError, match="does not hold"):
        _darts_run(tmp_path / "other", 2)


def test_reports_of_a_supernet_run(tmp_path):
    _darts_run(tmp_path, 3)
    steps, (row,) = _steps(tmp_path)
    out = write_reports(history := History(tmp_path / "history.sqlite"), tmp_path, metrics=(("mse", "MSE"),))
    history.close()
    best = max(steps, key=lambda s: s.result.reward)
    data = json.loads(out["best_arch"].read_text())
    assert Arch.from_dict(data) == best.arch and data["result"]["epoch"] == best.step
    assert data["result"]["reward"] == best.result.reward
    md = out["md"].read_text()
    assert "| rank | epoch | reward |" in md and f"| 1 | {best.step} |" in md and "3 epochs finished" in md
    assert len(out["csv"].read_text().splitlines()) == 4 and out["plot"].is_file()


# ------------------------------------------------------------------------------------------ progress
def test_progress_outputs(tmp_path, monkeypatch):
    import densenas.hooks as progress

    space = ToySpace()
    monkeypatch.setattr(progress, "tensorboard_available", lambda: False)
    lines: list[str] = []
    with History(tmp_path / "a" / "h.sqlite") as h:
        run(space, RandomSearch(space), ToyEvaluator(), h, Budget(candidates=2), work_dir=tmp_path / "a",
            hooks=default_hooks(lines.append, live=True, work_dir=tmp_path / "a"))
    assert lines[0].startswith("TensorBoard logging off: the 'tensorboard' package is not installed")
    assert [ln.split()[0] for ln in lines[1:]] == ["[1/2]", "[2/2]"]
    monkeypatch.undo()
    if not tensorboard_available():
        pytest.skip("tensorboard not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with History(tmp_path / "b" / "h.sqlite") as h:
        run(space, RandomSearch(space), ToyEvaluator(), h, Budget(candidates=2), work_dir=tmp_path / "b",
            hooks=default_hooks(None, live=False, work_dir=tmp_path / "b"))
    _darts_run(tmp_path / "c", 2, tensorboard=True)
    for d, tag, n in (("b", "candidate/reward", 2), ("c", "step/mse", 2)):
        acc = EventAccumulator(str(tmp_path / d / "tb")).Reload()
        assert tag in acc.Tags()["scalars"] and len(acc.Scalars(tag)) == n, acc.Tags()
