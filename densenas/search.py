"""The sequential search loop: strategy proposes, evaluator scores, history records, repeat.

Resumable by construction (see :mod:`densenas.history`): on start the strategy state of the last
committed transaction is restored, a candidate left ``running`` by a killed process is evaluated again
with the same arch and seed, and an arch that was already evaluated is answered from the history without
training it again.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Protocol

from .arch import Arch
from .result import Result
from .history import Candidate, History
from .space import SearchSpace
from .strategies.base import Strategy


class Evaluator(Protocol):
    def evaluate(self, arch: Arch, seed: int = 0) -> Result: ...


@dataclass
class Progress:
    """What the loop reports after each candidate."""

    done: int
    total: int
    candidate: Candidate
    best: Candidate | None
    elapsed: float
    eta: float | None


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def progress_line(p: Progress, stage_label: str = "stage") -> str:
    """One human-readable line per finished candidate (``stage_label="epoch"`` for supernet searches,
    whose rows record the epoch as their stage)."""
    c, r = p.candidate, p.candidate.result
    what = (f"reward {r.reward:.4f} {stage_label} {r.stage}" if r.ok else f"FAILED ({r.error})")
    best = f"best {p.best.result.reward:.4f} (#{p.best.id})" if p.best else "best -"
    return (f"[{p.done}/{p.total}] #{c.id} {what} in {r.wall_time:.1f}s | {best} | "
            f"elapsed {_fmt_s(p.elapsed)} left ~{_fmt_s(p.eta)}")


def run_search(space: SearchSpace, strategy: Strategy, evaluator: Evaluator, history: History, *,
               num_candidates: int, time_budget_s: float | None = None, seed: int = 0,
               max_duplicates: int = 200,
               on_progress: Callable[[Progress], None] | None = None) -> History:
    """Run (or resume) a search until ``num_candidates`` candidates are finished or time runs out.

    Args:
        space: the search space (archs are checked against it before training).
        strategy: proposes archs; its state is restored from ``history`` when present.
        evaluator: trains and scores one arch; may expose ``restore(results)`` to rebuild its own
            running statistics (early-stopping mean) from the history.
        history: the SQLite history of this work dir.
        num_candidates: total finished candidates wanted (those from earlier runs count).
        time_budget_s: wall-clock limit of this call; the candidate in flight is finished first.
        seed: base seed; candidate ``i`` trains with seed ``seed + i``.
        max_duplicates: stop after this many consecutive re-proposals of known archs (a converged
            strategy on a small space).
        on_progress: called after every finished candidate.
    """
    state = history.strategy_state()
    if state is not None:
        strategy.load_state_dict(state)
    restore = getattr(evaluator, "restore", None)
    if restore is not None:
        restore([c.result for c in history.finished()])
    pending = history.running()
    t0 = time.perf_counter()
    done_here = 0
    duplicates = 0
    while history.count() < num_candidates:
        elapsed = time.perf_counter() - t0
        if time_budget_s is not None and elapsed >= time_budget_s:
            break
        if pending:
            cand = pending.pop(0)
            arch, cid, cseed = cand.arch, cand.id, cand.seed
        else:
            arch = strategy.propose()
            known = history.lookup(arch)
            if known is not None:
                strategy.observe(arch, known.result)
                history.save_state(strategy.state_dict())
                duplicates += 1
                if duplicates >= max_duplicates:
                    break
                continue
            cseed = seed + history.count(finished_only=False)
            cid = history.start(arch, cseed, strategy.state_dict())
        duplicates = 0
        started = time.perf_counter()
        try:
            space.check(arch)
            result = evaluator.evaluate(arch, seed=cseed)
        except Exception as e:  # an evaluator bug must not lose the search
            result = Result.failed(f"{type(e).__name__}: {e}")
        if not result.wall_time:
            result.wall_time = time.perf_counter() - started
        strategy.observe(arch, result)
        history.finish(cid, result, strategy.state_dict())
        done_here += 1
        if on_progress is not None:
            elapsed = time.perf_counter() - t0
            left = num_candidates - history.count()
            eta = elapsed / done_here * left
            if time_budget_s is not None:
                eta = min(eta, max(time_budget_s - elapsed, 0.0))
            cand = history.get(cid)
            on_progress(Progress(history.count(), num_candidates, cand, history.best(), elapsed, eta))
    return history
