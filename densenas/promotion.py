"""Promotion of the best candidates to longer budgets, repeated seeds, and ties within the noise.

Successive halving (Jamieson & Talwalkar, AISTATS 2016; Li et al., "Hyperband", JMLR 2018; the rungs of
ASHA, Li et al., MLSys 2020, and of BOHB, Falkner et al., ICML 2018) on top of a sampling search:

* **rung 0** is the search itself. Every candidate trains stage 1 (the candidate alone, on cached encoder
  features); those whose stage-1 reward beats the running mean of earlier candidates' also train stage 2
  end to end: Nekrasov et al.'s early stop (CVPR 2019), an asynchronous halving whose threshold is the
  running mean (the leaderboard's ``stage`` column).
* **rung r >= 1** trains the best ``keep(r)`` candidates of rung r-1 again, from scratch, with ``scale ** r``
  times the iterations of both stages, no early stop, ``seeds`` times each with different seeds. Rung r's
  score of a candidate is the mean reward of its runs there; the final pick is made on the top rung.

The two-stage early stop stays inside the evaluator as rung 0's cut (it decides within one candidate's
run, after its stage 1); the promoted rungs are runs of their own.

Why written here rather than with Optuna's ``SuccessiveHalvingPruner`` / ``HyperbandPruner`` or Ray Tune's
ASHA scheduler: those stop a trial *while it trains*, from the intermediate values of one run that then goes
on. A proxy candidate's schedule depends on its length (cosine learning rate, the Polyak decay capped by
the number of iterations), so a longer budget is a new run from the start, not the continuation of the
short one. And a synchronous rung over the finished pool is reproducible given the seed whatever the
number of workers, where ASHA's promotions depend on the order in which workers happen to finish.

**Ties** (:func:`standings`): the seeds of the top rung give the noise of a candidate's score (the pooled
within-candidate standard deviation ``s``); a candidate of the top rung whose mean is within
``tie_z * s * sqrt(1/n_best + 1/n)`` of the best is *tied* with it (a two-sample band, 95 % for the
default ``tie_z=1.96``), and the pick is the cheapest of the tied (the search's cost objective, else
MAdds). Without repeated seeds there is no noise estimate and nothing is marked tied.

Resumable like the rest: every promoted run is a row of the history's ``rungs`` table written when it
finishes; a resumed search recomputes the (deterministic) selections and trains only the runs missing.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .history import Candidate, History, RungRun
from .parallel import Job

__all__ = ["PromotionCfg", "Standing", "standings", "noise_of", "pick", "promote", "rung_seed", "mean_sd",
           "carried_candidates", "rung_pool", "COST_KEYS"]

COST_KEYS = ("madds", "params")  # what "cheapest" falls back to, in order, without a cost objective
SEED_STRIDE = 100_003  # repeat j of a candidate trains with seed + j * SEED_STRIDE (rung 1 repeat 0: its own)


@dataclass
class PromotionCfg:
    """``search.promote = dict(...)`` of a sampling search with the proxy evaluator.

    Attributes:
        rungs: promoted rungs above the search (0: no promotion).
        top: candidates promoted into rung 1 (``None``: ``ceil(n / eta)`` of the ``n`` finished ones).
        eta: reduction factor: rung ``r`` keeps ``ceil(keep(r-1) / eta)`` (rung 1 as ``top`` says).
        min_keep: never fewer than this many per rung (when there are that many).
        scale: each rung trains ``scale`` times the iterations of the rung below (rung r: ``scale ** r``).
        seeds: trainings per promoted candidate and rung, each with another seed (>= 2 gives the noise
            estimate that ties need).
        tie_z: the width of the tie band in standard errors of a difference of two means (1.96: 95 %).
        cost: the cost the pick among tied candidates minimises (a key of a result's ``cost``; ``None``: the
            search objective's cost, else MAdds, else params).
        baselines: the hand-designed baselines the search was seeded with (``search.baselines``) are trained
            at every rung whatever their rank, besides the best ``keep(r)``, so the pick on the top rung is
            compared with them at the same budget and seeds and a search can only pick an arch that is at
            least tied with them there (a cheap reward that mis-ranks the baseline cannot drop it).
        carry: the arch keys (:attr:`densenas.arch.Arch.key`) carried that way; filled in by the builder
            from ``search.baselines`` when ``baselines`` is true.
        final_iters: ``N > 0`` adds a final rung above the proxy rungs (:mod:`densenas.promotion_final`): the
            best ``final_top`` of the top proxy rung (and the carried baselines) exported by
            ``tools/export.py``, fine-tuned by ``tools/train.py`` for N iterations, ``seeds`` times, and
            scored by ``tools/test.py`` on the task's headline metric; the pick is made there. 0: off.
        final_top: candidates of the top proxy rung fine-tuned at the final rung.
        final_args: more ``tools/export.py`` options for the final rung (``["--crop", "128"]``).
        final_jobs: final-rung fine-tunes run side by side (each a process of its own, with
            ``OMP_NUM_THREADS`` = cores // ``final_jobs`` unless the environment sets it; on a GPU they share it).
        final_metric: the task's ``Task.test_metric``; filled in by the builder.
    """

    rungs: int = 1
    top: int | None = 4
    eta: float = 3.0
    min_keep: int = 2
    scale: float = 3.0
    seeds: int = 2
    tie_z: float = 1.96
    cost: str | None = None
    baselines: bool = True
    carry: tuple[str, ...] = ()
    final_iters: int = 0
    final_top: int = 2
    final_args: tuple[str, ...] = ()
    final_jobs: int = 1
    final_metric: tuple[str, bool] | None = None

    def __post_init__(self) -> None:
        def positive_int(name: str, low: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"search.promote.{name} must be an integer >= {low}, got {v!r}")

        positive_int("rungs", 0)
        positive_int("min_keep", 1)
        positive_int("final_iters", 0)
        positive_int("final_top", 1)
        positive_int("final_jobs", 1)
        if isinstance(self.final_args, str) or not all(
                isinstance(a, (str, int, float)) and not isinstance(a, bool) for a in self.final_args):
            raise ValueError(f"search.promote.final_args must be a list of tools/export.py options such as "
                             f"['--crop', '128'], got {self.final_args!r}")
        # --cfg-options reads "['--crop','128']" as ['--crop', 128]: the values are command-line words
        self.final_args = tuple(str(a) for a in self.final_args)
        positive_int("seeds", 1)
        if self.top is not None:
            positive_int("top", 1)
        for name, low in (("eta", 1.0), ("scale", 1.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > low:
                raise ValueError(f"search.promote.{name} must be a number > {low:g}, got {v!r}")
        if isinstance(self.tie_z, bool) or not isinstance(self.tie_z, (int, float)) or self.tie_z < 0:
            raise ValueError(f"search.promote.tie_z must be a number >= 0, got {self.tie_z!r}")
        if not isinstance(self.baselines, bool):
            raise ValueError(f"search.promote.baselines must be True or False, got {self.baselines!r}")
        if isinstance(self.carry, str) or not all(isinstance(k, str) for k in self.carry):
            raise ValueError(f"search.promote.carry must be a tuple of arch keys, got {self.carry!r}")
        self.carry = tuple(self.carry)
        if self.cost is not None and (not isinstance(self.cost, str) or not self.cost):
            raise ValueError(f"search.promote.cost must be a cost name such as 'madds' or None, got {self.cost!r}")

    def keep(self, rung: int, finished: int) -> int:
        """How many candidates rung ``rung`` (>= 1) trains, of ``finished`` ok candidates of the search."""
        k = self.top if self.top is not None else math.ceil(finished / self.eta)
        for _ in range(rung - 1):
            k = math.ceil(k / self.eta)
        return min(finished, max(k, self.min_keep))


def rung_seed(candidate: Candidate, repeat: int) -> int:
    """The training seed of ``candidate``'s ``repeat``-th run at any promoted rung (repeat 0: its own seed,
    so rung r's first run is the same start as the search's, trained longer)."""
    return int(candidate.seed) + repeat * SEED_STRIDE


@dataclass
class Standing:
    """Where a finished ok candidate stands after the search and its promotions.

    Attributes:
        candidate: the history row (its ``result`` is the search's, rung 0).
        rung: the highest rung with an ok run (0: the search only).
        score: rung 0: the search's reward; else the mean reward of its ok runs at ``rung``.
        sd: standard deviation of those runs (``None`` with fewer than two).
        runs: ok runs at ``rung`` (1 at rung 0).
        failed_runs: failed runs at ``rung`` and above (a candidate that failed higher up ranks after the
            others of its rung).
        metrics: the mean of each metric over the runs at ``rung``.
        tied: within the noise of the best (see the module docstring); the best itself is tied.
    """

    candidate: Candidate
    rung: int
    score: float
    sd: float | None
    runs: int
    failed_runs: int
    metrics: dict[str, float] = field(default_factory=dict)
    tied: bool = False

    @property
    def id(self) -> int:
        return self.candidate.id

    def cost(self, key: str) -> float | None:
        v = (self.candidate.result.cost if self.candidate.result else {}).get(key)
        return None if v is None else float(v)


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (``None`` with fewer than two values) of ``values``."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def standings(history: History, tie_z: float = 1.96, runs: list[RungRun] | None = None) -> list[Standing]:
    """Every finished ok candidate, best first: highest rung reached, then (failures above last) the rung's
    score, then the row id; the candidates tied with the best are marked (module docstring)."""
    by_cand: dict[int, list[RungRun]] = {}
    for r in history.rung_runs() if runs is None else runs:
        by_cand.setdefault(r.candidate, []).append(r)
    out = []
    for c in history.candidates("ok"):
        if c.result is None or not c.result.ok:
            continue
        mine = by_cand.get(c.id, [])
        ok_rungs = sorted({r.rung for r in mine if r.result.ok})
        rung = ok_rungs[-1] if ok_rungs else 0
        failed = sum(1 for r in mine if not r.result.ok and r.rung >= rung)
        if rung == 0:
            out.append(Standing(c, 0, float(c.result.reward), None, 1, failed, dict(c.result.metrics)))
            continue
        at = [r.result for r in mine if r.rung == rung and r.result.ok]
        rewards = [float(r.reward) for r in at]
        keys = set.intersection(*(set(r.metrics) for r in at))
        metrics = {k: mean_sd([r.metrics[k] for r in at])[0] for k in sorted(keys)}
        out.append(Standing(c, rung, *mean_sd(rewards), len(rewards), failed, metrics))
    out.sort(key=lambda s: (-s.rung, s.failed_runs > 0, -s.score, s.id))
    _mark_ties(out, tie_z)
    return out


def _mark_ties(ranked: list[Standing], tie_z: float) -> None:
    if not ranked:
        return
    best = ranked[0]
    best.tied = True
    pooled = noise_of(ranked)
    if pooled is None:  # no repeated seeds: no noise estimate, nothing else is tied
        return
    for s in ranked[1:]:
        if s.rung == best.rung and s.failed_runs == 0:
            s.tied = best.score - s.score <= tie_z * pooled * math.sqrt(1.0 / best.runs + 1.0 / s.runs)


def noise_of(ranked: list[Standing]) -> float | None:
    """The pooled seed standard deviation at the best's rung (what the tie band is made of): each
    candidate's own s.d. weighted by its degrees of freedom; ``None`` without repeated seeds there."""
    if not ranked or ranked[0].rung == 0:
        return None
    same = [s for s in ranked if s.rung == ranked[0].rung and s.sd is not None]
    dof = sum(s.runs - 1 for s in same)
    return math.sqrt(sum((s.runs - 1) * s.sd ** 2 for s in same) / dof) if dof else None


def pick(ranked: list[Standing], cost_key: str | None = None) -> Standing | None:
    """The final pick of :func:`standings`' ranking: the cheapest of the candidates tied with the best (by
    ``cost_key`` when they all have it, else the first of :data:`COST_KEYS` they all have), the higher
    score among equal costs; the best itself when nothing else is tied."""
    tied = [s for s in ranked if s.tied]
    if not tied:
        return ranked[0] if ranked else None
    for key in ([cost_key] if cost_key else []) + list(COST_KEYS):
        if all(s.cost(key) is not None for s in tied):
            return min(tied, key=lambda s: (s.cost(key), -s.score, s.id))
    return tied[0]


def rung_pool(ranked: list[Standing], runs: list[RungRun], rung: int) -> list[Standing]:
    """The candidates that finished ``rung``, best first: rung 0 by the search's reward, a promoted rung by the
    mean reward of their ok runs there (ties by row id). What the rung above chooses from."""
    if rung == 0:
        return sorted(ranked, key=lambda s: (-float(s.candidate.result.reward), s.id))
    at: dict[int, list[float]] = {}
    for r in runs:
        if r.rung == rung and r.result.ok:
            at.setdefault(r.candidate, []).append(float(r.result.reward))
    return sorted((s for s in ranked if s.id in at), key=lambda s: (-mean_sd(at[s.id])[0], s.id))


def carried_candidates(pool: list[Standing], keys: tuple[str, ...], chosen: set[int]) -> list[Candidate]:
    """The candidates of ``pool`` (this rung's eligible ones, in rank order) whose arch is one of ``keys`` and
    that are not ``chosen`` already: the seeded baselines, trained at every rung whatever their rank."""
    if not keys:
        return []
    want = set(keys)
    return [s.candidate for s in pool if s.id not in chosen and s.candidate.arch.key in want]


def stopped_why(reason: str | None) -> str:
    """The words of a promotion log line for the reason a hook stopped the run."""
    return "the time budget ran out" if reason in (None, "time_budget") else f"the run was stopped ({reason})"


def promote(history: History, executor: Any, cfg: PromotionCfg, log: Callable[[str], None], *,
            stop: Callable[[], str | None] = lambda: None) -> int:
    """Train the promoted rungs of a finished sampling search (those not yet in ``history``).

    Args:
        history: the search's history (promoted runs are added to its ``rungs`` table as they finish).
        executor: where they train (:mod:`densenas.parallel`; jobs carry ``scale``).
        cfg: the promotion settings.
        log: one line per rung and per finished run.
        stop: asked before each new run: a reason (the loop's hooks: ``"time_budget"`` once the search's time
            budget is spent, or another hook's) means no new run starts (those in flight
            finish and are recorded; a resumed search trains the rest).

    Returns:
        The number of runs trained by this call.
    """
    trained = 0
    for rung in range(1, cfg.rungs + 1):
        runs = history.rung_runs()
        ranked = standings(history, cfg.tie_z, runs)
        pool = rung_pool(ranked, runs, rung - 1)
        chosen = [s.candidate for s in pool[:cfg.keep(rung, len(ranked))]]  # of the search's ok candidates
        carried = carried_candidates(pool, cfg.carry, {c.id for c in chosen})
        chosen += carried
        if not chosen:
            log(f"promotion: rung {rung} has no candidate to train (none finished the rung below)")
            return trained
        have = {(r.candidate, r.repeat) for r in runs if r.rung == rung}
        scale = float(cfg.scale) ** rung
        jobs = [Job(c.id, c.arch, rung_seed(c, j), None, scale) for c in chosen for j in range(cfg.seeds)
                if (c.id, j) not in have]
        repeat = {(c.id, rung_seed(c, j)): j for c in chosen for j in range(cfg.seeds)}
        best = [c for c in chosen if c not in carried]
        log(f"promotion: rung {rung}: the best {len(best)} ({', '.join(f'#{c.id}' for c in best)})"
            + (f" and the baseline(s) {', '.join(f'#{c.id}' for c in carried)}" if carried else "") + " x "
            f"{cfg.seeds} seed(s) at {scale:g}x the iterations: {len(jobs)} run(s) to train"
            + (f", {len(chosen) * cfg.seeds - len(jobs)} recorded already" if len(jobs) < len(chosen) * cfg.seeds
               else ""))
        t0, queue, in_flight, stopped = time.perf_counter(), list(jobs), 0, None
        slots = max(1, int(getattr(executor, "workers", 1)))
        while queue or in_flight:
            # at most one run per worker in flight, so the hooks are asked before each new run
            while queue and in_flight < slots and stopped is None:
                stopped = stop()
                if stopped is not None:
                    break
                executor.submit(queue.pop(0))
                in_flight += 1
            if not in_flight:
                break
            done = executor.wait()
            in_flight -= 1
            job, result = done.job, done.result
            history.add_rung(job.cid, rung, repeat[(job.cid, job.seed)], job.seed, result)
            trained += 1
            what = f"reward {result.reward:.4f}" if result.ok else f"failed: {result.error}"
            log(f"  rung {rung} #{job.cid} seed {job.seed}: {what} ({result.wall_time:.1f}s"
                + (f" on {done.worker}" if done.worker != "in-process" else "") + ")")
        if queue:
            log(f"promotion: {stopped_why(stopped)} at rung {rung} ({len(queue)} run(s) not started; "
                f"--resume trains them)")
            return trained
        ranked = standings(history, cfg.tie_z)
        top = [s for s in ranked if s.rung == rung]
        if top:
            noise = noise_of(ranked)
            log(f"promotion: rung {rung} done in {time.perf_counter() - t0:.0f}s; best #{top[0].id} "
                f"{top[0].score:.4f}" + (f" (seed s.d. {noise:.4f}; {sum(s.tied for s in top)} tied)"
                                         if noise is not None else ""))
    return trained
