"""The one search loop, for every strategy: sampling ones and one-shot (supernet) ones.

Sampling strategies (random search; REINFORCE after Zoph & Le, ICLR 2017, as in Nekrasov et al., CVPR
2019; regularized evolution after Real et al., AAAI 2019): the strategy proposes an arch, the evaluator
trains and scores it (``evaluator.evaluate(arch, seed)``), the strategy observes the result, the
:class:`~densenas.history.History` records one candidate row. One-shot strategies (DARTS, Liu, Simonyan,
Yang, ICLR 2019, for the differentiable Auto-DeepLab and IR-NAS spaces): the strategy trains one supernet
through its evaluator one epoch at a time (``strategy.step()``); the run is *one* candidate row and each
epoch is a *step* of it (arch derived after the epoch, reward, metrics, wall time, like Optuna's
``trial.report(value, step)``); the row is finished with the last derived arch and reward at the end.
Both share the history, resume and the *hooks* (:mod:`densenas.hooks`): every output and every stop is a
hook — ``search.log`` lines, a live bar on a terminal, TensorBoard under ``<work_dir>/tb/``, the time budget,
the reports (:func:`densenas.viz.write_reports`) and any hook of the user's. The budget of the loop itself
is a :class:`Budget` (how many candidates or epochs, the seed, duplicates, batch or async).

How ``tools/search.py`` calls it (sampling, through :meth:`densenas.build.Search.run`)::

    from densenas.history import History
    from densenas.hooks import default_hooks
    from densenas.loop import Budget, run
    from densenas.strategies import build_strategy

    history = History(work_dir / "history.sqlite")
    strategy = build_strategy({"type": "reinforce", "seed": seed, **strategy_cfg}, space)
    hooks = default_hooks(log, work_dir=work_dir, time_budget_s=None,
                          reports=dict(metrics=..., reward_label=...)) + user_hooks
    outcome = run(space, strategy, evaluator, history, Budget(candidates=30, seed=seed),
                  work_dir=work_dir, hooks=hooks)          # evaluator.evaluate(arch, seed)
    history.close()

and for a one-shot (DARTS) search::

    from densenas.evaluation.supernet import build_supernet_trainer

    strategy = build_strategy({"type": "darts", "seed": seed, **strategy_cfg}, space)  # a Darts
    trainer = build_supernet_trainer(space, train, val, loss_fn, score_fn, epochs=epochs,
                                     cfg=strategy.cfg, seed=seed, device=device)
    try:
        outcome = run(space, strategy, trainer, history, Budget(epochs=epochs, seed=seed), work_dir=work_dir,
                      hooks=default_hooks(log, work_dir=work_dir, time_budget_s=seconds, reports=dict(...)))
    except FloatingPointError:   # diverged: the run's row is failed, supernet.pth holds the last
        ...                      # good epoch; --resume (e.g. with lower learning rates) goes on
    # reports: best_arch.json = best epoch; leaderboard/plot of epochs (written also when it raised)
    # outcome.arch: arch derived after the last epoch (also <work_dir>/derived_arch.json)

Where the sampling candidates train is an *executor* (:mod:`densenas.parallel`): by default one at a time in
this process (``InProcessExecutor``); with ``tools/search.py --workers N`` on N Ray actors (``RayExecutor``,
:mod:`densenas.ray_executor`). The loop is the same for both: the driver alone proposes, starts rows, observes
and finishes them. ``mode="batch"`` proposes ``batch`` archs (``strategy.propose_batch``), starts their rows
(the strategy state after proposing them is saved with the last), trains them and observes them in row order,
every job of a batch carrying the same snapshot of finished results for ``evaluator.restore`` (so the rows
depend on the seed and ``batch`` only); ``mode="pipeline"`` (what ``ParallelCfg`` defaults to) keeps ``batch``
in flight and records them in row order, proposing the next as each is recorded (the rows again depend on
the seed and ``batch`` only; :mod:`densenas.sampling`); ``mode="async"`` keeps ``executor.workers`` in flight,
in finishing order::

    from densenas.parallel import ParallelCfg, make_executor

    executor = make_executor(ParallelCfg(workers=2), evaluator, space, log=log)
    try:
        outcome = run(space, strategy, evaluator, history, Budget(candidates=30, seed=seed, mode="batch",
                      batch=2), executor=executor, hooks=default_hooks(log))
    finally:
        executor.close()

Stopping early: any hook's :meth:`~densenas.hooks.Hook.stop_reason` is polled before each new candidate (or
batch, or epoch, or promoted run) is started; the first reason given stops the run gracefully — what is in
flight finishes and is recorded — and becomes ``outcome.stopped`` (:class:`~densenas.hooks.TimeBudget`:
``"time_budget"``; :class:`~densenas.hooks.StopFile`: ``"stop_file"``).

With ``promotion=PromotionCfg(...)`` (``search.promote`` of a config), a sampling run whose candidates are
done (not stopped by a hook) goes on with successive halving (:mod:`densenas.promotion`): the best are
trained again at longer budgets with several seeds on the same executor, each run a row of the history's
``rungs`` table (the hooks are asked before each run starts), and the outcome's pick is the cheapest
candidate tied with the best of the top rung.

``loss_fn(output, target)`` and ``score_fn(supernet, (inputs, targets)) -> (reward, metrics)`` come from
the task (e.g. ``tasks/segmentation/supernet.py: seg_score_fn``, ``tasks/restoration/functional.py:
restoration_score_fn``); the core imports no task. With a task plugin,
``trainer_for_task(task, space, epochs=epochs, cfg=strategy.cfg, seed=seed, device=device)`` (same module)
takes them from ``task.supernet_data()``, ``task.supernet_loss`` and ``task.supernet_score(batch_size)``.

``--resume``: without it the tool must refuse a work dir that holds ``history.sqlite`` (or, for one-shot,
``supernet.pth``). With it the tool opens the same history, builds space, strategy and evaluator from the
saved config exactly as for a fresh run (same seed) and calls :func:`run` with the same :class:`Budget` or a
larger one; :func:`run` itself restores the state (sampling: the strategy state of the last committed
row, ``evaluator.restore(results)`` when the evaluator has it, candidates left ``running`` by a kill are
evaluated again with the same arch and seed, all of them at once in batch mode with the results finished
before them as their snapshot; one-shot: trainer and strategy from ``supernet.pth``, the
step a kill left unrecorded is recorded, training goes on after the last finished epoch), logs a
"resuming ..." line, and never trains or records a candidate or an epoch twice.
"""
from __future__ import annotations

import operator
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch

from . import distributed as dist
from .arch import Arch
from .history import RUNNING, History
from .hooks import TB_DIR, Hook, HookList, RunInfo, TimeBudget, default_hooks
from .parallel import MODES, InProcessExecutor
from .progress import Progress, progress_line
from .promotion import pick, promote, standings
from .promotion_final import final_rung
from .result import Result
from .sampling import Outcome, eta, run_sampling
from .space import SearchSpace
from .strategies.base import OneShotStrategy, Strategy

CHECKPOINT = "supernet.pth"
DERIVED = "derived_arch.json"
TIME_BUDGET = TimeBudget.REASON  # outcome.stopped when the time budget ran out
NOT_PROMOTING = ("complete", "duplicates", "over_limit")  # the search's ends after which its promotion may run

__all__ = ["run", "Budget", "Outcome", "Evaluator", "Progress", "progress_line", "default_hooks", "CHECKPOINT",
           "DERIVED", "TB_DIR", "load_checkpoint"]

# run()'s keywords before hooks and Budget (issue #25 item 4): named in the TypeError that refuses them
_GONE = {"num_candidates": "budget=Budget(candidates=...)", "epochs": "budget=Budget(epochs=...)",
         "seed": "budget=Budget(seed=...)", "max_duplicates": "budget=Budget(max_duplicates=...)",
         "mode": "budget=Budget(mode=...)", "batch": "budget=Budget(batch=...)",
         "time_budget_s": "hooks=[TimeBudget(seconds)] (or default_hooks(time_budget_s=...))",
         "log": "hooks=default_hooks(log=...)", "live": "hooks=default_hooks(live=...)",
         "tensorboard": "hooks=default_hooks(work_dir=..., tensorboard=...)",
         "on_progress": "hooks=default_hooks(on_progress=...) (or a Callback hook)"}


def _is_int(v: Any) -> bool:
    """An integer (numpy's included), not a bool."""
    if isinstance(v, bool):
        return False
    try:
        operator.index(v)
    except TypeError:
        return False
    return True


@dataclass(frozen=True)
class Budget:
    """What one :func:`run` call is asked to do (the time limit is a hook: :class:`~densenas.hooks.TimeBudget`).

    Attributes:
        candidates: sampling: total finished candidates wanted (earlier ones count).
        epochs: one-shot: total epochs (steps) wanted (earlier ones count). Exactly one of the two is given.
        seed: base seed; candidate ``i`` trains with ``seed + i``; the one-shot row records ``seed``.
        max_duplicates: sampling: stop (``stopped="duplicates"``) after this many consecutive re-proposals
            of known archs.
        mode: sampling: ``"batch"`` (propose ``batch`` archs, train them, observe them in row order:
            deterministic given the seed), ``"pipeline"`` (keep ``batch`` in flight, record them in row order,
            propose one as each is recorded: deterministic given the seed and ``batch``; the config default,
            :class:`~densenas.parallel.ParallelCfg`) or ``"async"`` (keep ``executor.workers`` in flight, in
            finishing order).
        batch: sampling: archs proposed at once (batch mode) or kept in flight (pipeline mode); ``None``: the
            executor's worker count, else 1.

    Raises:
        ValueError: not exactly one of ``candidates`` / ``epochs``, a count that is not a positive integer,
            an unknown ``mode``, or ``batch < 1``.
    """

    candidates: int | None = None
    epochs: int | None = None
    seed: int = 0
    max_duplicates: int = 200
    mode: str = "batch"
    batch: int | None = None

    def __post_init__(self) -> None:
        if (self.candidates is None) == (self.epochs is None):
            raise ValueError(f"Budget: give exactly one of candidates= (a sampling search) and epochs= (a one-shot "
                             f"run), got candidates={self.candidates!r}, epochs={self.epochs!r}")
        for name in ("candidates", "epochs", "max_duplicates", "batch"):
            v = getattr(self, name)
            if v is not None and (not _is_int(v) or v < 1):
                raise ValueError(f"Budget: {name} must be a positive integer, got {v!r}")
        if not _is_int(self.seed):
            raise ValueError(f"Budget: seed must be an integer, got {self.seed!r}")
        if self.mode not in MODES:
            raise ValueError(f"Budget: mode must be one of {list(MODES)}, got {self.mode!r}")

    @property
    def one_shot(self) -> bool:
        """Whether this is a one-shot budget (``epochs``)."""
        return self.epochs is not None

    @property
    def total(self) -> int:
        """``candidates`` or ``epochs``."""
        return int(self.epochs if self.one_shot else self.candidates)


class Evaluator(Protocol):
    """What a sampling search needs of its evaluator (may also have ``restore(results)``)."""

    def evaluate(self, arch: Arch, seed: int = 0) -> Result: ...


def run(space: SearchSpace, strategy: Strategy, evaluator: Any, history: History, budget: Budget | None = None,
        *, work_dir: str | Path | None = None, executor: Any = None, promotion: Any = None,
        hooks: Sequence[Hook] = (), **gone: Any) -> Outcome:
    """Run (or resume) a search until its budget is done or a hook stops it.

    Args:
        space: the search space (sampled archs are checked against it before training).
        strategy: a sampling strategy (``strategy.one_shot`` false) or a one-shot one (``Darts``).
        evaluator: sampling: has ``evaluate(arch, seed) -> Result`` (and optionally ``restore``);
            one-shot: the :class:`~densenas.evaluation.supernet.SupernetTrainer` the strategy trains.
        history: the SQLite history of this work dir.
        budget: required: ``Budget(candidates=N)`` for a sampling strategy, ``Budget(epochs=N)`` for a
            one-shot one (with the seed, duplicates, batch or async mode).
        work_dir: one-shot (required): ``supernet.pth`` and ``derived_arch.json`` go here; both: told to the
            hooks (:class:`~densenas.hooks.RunInfo`), e.g. for the reports; promotion's final rung reads
            its ``config.py``.
        executor: sampling: where candidates train (:mod:`densenas.parallel`: an ``InProcessExecutor`` or a
            ``RayExecutor`` of N workers); ``None``: one at a time in this process. The caller closes it.
        promotion: sampling: a :class:`~densenas.promotion.PromotionCfg`: once the candidates are done (not
            when a hook stopped the run first), the best are trained again at longer budgets with several
            seeds on the same executor, and the pick is made on the top rung (:mod:`densenas.promotion`).
        hooks: the :class:`~densenas.hooks.Hook` objects of this call — every output and every stop:
            :func:`~densenas.hooks.default_hooks` (log lines, live bar, TensorBoard, time budget, reports) and
            the user's. ``()``: a silent run without a time limit.

    Returns:
        The :class:`Outcome`; ``stopped`` is ``"complete"``, ``"duplicates"`` or the reason a hook gave
        (``"time_budget"``, ``"stop_file"``, ...).

    Raises:
        TypeError: no ``budget``, or a keyword of the old signature (``num_candidates=``, ``time_budget_s=``,
            ``log=`` ...: the message names its replacement).
        ValueError: the budget key does not fit the strategy kind, or the history holds the other kind.
        RuntimeError: one-shot: the history records epochs but the checkpoint is gone, or the checkpoint
            belongs to a run the history does not hold.
        Exception: one-shot: whatever a step raised (e.g. ``FloatingPointError`` when the supernet
            diverged), after the run's row was marked failed.
    """
    for key in gone:
        if key in _GONE:
            raise TypeError(f"run() takes budget=Budget(...) and hooks=[...]; {key}= is gone: use {_GONE[key]}")
        raise TypeError(f"run() got an unexpected keyword argument {key!r}")
    if budget is None:
        raise TypeError("run() needs a budget: Budget(candidates=N) (sampling) or Budget(epochs=N) (one-shot)")
    if not isinstance(budget, Budget):
        raise TypeError(f"run(): budget must be a densenas.loop.Budget, got {budget!r}")
    one_shot = bool(getattr(strategy, "one_shot", False))
    if one_shot:
        if not budget.one_shot:
            raise ValueError(f"{type(strategy).__name__} is one-shot: give Budget(epochs=...), not candidates=")
        if work_dir is None:
            raise ValueError("a one-shot run needs work_dir= (for its supernet checkpoint)")
    elif budget.one_shot:
        raise ValueError(f"{type(strategy).__name__} samples candidates: give Budget(candidates=...), not epochs=")
    batch = int(budget.batch or getattr(executor, "workers", 1))
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    history.check()  # a damaged row is refused now, naming the file and row, before anything is written
    state = history.strategy_state()
    if history.count(finished_only=False) and bool(state and state.get("one_shot")) != one_shot:
        held = "a one-shot (supernet) run" if not one_shot else "a sampling search"
        raise ValueError(f"{history.path} holds {held}; {type(strategy).__name__} cannot continue it "
                         f"(use another work dir)")
    info = RunInfo(budget.total, 0, "epochs" if one_shot else "candidates", "epoch" if one_shot else "stage",
                   None if work_dir is None else Path(work_dir), history)
    rep = HookList(hooks, info=info)
    try:
        if one_shot:
            outcome = _run_one_shot(strategy, evaluator, history, rep, epochs=budget.total, seed=budget.seed,
                                    work_dir=Path(work_dir))
        else:
            outcome = _run_sampling_and_promote(space, strategy, evaluator, history, rep, budget, batch=batch,
                                                work_dir=work_dir, executor=executor, promotion=promotion)
    except BaseException as e:
        rep.after_run(None, e)
        raise
    rep.after_run(outcome, None)
    return outcome


def _run_sampling_and_promote(space: SearchSpace, strategy: Strategy, evaluator: Any, history: History,
                              rep: HookList, budget: Budget, *, batch: int, work_dir: str | Path | None,
                              executor: Any, promotion: Any) -> Outcome:
    if executor is None:
        executor = InProcessExecutor(evaluator, space)
    out = run_sampling(space, strategy, evaluator, history, rep, num_candidates=budget.total, seed=budget.seed,
                       max_duplicates=budget.max_duplicates, executor=executor, mode=budget.mode, batch=batch)
    if promotion is None or not (promotion.rungs or promotion.final_iters):
        return out
    if out.stopped not in NOT_PROMOTING:
        why = ("the time budget ran out during the search" if out.stopped == TIME_BUDGET
               else f"the search was stopped ({out.stopped})")
        rep.note(f"promotion not started: {why} (--resume with more time trains the rungs)")
        return out
    promote(history, executor, promotion, rep.note, stop=rep.stop_reason)
    if promotion.final_iters:
        if work_dir is None:
            raise ValueError("search.promote.final_iters needs the search's work dir (its config.py)")
        final_rung(history, promotion, work_dir, rep.note, stop=rep.stop_reason)
    final = pick(standings(history, promotion.tie_z), promotion.cost)
    if final is None:
        return out
    return Outcome(out.done, out.total, out.stopped, final.candidate.arch, final.candidate, final)


# ------------------------------------------------------------------------------------------ one-shot
def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A one-shot run's checkpoint: ``{"trainer", "strategy", "record"}`` (tensors and plain data only).

    Raises:
        ValueError: the file is not such a checkpoint (names the file).
    """
    from .safeload import safe_torch_load

    # tensors and plain data only: refuses (naming the file and the global) a pickle that would run code
    state = safe_torch_load(path, mmengine_types=False, advice="densenas writes none such: delete the "
                            "file to restart the supernet run, or restore a copy you trust.")
    missing = {"trainer", "strategy", "record"} - set(state if isinstance(state, dict) else ())
    if missing:
        raise ValueError(f"{path}: not a densenas supernet checkpoint (missing {sorted(missing)})")
    return state


def _agreed_stop(rep: HookList) -> str | None:
    """The hooks' reason to stop, rank 0's on every rank of a data-parallel run (clocks and files differ
    between ranks; a split decision would hang the collectives)."""
    reason = rep.stop_reason()
    if not dist.is_distributed():
        return reason
    buf = torch.zeros(128, dtype=torch.uint8)
    raw = (reason or "").encode()[:128]
    if raw:
        buf[:len(raw)] = torch.tensor(list(raw), dtype=torch.uint8)
    return bytes(dist.broadcast_tensor(buf).cpu().tolist()).rstrip(b"\0").decode(errors="replace") or None


def _run_one_shot(strategy: OneShotStrategy, evaluator: Any, history: History, rep: HookList, *,
                  epochs: int, seed: int, work_dir: Path) -> Outcome:
    work_dir.mkdir(parents=True, exist_ok=True)
    ckpt = work_dir / CHECKPOINT
    strategy.attach(evaluator)
    rows = history.candidates()
    cid = rows[0].id if rows else None

    def hstate() -> dict[str, Any]:
        return {"one_shot": True, **strategy.state_dict()}

    if ckpt.is_file():
        state = load_checkpoint(ckpt)
        rec = state["record"]
        if cid is None or int(rec["candidate"]) != cid:
            raise RuntimeError(f"{ckpt} belongs to a run that {history.path} does not hold: delete the "
                               f"checkpoint to start afresh, or restore the history")
        evaluator.load_state_dict(state["trainer"])
        strategy.load_state_dict(state["strategy"])
        # a kill between checkpoint and history row: write the row now (idempotent otherwise)
        history.add_step(cid, int(rec["step"]), Arch.from_dict(rec["arch"]), Result.from_dict(rec["result"]),
                         hstate())
        rep.note(f"resuming the supernet run #{cid} after epoch {strategy.steps_done} from {ckpt}")
    elif history.steps():
        raise RuntimeError(f"{history.path} records finished epochs but {ckpt} is missing: cannot resume "
                           f"without repeating them (restore the checkpoint or use a new work dir)")
    if cid is None:
        with torch.random.fork_rng(devices=[]):  # deriving must not move the training's RNG stream
            arch0 = strategy.propose()
        cid = history.start(arch0, seed, hstate())
    if strategy.steps_done < epochs and history.get(cid).status != RUNNING:
        history.reopen(cid)  # more epochs asked for, or going on after a failure
    rep.start(strategy.steps_done)
    t0 = time.perf_counter()
    done_here = 0
    stopped = "complete"
    while strategy.steps_done < epochs:
        reason = _agreed_stop(rep)  # every rank takes rank 0's decision
        if reason is not None:
            stopped = reason
            break
        started = time.perf_counter()
        try:
            arch, result = strategy.step()
        except Exception as e:  # the supernet is lost past this point: record why, keep the last good epoch
            failed = Result.failed(f"{type(e).__name__}: {e}", stage=strategy.steps_done + 1,
                                   wall_time=time.perf_counter() - started)
            history.finish(cid, failed, hstate())
            raise
        result.wall_time = time.perf_counter() - started
        strategy.observe(arch, result)
        n = int(result.stage)
        rec = {"candidate": cid, "step": n, "arch": arch.to_dict(), "result": result.to_dict()}
        _atomic_save({"trainer": evaluator.state_dict(), "strategy": strategy.state_dict(), "record": rec}, ckpt)
        history.add_step(cid, n, arch, result, hstate())
        arch.save(work_dir / DERIVED)
        done_here += 1
        elapsed = time.perf_counter() - t0
        steps = history.steps(cid)
        rep.after_candidate(Progress(strategy.steps_done, epochs, history.get(cid), None, elapsed,
                            eta(elapsed, done_here, epochs - strategy.steps_done, rep.seconds_left()),
                            step=steps[-1], best_step=history.best_step(cid)))
    steps = history.steps(cid)
    if steps:
        last = steps[-1]
        last.arch.save(work_dir / DERIVED)
        if strategy.steps_done >= epochs and history.get(cid).status == RUNNING:
            wall = sum(s.result.wall_time for s in steps)
            final = (Result(reward=last.result.reward, metrics=last.result.metrics, stage=last.step,
                            cost=last.result.cost, wall_time=wall) if last.result.ok else
                     Result.failed(f"epoch {last.step} gave no reward", stage=last.step, wall_time=wall))
            history.finish(cid, final, hstate(), arch=last.arch)
    return Outcome(strategy.steps_done, epochs, stopped, steps[-1].arch if steps else None, history.get(cid))
