"""Progress of a search: one plain line per candidate or step, a live bar on a terminal, TensorBoard.

Used by the one search loop, :func:`densenas.loop.run`, for sampling strategies (a line per finished
candidate) and one-shot ones (DARTS, Liu et al., ICLR 2019: a line per supernet epoch, a *step* of the
run's one candidate, like Optuna's ``trial.report``). Three outputs, each optional:

- ``log``: a callback given :func:`progress_line` strings (``tools/search.py`` writes them to
  ``search.log``);
- a live bar (``rich``) with done / total, the best reward and the time left, when stdout is a terminal;
- scalars (reward, best reward, metrics, cost) under ``<work_dir>/tb/`` through mmengine's
  ``Visualizer`` with its ``TensorboardVisBackend``, when the ``tensorboard`` package is importable (a
  one-line notice otherwise).
"""
from __future__ import annotations

import importlib.util
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .history import Candidate, Step

Log = Callable[[str], None]


@dataclass
class Progress:
    """What the loop reports after each finished candidate (sampling) or step (one-shot).

    Attributes:
        done: finished candidates or steps, earlier runs of a resumed search included.
        total: the budget (``num_candidates`` or ``epochs``).
        candidate: the finished candidate, or the one-shot run's candidate (still ``running``).
        best: the best finished candidate (sampling).
        elapsed: seconds since this call of the loop started.
        eta: estimated seconds left (capped by the time budget).
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


def tensorboard_available() -> bool:
    """Whether mmengine's ``TensorboardVisBackend`` can write (``tensorboard`` or ``tensorboardX``)."""
    return any(importlib.util.find_spec(m) is not None for m in ("tensorboard", "tensorboardX"))


class Reporter:
    """The three progress outputs of one loop call (use as a context manager).

    Args:
        total: the budget (candidates or steps).
        unit: bar label (``"candidates"`` or ``"epochs"``).
        stage_label: see :func:`progress_line`.
        log: receives one line per candidate/step and notices.
        live: show the bar; ``None``: when stdout is a terminal.
        tb_dir: TensorBoard directory (``None``: no TensorBoard).
        on_progress: also called with every :class:`Progress`.
    """

    def __init__(self, total: int, *, unit: str = "candidates", stage_label: str = "stage",
                 log: Log | None = None, live: bool | None = None, tb_dir: str | Path | None = None,
                 on_progress: Callable[[Progress], None] | None = None):
        self.total, self.unit, self.stage_label = total, unit, stage_label
        self.log, self.on_progress = log, on_progress
        self.live = sys.stdout.isatty() if live is None else live
        self.tb_dir = None if tb_dir is None else Path(tb_dir)
        self._bar: Any = None
        self._task: Any = None
        self._vis: Any = None

    def note(self, msg: str) -> None:
        if self.log is not None:
            self.log(msg)

    def __enter__(self) -> "Reporter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self, done: int) -> None:
        """Open the bar (at ``done``) and the TensorBoard writer."""
        if self.tb_dir is not None:
            self._vis = self._open_tensorboard()
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bar

            self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("best {task.fields[best]}"), TimeElapsedColumn(),
                            TextColumn("left ~{task.fields[left]}"))
            self._bar.start()
            self._task = self._bar.add_task(self.unit, total=self.total, completed=done, best="-", left="?")

    def _open_tensorboard(self) -> Any:
        if not tensorboard_available():
            self.note("TensorBoard logging off: the 'tensorboard' package is not installed "
                      "(pip install tensorboard)")
            return None
        try:
            from mmengine.visualization import TensorboardVisBackend, Visualizer

            return Visualizer(name=f"densenas-search-{id(self)}",
                              vis_backends=[TensorboardVisBackend(save_dir=str(self.tb_dir))])
        except Exception as e:  # noqa: BLE001 - progress output must never stop a search
            self.note(f"TensorBoard logging off: {type(e).__name__}: {e}")
            return None

    def update(self, p: Progress) -> None:
        """Report one finished candidate or step."""
        self.note(progress_line(p, self.stage_label))
        if self.on_progress is not None:
            self.on_progress(p)
        if p.step is not None:
            best = p.best_step.result.reward if p.best_step else None
            result, x, prefix = p.step.result, p.step.step, "step"
        else:
            best = p.best.result.reward if p.best else None
            result, x, prefix = p.candidate.result, p.candidate.id, "candidate"
        if self._bar is not None:
            self._bar.update(self._task, completed=p.done, left=fmt_s(p.eta),
                             best="-" if best is None else f"{best:.4f}")
        if self._vis is not None:
            scalars = {"reward": result.reward if result.ok else None, "best_reward": best,
                       **result.metrics, **result.cost}
            scalars = {f"{prefix}/{k}": float(v) for k, v in scalars.items()
                       if isinstance(v, (int, float)) and v is not None and math.isfinite(v)}
            try:
                self._vis.add_scalars(scalars, step=int(x))
            except Exception as e:  # noqa: BLE001
                self.note(f"TensorBoard logging off: {type(e).__name__}: {e}")
                self._vis = None

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self._vis is not None:
            self._vis.close()
            self._vis = None
