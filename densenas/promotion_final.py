"""The final rung of a promotion: the best of the top proxy rung exported and fine-tuned the user's way.

Successive halving (:mod:`densenas.promotion`; Li et al., JMLR 2018) ends on its top *proxy* rung: a longer
proxy training is still a proxy, and the fidelity tool measures how far its ranking is from the model the
user gets (``tools/fidelity.py --final-iters``). With ``search.promote.final_iters = N`` the search goes one
rung further: the best ``final_top`` candidates of the top proxy rung (and the seeded baselines, carried to
every rung) are each exported by ``tools/export.py``, fine-tuned by ``tools/train.py`` for ``N`` iterations
with ``seeds`` seeds and tested by ``tools/test.py``: exactly the commands a user types, through
:func:`densenas.finetune.fine_tune`. The score of a run is the task's headline metric
(:attr:`densenas.task.Task.test_metric`: mIoU, bbox mAP, ...; negated where lower is better), recorded in the
history's ``rungs`` table as rung ``rungs + 1``, so the pick, the ties (the fine-tunes' own seed noise) and
the cheapest-of-the-tied rule of :func:`densenas.promotion.pick` apply to it unchanged.

The fine-tunes run in this process's subprocesses (each is a whole mmengine run, not a candidate for a
worker): one after another, using the machine's threads, or ``final_jobs`` side by side, each with its share
of the cores. A killed search resumes with the same command:
runs recorded in the history are kept, and a fine-tune whose ``test.json`` exists is read, not trained.

Caveat: the final rung scores on the task's validation split, the split the search itself ranks on. A user
who reports the pick's metric should test it on data the search never saw.
"""
from __future__ import annotations

import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable

from .finetune import arch_folder, fine_tune_arch, jobs_env
from .history import Candidate, History
from .promotion import PromotionCfg, carried_candidates, rung_pool, rung_seed, standings, stopped_why
from .result import Result

FINAL_DIR = "promotion_final"  # under the search's work dir: one folder per candidate, one per seed

__all__ = ["FINAL_DIR", "final_rung", "final_pool"]


def final_pool(history: History, cfg: PromotionCfg) -> list[Candidate]:
    """The candidates of the final rung: the best ``cfg.final_top`` of the top proxy rung (rung ``cfg.rungs``;
    the search's reward when ``rungs`` is 0) by their mean score there, then the carried baselines that
    reached that rung."""
    runs = history.rung_runs()
    pool = rung_pool(standings(history, cfg.tie_z, runs), runs, cfg.rungs)
    chosen = [s.candidate for s in pool[:cfg.final_top]]
    return chosen + carried_candidates(pool, cfg.carry, {c.id for c in chosen})


def _run_one(arch_json: Path, seed: int, cfg: PromotionCfg, env: dict[str, str] | None = None) -> Result:
    """Export (``arch_json``: prepared by :func:`~densenas.finetune.arch_folder`), fine-tune and test with
    ``seed``; a failure is a failed :class:`Result`."""
    t0 = time.perf_counter()
    try:
        value, data = fine_tune_arch(arch_json, iters=cfg.final_iters, export_args=cfg.final_args, seed=seed,
                                     metric=cfg.final_metric, env=env)
    except (RuntimeError, ValueError) as e:  # a tool failed (its command and log), or no headline metric
        return Result(status="failed", error=str(e).splitlines()[0], wall_time=time.perf_counter() - t0)
    metrics = {k: float(v) for k, v in data["metrics"].items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    cost = {k: float(data[k]) for k in ("params", "madds") if isinstance(data.get(k), (int, float))}
    return Result(reward=value, metrics=metrics, stage=2, cost=cost,
                  wall_time=float(data.get("train_seconds", time.perf_counter() - t0)))


def final_rung(history: History, cfg: PromotionCfg, work_dir: str | Path, log: Callable[[str], None], *,
               stop: Callable[[], str | None] = lambda: None) -> int:
    """Train the final rung's runs not yet in ``history`` (module docstring); returns how many were trained.

    ``stop`` is asked before each run (the loop's hooks: a reason such as ``"time_budget"`` means no new one
    starts; a resumed search trains the rest).

    Raises:
        ValueError: the settings cannot run (no task metric, no ``config.py`` in ``work_dir``).
    """
    if not cfg.final_iters:
        return 0
    if not cfg.final_metric or not cfg.final_metric[0]:
        raise ValueError("search.promote.final_iters needs the task's headline metric (Task.test_metric); "
                         "this search's task has none")
    work_dir = Path(work_dir)
    if not (work_dir / "config.py").is_file():
        raise ValueError(f"search.promote.final_iters: {work_dir / 'config.py'} (the search's resolved config, "
                         f"written by tools/search.py) is missing; tools/export.py needs it next to each arch")
    rung = cfg.rungs + 1
    chosen = final_pool(history, cfg)
    if not chosen:
        log(f"promotion: the final rung has no candidate (none finished rung {cfg.rungs})")
        return 0
    have = {(r.candidate, r.repeat) for r in history.rung_runs() if r.rung == rung}
    todo = [(c, j) for c in chosen for j in range(cfg.seeds) if (c.id, j) not in have]
    log(f"promotion: final rung {rung}: {', '.join(f'#{c.id}' for c in chosen)} exported and fine-tuned by "
        f"tools/train.py for {cfg.final_iters} iterations x {cfg.seeds} seed(s): {len(todo)} run(s) "
        f"(in {work_dir / FINAL_DIR})")
    trained, t0 = 0, time.perf_counter()
    env, pending = jobs_env(cfg.final_jobs), deque(todo)
    # each candidate's folder is written here, once, before its seeds may run side by side and read it
    folders = {c.id: arch_folder(c.arch, work_dir / FINAL_DIR / f"cand_{c.id:04d}", work_dir / "config.py")
               for c, _ in todo}
    running: dict[Future, tuple[Candidate, int, int]] = {}
    # Threads only wait on the tools' processes; the history is written here, in this thread, as runs finish.
    with ThreadPoolExecutor(max_workers=cfg.final_jobs) as pool:
        while pending or running:
            while pending and len(running) < cfg.final_jobs:
                reason = stop()  # the loop's hooks (a time budget ...): no new fine-tuning starts
                if reason is not None:
                    log(f"promotion: {stopped_why(reason)} at the final rung ({len(pending)} run(s) not "
                        f"started; --resume trains them)")
                    pending.clear()
                    break
                c, j = pending.popleft()
                seed = rung_seed(c, j)
                running[pool.submit(_run_one, folders[c.id], seed, cfg, env)] = (c, j, seed)
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                c, j, seed = running.pop(fut)
                result = fut.result()
                history.add_rung(c.id, rung, j, seed, result)
                trained += 1
                what = f"{cfg.final_metric[0]} score {result.reward:.4f}" if result.ok else f"failed: {result.error}"
                log(f"  final #{c.id} seed {seed}: {what} ({result.wall_time:.0f}s; {trained}/{len(todo)}, "
                    f"{time.perf_counter() - t0:.0f}s so far)")
    return trained

