"""Progress of a search: what the loop reports after each candidate or step, and its one-line form.

Used by the one search loop, :func:`densenas.loop.run`, for sampling strategies (a line per finished
candidate) and one-shot ones (DARTS, Liu et al., ICLR 2019: a line per supernet epoch, a *step* of the
run's one candidate, like Optuna's ``trial.report``). The outputs are hooks (:mod:`densenas.hooks`, built
by :func:`densenas.hooks.default_hooks`), each optional:

- :class:`~densenas.hooks.LogLines`: a callback given :func:`progress_line` strings (``tools/search.py``
  writes them to ``search.log``);
- :class:`~densenas.hooks.LiveBar`: a ``rich`` bar with done / total, the best reward and the time left,
  when stdout is a terminal;
- :class:`~densenas.hooks.TensorBoard`: scalars (reward, best reward, metrics, cost) under
  ``<work_dir>/tb/`` through mmengine's ``Visualizer`` with its ``TensorboardVisBackend``, when the
  ``tensorboard`` package is importable (a one-line notice otherwise);
- :class:`~densenas.hooks.Callback`: ``fn(progress)`` with every :class:`Progress`.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .history import Candidate, Step

Log = Callable[[str], None]


@dataclass
class Progress:
    """What the loop reports after each finished candidate (sampling) or step (one-shot).

    Attributes:
        done: finished candidates or steps, earlier runs of a resumed search included.
        total: the budget (``Budget.candidates`` or ``Budget.epochs``, :class:`densenas.loop.Budget`).
        candidate: the finished candidate, or the one-shot run's candidate (still ``running``).
        best: the best finished candidate (sampling).
        elapsed: seconds since this call of the loop started.
        eta: estimated seconds left (capped by a hook's deadline, e.g. the time budget:
            :meth:`densenas.hooks.Hook.seconds_left`).
        step: the finished step (one-shot).
        best_step: the best-scoring step so far (one-shot).
    """

    done: int
    total: int
    candidate: Candidate
    best: Candidate | None
    elapsed: float
    eta: float | None
    step: Step | None = None
    best_step: Step | None = None


@contextmanager
def tee_log(path: str | Path) -> Iterator[Callable[[str], None]]:
    """A ``log(msg)`` for the tools: prints ``HH:MM:SS msg`` and appends it to ``path`` (closed on exit)."""
    with open(path, "a") as f:
        def log(msg: str) -> None:
            line = f"{time.strftime('%H:%M:%S')} {msg}"
            print(line, flush=True)
            f.write(line + "\n")
            f.flush()

        yield log


def fmt_s(s: float | None) -> str:
    """``1h02m`` / ``3m07s``; ``?`` when unknown."""
    if s is None:
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def progress_line(p: Progress, stage_label: str = "stage") -> str:
    """One human-readable line per finished candidate or step.

    ``stage_label`` names a candidate's stage (``"stage"``) or a step (``"epoch"`` for supernet runs).
    """
    times = f"elapsed {fmt_s(p.elapsed)} left ~{fmt_s(p.eta)}"
    if p.step is not None:
        r = p.step.result
        what = f"reward {r.reward:.4f}" if r.ok else "no reward"
        b = p.best_step
        best = f"best {b.result.reward:.4f} ({stage_label} {b.step})" if b else "best -"
        return (f"[{p.done}/{p.total}] #{p.candidate.id} {stage_label} {p.step.step} {what} in "
                f"{r.wall_time:.1f}s | {best} | {times}")
    c, r = p.candidate, p.candidate.result
    what = f"reward {r.reward:.4f} {stage_label} {r.stage}" if r.ok else f"FAILED ({r.error})"
    best = f"best {p.best.result.reward:.4f} (#{p.best.id})" if p.best else "best -"
    return f"[{p.done}/{p.total}] #{c.id} {what} in {r.wall_time:.1f}s | {best} | {times}"
