"""Hooks of the search loop: what happens around the candidates, pluggable.

The pattern of detectron2's ``HookBase`` (a trainer calls ``before_train`` / ``after_step`` /
``after_train`` on a list of hooks) and mmengine's ``Hook``: :func:`densenas.loop.run` calls every hook's
:meth:`Hook.before_run` once, :meth:`Hook.after_candidate` after each finished candidate (sampling) or
supernet epoch (one-shot), :meth:`Hook.note` with each notice, and :meth:`Hook.after_run` at the end, also when
the run raised. The search's own outputs are hooks too (:class:`LogLines`, :class:`LiveBar`,
:class:`TensorBoard`, :class:`Callback`), so a user hook is a peer of them:

.. code-block:: python

    # my_hooks.py (anywhere on PYTHONPATH)
    from densenas.hooks import Hook

    class StopFile(Hook):
        '''Writes the best reward so far to a file after every candidate.'''
        def __init__(self, path="best.txt"):
            self.path = path
        def after_candidate(self, progress):
            if progress.best is not None:
                open(self.path, "w").write(f"{progress.best.result.reward:.4f}\\n")

    # in the search config
    hooks = [dict(type="my_hooks:StopFile", path="work_dirs/best.txt")]

``type`` is ``"module:Class"`` (imported when the config names it) or the name of an entry point in the
``densenas.hook_plugins`` group. A hook that raises is switched off with a notice naming it and the
exception; the search goes on (its candidates are worth more than a hook's output).
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .config import ConfigError
from .plugins import PluginError, available, load
from .progress import Log, Progress, fmt_s, progress_line

HOOKS = "densenas.hook_plugins"  # entry-point group of third-party hooks (docs/architecture.md)

__all__ = ["HOOKS", "Hook", "RunInfo", "LogLines", "LiveBar", "TensorBoard", "Callback", "HookList",
           "build_hooks", "tensorboard_available"]


@dataclass
class RunInfo:
    """What :meth:`Hook.before_run` is told about the run.

    Attributes:
        total: the budget (candidates or epochs).
        done: finished already (a resumed run).
        unit: ``"candidates"`` or ``"epochs"``.
        stage_label: ``"stage"`` (sampling) or ``"epoch"`` (one-shot), for progress lines.
        work_dir: the search's work dir (``None`` when the caller gave none).
        history: the run's :class:`~densenas.history.History`.
        time_budget_s: the wall-clock limit of this call, if any.
    """

    total: int
    done: int
    unit: str
    stage_label: str
    work_dir: Path | None
    history: Any
    time_budget_s: float | None = None


class Hook:
    """Base class: override what you need; every method is a no-op here."""

    def before_run(self, run: RunInfo) -> None:
        """Once, before the first candidate or epoch of this call."""

    def after_candidate(self, progress: Progress) -> None:
        """After each finished candidate (sampling) or supernet epoch (one-shot: ``progress.step``)."""

    def note(self, msg: str) -> None:
        """A notice of the loop (promotion, resume, time budget)."""

    def after_run(self, outcome: Any, error: BaseException | None) -> None:
        """Once at the end: the :class:`~densenas.sampling.Outcome` (``None`` if the run raised ``error``)."""


class LogLines(Hook):
    """One :func:`~densenas.progress.progress_line` per candidate or epoch, and every notice, to ``log``."""

    def __init__(self, log: Log):
        self.log = log
        self.stage_label = "stage"

    def before_run(self, run: RunInfo) -> None:
        self.stage_label = run.stage_label

    def after_candidate(self, progress: Progress) -> None:
        self.log(progress_line(progress, self.stage_label))

    def note(self, msg: str) -> None:
        self.log(msg)


class LiveBar(Hook):
    """A ``rich`` progress bar: done / total, the best reward, time left."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._task: Any = None

    def before_run(self, run: RunInfo) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("best {task.fields[best]}"), TimeElapsedColumn(),
                        TextColumn("left ~{task.fields[left]}"))
        self._bar.start()
        self._task = self._bar.add_task(run.unit, total=run.total, completed=run.done, best="-", left="?")

    def after_candidate(self, progress: Progress) -> None:
        if self._bar is None:
            return
        best = _best_reward(progress)
        self._bar.update(self._task, completed=progress.done, left=fmt_s(progress.eta),
                         best="-" if best is None else f"{best:.4f}")

    def after_run(self, outcome: Any, error: BaseException | None) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class TensorBoard(Hook):
    """Reward, best reward, metrics and cost of each candidate (or epoch) as TensorBoard scalars under
    ``tb_dir``, through mmengine's ``Visualizer`` with its ``TensorboardVisBackend``; a one-line notice and
    nothing else when the ``tensorboard`` package is missing or a write fails."""

    def __init__(self, tb_dir: str | Path, note: Log | None = None):
        self.tb_dir, self._note, self._vis = Path(tb_dir), note or (lambda msg: None), None

    def before_run(self, run: RunInfo) -> None:
        if not tensorboard_available():
            self._note("TensorBoard logging off: the 'tensorboard' package is not installed "
                       "(pip install tensorboard)")
            return
        try:
            from mmengine.visualization import TensorboardVisBackend, Visualizer

            self._vis = Visualizer(name=f"densenas-search-{id(self)}",
                                   vis_backends=[TensorboardVisBackend(save_dir=str(self.tb_dir))])
        except Exception as e:  # noqa: BLE001 - progress output must never stop a search
            self._note(f"TensorBoard logging off: {type(e).__name__}: {e}")

    def after_candidate(self, progress: Progress) -> None:
        if self._vis is None:
            return
        if progress.step is not None:
            result, x, prefix = progress.step.result, progress.step.step, "step"
        else:
            result, x, prefix = progress.candidate.result, progress.candidate.id, "candidate"
        scalars = {"reward": result.reward if result.ok else None, "best_reward": _best_reward(progress),
                   **result.metrics, **result.cost}
        scalars = {f"{prefix}/{k}": float(v) for k, v in scalars.items()
                   if isinstance(v, (int, float)) and v is not None and math.isfinite(v)}
        try:
            self._vis.add_scalars(scalars, step=int(x))
        except Exception as e:  # noqa: BLE001
            self._note(f"TensorBoard logging off: {type(e).__name__}: {e}")
            self._vis = None

    def after_run(self, outcome: Any, error: BaseException | None) -> None:
        if self._vis is not None:
            self._vis.close()
            self._vis = None


class Callback(Hook):
    """Calls ``fn(progress)`` after each candidate or epoch (``run(on_progress=...)``)."""

    def __init__(self, fn: Callable[[Progress], None]):
        self.fn = fn

    def after_candidate(self, progress: Progress) -> None:
        self.fn(progress)


def tensorboard_available() -> bool:
    """Whether mmengine's ``TensorboardVisBackend`` can write (``tensorboard`` or ``tensorboardX``)."""
    return any(importlib.util.find_spec(m) is not None for m in ("tensorboard", "tensorboardX"))


def _best_reward(p: Progress) -> float | None:
    if p.step is not None:
        return p.best_step.result.reward if p.best_step else None
    return p.best.result.reward if p.best else None


class HookList:
    """The hooks of one loop call, called in order; a hook that raises is switched off (module docstring).

    The loop's own outputs are built in front of the user's hooks: :class:`LogLines` (when ``log`` is
    given), :class:`LiveBar` (``live``; ``None``: when stdout is a terminal), :class:`TensorBoard`
    (``tb_dir``) and :class:`Callback` (``on_progress``).
    """

    def __init__(self, hooks: Sequence[Hook] = (), *, log: Log | None = None, live: bool | None = None,
                 tb_dir: str | Path | None = None, on_progress: Callable[[Progress], None] | None = None,
                 info: RunInfo | None = None):
        self.info = info
        own: list[Hook] = []
        if log is not None:
            own.append(LogLines(log))
        if on_progress is not None:
            own.append(Callback(on_progress))
        if sys.stdout.isatty() if live is None else live:
            own.append(LiveBar())
        if tb_dir is not None:
            own.append(TensorBoard(tb_dir, note=self.note))
        for h in hooks:
            if not isinstance(h, Hook):
                raise TypeError(f"hooks: {h!r} is not a densenas.hooks.Hook")
        self.hooks = own + list(hooks)
        self._user = set(map(id, hooks))

    def _call(self, name: str, *args: Any) -> None:
        for h in list(self.hooks):
            try:
                getattr(h, name)(*args)
            except Exception as e:  # noqa: BLE001 - a hook's failure must not cost the search its candidates
                if id(h) not in self._user:
                    raise
                self.hooks.remove(h)
                self.note(f"hook {type(h).__name__} switched off: {name} raised {type(e).__name__}: {e}")

    def note(self, msg: str) -> None:
        """A notice to every hook (the log included)."""
        for h in list(self.hooks):
            try:
                h.note(msg)
            except Exception:  # noqa: BLE001 - a failing note is dropped, never recursed into
                if id(h) in self._user:
                    self.hooks.remove(h)

    def before_run(self, run: RunInfo) -> None:
        self._call("before_run", run)

    def start(self, done: int) -> None:
        """:meth:`before_run` with the run's :class:`RunInfo` (given at construction) at ``done``."""
        if self.info is None:
            raise ValueError("HookList.start needs the RunInfo given as info=")
        self.before_run(dataclasses.replace(self.info, done=int(done)))

    def after_candidate(self, progress: Progress) -> None:
        self._call("after_candidate", progress)

    def after_run(self, outcome: Any, error: BaseException | None = None) -> None:
        self._call("after_run", outcome, error)


def build_hooks(specs: Any, source: str = "config") -> list[Hook]:
    """The hooks a config's ``hooks`` list names: ``dict(type="module:Class" or an entry-point name, **kwargs)``.

    Raises:
        ConfigError: not a list of dicts with a ``type``, a module or class that cannot be imported, a class
            that is not a :class:`Hook`, or keyword arguments its constructor refuses (each named).
    """
    if specs is None:
        return []
    if isinstance(specs, Mapping) or isinstance(specs, str) or not isinstance(specs, Sequence):
        raise ConfigError(f"{source}: 'hooks' must be a list of dict(type='module:Class', ...), got {specs!r}")
    out = []
    for i, spec in enumerate(specs):
        where = f"{source}: hooks[{i}]"
        if not isinstance(spec, Mapping) or not isinstance(spec.get("type"), str):
            raise ConfigError(f"{where}: need dict(type='module:Class', ...), got {spec!r}")
        kwargs = {k: v for k, v in spec.items() if k != "type"}
        cls = _hook_class(spec["type"], where)
        try:
            hook = cls(**kwargs)
        except TypeError as e:
            raise ConfigError(f"{where}: {spec['type']}: {e}") from None
        out.append(hook)
    return out


def _hook_class(name: str, where: str) -> type:
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except ImportError as e:
            raise ConfigError(f"{where}: cannot import module {module!r} of hook {name!r} ({e})") from None
        except AttributeError:
            raise ConfigError(f"{where}: module {module!r} has no {attr!r} (hook {name!r})") from None
    elif not available(HOOKS):
        raise ConfigError(f"{where}: {name!r}: no hook plugins are installed (entry-point group {HOOKS}); "
                         f"give the class as 'module:Class'")
    else:
        try:
            cls = load(HOOKS, name, "hooks[].type")
        except PluginError as e:
            raise ConfigError(f"{where}: {e} (or give 'module:Class')") from None
    if not (isinstance(cls, type) and issubclass(cls, Hook)):
        raise ConfigError(f"{where}: {name!r} is not a subclass of densenas.hooks.Hook")
    return cls
