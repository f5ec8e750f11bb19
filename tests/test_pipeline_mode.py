"""Pipeline mode of the sampling loop (densenas/sampling.py, ``parallel.mode="pipeline"``): ``depth`` candidates
in flight, recorded in row order, so the rows depend on the seed and the depth only, whoever finishes first;
a result that came back before an older row's is kept in the history and survives a kill."""
from __future__ import annotations

from collections import deque

import pytest

from test_parallel import MeanToy, local_ray, ray, rows, search, toy  # noqa: F401  (local_ray: a fixture)

from densenas.history import History
from densenas.parallel import InProcessExecutor, ParallelCfg
from densenas.ray_executor import RayExecutor
from densenas.sampling import pipeline_snapshot

SEED, STRATEGY = 3, "surrogate"


class NewestFirst(InProcessExecutor):
    """One worker that trains the *newest* submitted job first: the finishing order of several workers where
    the older candidate is the slower one (the pipeline must hold the newer result until the older's turn)."""

    def __init__(self, evaluator, space, log: list | None = None):
        super().__init__(evaluator, space)
        self.queue = deque()
        self.log = log if log is not None else []

    def wait(self):
        job = self.queue.pop()
        self.queue.appendleft(job)  # reuse the parent's popleft on the newest
        self.log.append(job.seed)
        return super().wait()


class Killed(BaseException):
    pass


class DiesAt(MeanToy):
    """Raises :class:`Killed` (like a SIGKILL: not a candidate's failure) when it trains ``seed``."""

    def __init__(self, seed: int):
        super().__init__()
        self.die = seed

    def evaluate(self, arch, seed=0):
        if seed == self.die:
            raise Killed()
        return super().evaluate(arch, seed)


def pipeline(path, executor, n=12, depth=2):
    return search(path, executor, n, depth, strategy=STRATEGY, seed=SEED, mode="pipeline")


def test_pipeline_rows_do_not_depend_on_the_finishing_order_and_see_all_but_the_last_depth_minus_1(tmp_path):
    space = toy.ToySpace()
    order: list[int] = []
    ref = pipeline(tmp_path / "fifo.sqlite", InProcessExecutor(MeanToy(), space))
    out = pipeline(tmp_path / "lifo.sqlite", NewestFirst(MeanToy(), space, order))
    assert order[:2] == [SEED + 1, SEED]  # the newer candidate did finish first
    assert rows(tmp_path / "lifo.sqlite") == rows(tmp_path / "fifo.sqlite")
    assert out.best.arch == ref.best.arch and out.done == 12
    got = rows(tmp_path / "fifo.sqlite")
    stage1 = [toy.reward_of(h.arch) for h in History(tmp_path / "fifo.sqlite").finished()]
    seen = [r[-1] for r in got]
    assert seen[0] == seen[1] == -1.0  # nothing finished when the first two started
    for i in range(2, len(got)):  # row i saw rows 0 .. i-2 (row i-1 was in flight)
        assert seen[i] == pytest.approx(sum(stage1[:i - 1]) / (i - 1))
    with History(tmp_path / "lifo.sqlite") as h:
        assert h.held() == {}  # every kept result was dropped when its row was recorded
        for c in h.finished():  # the rule a resume rebuilds the snapshots with gives the same running mean
            snap = pipeline_snapshot(h, c.id, 2)
            want = c.result.metrics["mean_seen"]
            assert (sum(r.metrics["stage1_reward"] for r in snap) / len(snap) if snap else -1.0) == \
                pytest.approx(want)


class CountToy(MeanToy):
    """Also records how many finished results the candidate restored (its snapshot's length)."""

    def evaluate(self, arch, seed=0):
        seen = len(self.stage1_rewards)
        r = super().evaluate(arch, seed)
        r.metrics["n_seen"] = seen
        return r


def test_pipeline_differs_from_batch_only_in_what_each_row_saw(tmp_path):
    """Batch mode: row 2i+1 shares row 2i's snapshot; pipeline: each row sees one more row than the last."""
    space = toy.ToySpace()
    pipeline(tmp_path / "p.sqlite", InProcessExecutor(CountToy(), space), n=6)
    search(tmp_path / "b.sqlite", InProcessExecutor(CountToy(), space), 6, 2, strategy=STRATEGY, seed=SEED)
    with History(tmp_path / "p.sqlite") as p, History(tmp_path / "b.sqlite") as b:
        assert [c.result.metrics["n_seen"] for c in p.finished()] == [0, 0, 1, 2, 3, 4]
        assert [c.result.metrics["n_seen"] for c in b.finished()] == [0, 0, 2, 2, 4, 4]
        assert [c.seed for c in p.finished()] == list(range(SEED, SEED + 6))


def test_kill_with_a_newer_result_held_then_resume_records_it_without_training_it_again(tmp_path):
    space = toy.ToySpace()
    pipeline(tmp_path / "ref.sqlite", InProcessExecutor(MeanToy(), space))
    order: list[int] = []
    # newest first: row 5 (seed 8) finishes and is held, then training row 4 (seed 7) "kills" the driver
    with pytest.raises(Killed):
        pipeline(tmp_path / "h.sqlite", NewestFirst(DiesAt(SEED + 4), space, order))
    assert order[-2:] == [SEED + 5, SEED + 4]
    with History(tmp_path / "h.sqlite") as h:
        assert [c.seed for c in h.running()] == [SEED + 4, SEED + 5] and h.count() == 4
        assert list(h.held()) == [6]  # row ids count from 1: row 6 has seed 8
    order.clear()
    lines: list[str] = []
    out = search(tmp_path / "h.sqlite", NewestFirst(MeanToy(), space, order), 12, 2, strategy=STRATEGY, seed=SEED,
                 mode="pipeline", log=lines.append)
    assert lines[:2] == ["resuming: 4 finished, 2 interrupted candidate(s)", "  1 of them had finished before the "
                         "kill, waiting for an older one: recorded from the history, not trained again"]
    assert SEED + 5 not in order  # the held result was recorded, not trained again
    assert order[0] == SEED + 4
    assert rows(tmp_path / "h.sqlite") == rows(tmp_path / "ref.sqlite") and out.done == 12
    with History(tmp_path / "h.sqlite") as h:
        assert h.held() == {}


def test_in_process_pipeline_resume_after_a_kill_rebuilds_each_pending_rows_snapshot(tmp_path):
    space = toy.ToySpace()
    pipeline(tmp_path / "ref.sqlite", InProcessExecutor(MeanToy(), space), depth=3)
    with pytest.raises(Killed):
        pipeline(tmp_path / "h.sqlite", InProcessExecutor(DiesAt(SEED + 5), space), depth=3)
    with History(tmp_path / "h.sqlite") as h:
        assert [c.seed for c in h.running()] == [SEED + 5, SEED + 6, SEED + 7]
    pipeline(tmp_path / "h.sqlite", InProcessExecutor(MeanToy(), space), depth=3)
    assert rows(tmp_path / "h.sqlite") == rows(tmp_path / "ref.sqlite")


def test_two_ray_workers_in_pipeline_mode_give_the_rows_of_one_process(tmp_path, local_ray):
    space = toy.ToySpace()
    pipeline(tmp_path / "one.sqlite", InProcessExecutor(MeanToy(), space), n=8)
    ex = RayExecutor(MeanToy(), space, ParallelCfg(workers=2, cpus_per_worker=1, mode="pipeline"), log=print)
    try:
        out = pipeline(tmp_path / "ray.sqlite", ex, n=8)
    finally:
        ex.close()
    assert rows(tmp_path / "ray.sqlite") == rows(tmp_path / "one.sqlite") and out.done == 8
