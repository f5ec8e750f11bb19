"""The sampling half of the one search loop (:func:`densenas.loop.run`): propose, train, observe, record.

Sampling strategies (random search; REINFORCE after Zoph & Le, ICLR 2017; regularized evolution after Real et
al., AAAI 2019; the GP surrogate; Optuna samplers) are driven by ask/tell: the driver proposes archs, starts
their history rows, hands them to an executor (:mod:`densenas.parallel`: here, or N Ray actors) and observes
and records each result. Three ways to keep several candidates in flight:

- ``mode="pipeline"`` (the config default): ``depth`` (= ``batch``, default the worker count) in flight; the
  oldest is recorded first (a candidate that finishes early waits, in memory, for those before it), then one
  more is proposed, so candidate ``i`` is proposed having seen every row up to ``i - depth`` and with the
  ``depth - 1`` before it pending. The rows depend on the seed and ``depth`` only (reproducible, like batch
  mode), a worker waits only when it finishes before an older candidate, and the proposal (the surrogate's
  GP fit, a fraction of a second) runs while the other workers train;
- ``mode="batch"``: ``batch`` archs at a time, recorded in row order with one shared snapshot of finished
  results each (reproducible given the seed); every worker waits for the slowest of its batch and for the
  next batch's proposals;
- ``mode="async"``: ``executor.workers`` in flight, one proposed as each finishes, in finishing order (not
  reproducible run to run).

Duplicated proposals are answered from the history (or wait for
their twin in flight); proposals over a hard cost limit (``objective.limit`` on parameters or MAdds) are
recorded as rejected on the driver and do not count towards the candidates, so a search under a limit still
trains as many as it was asked to; rows a kill left ``running`` are trained again with their arch and seed.
Before each new candidate (or batch) the hooks are asked whether to stop
(:meth:`densenas.hooks.Hook.stop_reason`: a time budget, a stop file, a user's rule); the candidates in flight
then finish and are recorded.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .arch import Arch
from .history import RUNNING, Candidate, History
from .parallel import Done, InProcessExecutor, Job
from .hooks import HookList
from .progress import Progress
from .result import Result
from .space import SearchSpace
from .strategies.base import Strategy

#: proposals over a hard cost limit in a row, per candidate of the budget, before a search stops
#: (``Outcome.stopped == "over_limit"``); each costs a model build on the driver, milliseconds.
MAX_REJECTIONS = 20

__all__ = ["Outcome", "run_sampling", "eta"]


@dataclass
class Outcome:
    """How a :func:`run` call ended.

    Attributes:
        done: finished candidates (sampling; those rejected by a hard cost limit not counted) or steps
            (one-shot), earlier calls included.
        total: the budget asked for.
        stopped: ``"complete"``, ``"duplicates"`` (a converged sampling strategy), ``"over_limit"`` (only
            proposals over a hard cost limit, :data:`MAX_REJECTIONS` per candidate in a row) or the reason a hook
            stopped the run with (:meth:`~densenas.hooks.Hook.stop_reason`: ``"time_budget"``, ``"stop_file"``, ...).
        arch: sampling: the best candidate's arch; one-shot: the arch derived after the last step.
        best: sampling: the best candidate; one-shot: the run's candidate row.
        standing: sampling with promotion: the pick's :class:`~densenas.promotion.Standing` (its rung, mean
            score over seeds, whether others are tied with it).
    """

    done: int
    total: int
    stopped: str
    arch: Arch | None
    best: Candidate | None
    standing: Any = None


def eta(elapsed: float, done_here: int, left: int, seconds_left: float | None) -> float:
    """Seconds until ``left`` more are done at this call's pace, capped by ``seconds_left`` (a hook's deadline:
    :meth:`densenas.hooks.HookList.seconds_left`)."""
    eta = elapsed / max(done_here, 1) * left
    return min(eta, max(seconds_left, 0.0)) if seconds_left is not None else eta


def run_sampling(space: SearchSpace, strategy: Strategy, evaluator: Any, history: History,
                  rep: HookList, *, num_candidates: int, seed: int, max_duplicates: int, executor: Any = None,
                  mode: str = "batch", batch: int = 1) -> Outcome:
    """The sampling loop over an executor (:mod:`densenas.parallel`); the driver alone proposes, observes and
    writes the history. ``mode="batch"``: propose ``batch`` archs, train them (in parallel), observe them in
    row order; ``mode="async"``: keep ``executor.workers`` candidates in flight, proposing one as each ends.
    ``mode="pipeline"``: keep ``batch`` in flight, record the oldest first, then propose one more (see the
    module doc). ``rep.stop_reason()`` is asked before anything new starts; its reason ends the run
    (``Outcome.stopped``)."""
    state = history.strategy_state()
    if state is not None:
        strategy.load_state_dict(state)
    restore = getattr(evaluator, "restore", None)
    if restore is not None:
        restore([c.result for c in history.finished()])
    pending = history.running()
    if history.count(finished_only=False):
        rep.note(f"resuming: {history.count(counted_only=True)} finished, {len(pending)} interrupted candidate(s)")
    rep.start(history.count(counted_only=True))
    if executor is None:
        executor = InProcessExecutor(evaluator, space)
    slots = executor.workers if mode == "async" else batch
    # One worker in this process, one candidate at a time: the evaluator keeps its own running mean (the path
    # of old, bit for bit). Otherwise each job carries the driver's finished results (row order) to restore.
    snapshots = not (isinstance(executor, InProcessExecutor) and slots == 1)
    remote = not isinstance(executor, InProcessExecutor)
    loop = _Loop(strategy, history, rep, executor, num_candidates, seed, max_duplicates, remote,
                 screen=getattr(evaluator, "screen", None))
    if pending and not loop.should_stop():  # rows a kill left running: same archs and seeds, results before
        if mode == "pipeline":  # results that came back before an older row's are recorded, not trained again
            kept = {cid: r for cid, r in history.held().items() if cid in {c.id for c in pending}}
            if kept:
                rep.note(f"  {len(kept)} of them had finished before the kill, waiting for an older one: "
                         f"recorded from the history, not trained again")
            for c in pending:
                job = Job(c.id, c.arch, c.seed, pipeline_snapshot(history, c.id, batch) if snapshots else None)
                if c.id in kept:
                    loop.in_flight[c.id] = job
                    loop.held[c.id] = Done(job, kept[c.id], worker="a worker of the interrupted run (result kept)")
                else:
                    loop.submit(job)
        else:
            first = pending[0].id
            snap = [c.result for c in history.finished() if c.id < first or mode == "async"] if snapshots else None
            loop.run_jobs([Job(c.id, c.arch, c.seed, snap) for c in pending], ordered=mode == "batch")
    while loop.counted() < num_candidates or loop.in_flight:
        if mode in ("async", "pipeline"):
            if not (loop.async_step(snapshots) if mode == "async" else loop.pipeline_step(batch, snapshots)):
                break
            continue
        if loop.should_stop():
            break
        n = min(batch, num_candidates - loop.counted(finished_only=False))
        archs = loop.new_archs(strategy.propose_batch(n))
        snap = [c.result for c in history.finished()] if snapshots else None
        loop.run_jobs(loop.start_rows(archs, snap), ordered=True)
    best = history.best()
    return Outcome(loop.counted(), num_candidates, loop.stopped or "complete", best.arch if best else None, best)


def pipeline_snapshot(history: History, cid: int, depth: int) -> list[Result]:
    """The finished results row ``cid`` of a pipeline-mode search started with (row order): every row before it
    except the ``depth - 1`` trained rows just before it, which were in flight then (rows rejected by a hard cost
    limit were never in flight). Rebuilt from the history for the rows a kill left running, so a resumed search
    trains them exactly as the uninterrupted one did."""
    before = [c for c in history.candidates() if c.id < cid]
    trained = [c.id for c in before if not (c.result is not None and c.result.over_limit)]
    in_flight = set(trained[len(trained) - (depth - 1):]) if depth > 1 else set()
    return [c.result for c in before if c.status != RUNNING and c.id not in in_flight]


class _Loop:
    """The bookkeeping of one sampling run: rows started, results observed and recorded, duplicates answered
    from the history, proposals over a hard cost limit rejected before they take a worker (``screen``: the
    evaluator's :meth:`~densenas.evaluation.objective.CostAware.screen`), progress reported (one instance per
    :func:`run` call)."""

    def __init__(self, strategy: Strategy, history: History, rep: HookList, executor: Any, total: int,
                 seed: int, max_duplicates: int, remote: bool, screen: Any = None):
        self.strategy, self.history, self.rep, self.executor = strategy, history, rep, executor
        self.total, self.seed, self.max_duplicates = total, seed, max_duplicates
        self.remote, self.screen = remote, screen
        self.t0 = time.perf_counter()
        self.done_here = self.duplicates = self.rejections = 0
        self.stopped: str | None = None
        self.in_flight: dict[int, Job] = {}
        self.followers: dict[str, list[Arch]] = {}  # arch key in flight -> re-proposals waiting for its result
        self.held: dict[int, Done] = {}  # pipeline mode: finished before an older candidate, not yet recorded

    def should_stop(self) -> bool:
        """Whether nothing new may start: stopped already (duplicates, a hook), or a hook says so now."""
        if self.stopped is None:
            self.stopped = self.rep.stop_reason()
        return self.stopped is not None

    def new_archs(self, archs: list[Arch]) -> list[Arch]:
        """The proposals to train: the others (known to the history, or already proposed and not finished)
        are answered from the history or wait for the result of their twin; stops after too many."""
        new: list[Arch] = []
        for arch in archs:
            if self.stopped:
                break
            known = self.history.lookup(arch)
            twin = arch.key in {a.key for a in new} or any(j.arch.key == arch.key for j in self.in_flight.values())
            if known is None and not twin:
                self.duplicates = 0
                rejected = self.screen(arch) if self.screen is not None else None
                if rejected is None:
                    self.rejections = 0
                    new.append(arch)
                else:
                    self.reject(arch, rejected)
                continue
            if known is not None:  # never train an arch twice: answer from the history
                self.strategy.observe(arch, known.result)
                self.history.save_state(self.strategy.state_dict())
            else:
                self.followers.setdefault(arch.key, []).append(arch)
            self.duplicates += 1
            if self.duplicates >= self.max_duplicates:
                self.stopped = "duplicates"
        return new

    def counted(self, finished_only: bool = True) -> int:
        """Candidates that count towards the budget (those rejected by a hard cost limit do not)."""
        return self.history.count(finished_only=finished_only, counted_only=True)

    def next_seed(self) -> int:
        """The seed of the next row: the run's seed plus the rows so far (rejected ones included)."""
        return self.seed + self.history.count(finished_only=False)

    def reject(self, arch: Arch, result: Result) -> None:
        """Record a proposal over a hard cost limit (row, strategy, a note) without training it; stop after
        :data:`MAX_REJECTIONS` per candidate of the budget in a row (a space or limit with almost nothing
        inside)."""
        cid = self.history.start(arch, self.next_seed())
        self.strategy.observe(arch, result)
        self.history.finish(cid, result, self.strategy.state_dict())
        self.rejections += 1
        self.rep.note(f"#{cid} {result.error}, not counted")
        if self.rejections >= MAX_REJECTIONS * self.total:
            self.rep.note(f"stopping: {self.rejections} proposals in a row were over the hard limit; "
                          f"raise objective.limit or search a space with more inside it")
            self.stopped = "over_limit"

    def start_rows(self, archs: list[Arch], snapshot: list[Result] | None) -> list[Job]:
        """One running row per arch; the strategy state (after proposing them all) goes with the last one."""
        jobs = []
        for i, arch in enumerate(archs):
            cseed = self.next_seed()
            state = self.strategy.state_dict() if i == len(archs) - 1 else None
            jobs.append(Job(self.history.start(arch, cseed, state), arch, cseed, snapshot))
        return jobs

    def submit(self, job: Job) -> None:
        self.in_flight[job.cid] = job
        self.executor.submit(job)

    def run_jobs(self, jobs: list[Job], ordered: bool) -> None:
        """Train ``jobs``; ``ordered``: wait for all, then record them in row order (batch mode)."""
        for job in jobs:
            self.submit(job)
        if not ordered:
            return
        done = {}
        while len(done) < len(jobs):
            d = self.executor.wait()
            done[d.job.cid] = d
        for job in jobs:
            self.record(done[job.cid])

    def start_next(self, snapshots: bool) -> None:
        """Propose one arch and start it (unless it is answered from the history, waits for its twin in flight
        or is over a hard limit) with the finished results as its snapshot."""
        archs = self.new_archs([self.strategy.propose()])
        if not archs:
            return
        snap = [c.result for c in self.history.finished()] if snapshots else None
        for job in self.start_rows(archs, snap):
            self.submit(job)

    def async_step(self, snapshots: bool) -> bool:
        """Top up to ``executor.workers`` candidates in flight, then record the next one to finish; ``False``
        when nothing is in flight and nothing more may start (budget, duplicates or a hook's stop)."""
        while (not self.stopped and self.executor.in_flight() < self.executor.workers
               and self.counted(finished_only=False) < self.total and not self.should_stop()):
            self.start_next(snapshots)
        if not self.executor.in_flight():
            return False
        self.record(self.executor.wait())
        return True

    def pipeline_step(self, depth: int, snapshots: bool) -> bool:
        """Top up to ``depth`` candidates in flight, then record the oldest (results that come back before it
        are held in memory until its turn); ``False`` when nothing is in flight and nothing more may start."""
        while (not self.stopped and len(self.in_flight) < depth
               and self.counted(finished_only=False) < self.total and not self.should_stop()):
            self.start_next(snapshots)
        if not self.in_flight:
            return False
        oldest = min(self.in_flight)
        while oldest not in self.held:
            d = self.executor.wait()
            self.held[d.job.cid] = d
            if d.job.cid != oldest:  # its turn comes after the older ones; a kill meanwhile must not lose it
                self.history.hold(d.job.cid, d.result)
        self.record(self.held.pop(oldest))
        return True

    def record(self, d: Done) -> None:
        """Observe a finished job (and the re-proposals of its arch), store it, report it."""
        job, result = d.job, d.result
        self.in_flight.pop(job.cid, None)
        self.strategy.observe(job.arch, result)
        for twin in self.followers.pop(job.arch.key, []):
            self.strategy.observe(twin, result)
        self.history.finish(job.cid, result, self.strategy.state_dict())
        self.done_here += 1
        elapsed = time.perf_counter() - self.t0
        h = self.history
        done = self.counted()
        self.rep.after_candidate(Progress(done, self.total, h.get(job.cid), h.best(), elapsed,
                                 eta(elapsed, self.done_here, self.total - done, self.rep.seconds_left())))
        if self.remote or d.notes:
            self.rep.note(f"  #{job.cid} ran on {d.worker}" + "".join(f"; {n}" for n in d.notes))
