"""Hooks of the search loop: everything around the candidates, pluggable.

The pattern of detectron2's ``HookBase`` (a trainer calls ``before_train`` / ``after_step`` /
``after_train`` on a list of hooks) and mmengine's ``Hook``. :func:`densenas.loop.run` trains and records
candidates; every output and every stop is a hook in its ``hooks=[...]``:

- :meth:`Hook.before_run` once, before the first candidate or epoch of this call (a clock starts here);
- :meth:`Hook.stop_reason` polled before each new candidate, batch or epoch is started and before each
  promoted run: the first hook to return a reason (a string) stops the run gracefully — what is in flight
  finishes and is recorded, nothing new starts, and the outcome's ``stopped`` is that reason
  (``--resume`` goes on from there);
- :meth:`Hook.seconds_left` (optional): a deadline, which caps the time left that the progress shows;
- :meth:`Hook.after_candidate` after each finished candidate (sampling) or supernet epoch (one-shot);
- :meth:`Hook.note` with each notice of the loop (resume, promotion, a hook switched off);
- :meth:`Hook.after_run` once at the end, also when the run raised.

Built in: :class:`LogLines` (a progress line per candidate to ``log``, and the notices), :class:`LiveBar`
(a ``rich`` bar), :class:`TensorBoard` (scalars under ``<work_dir>/tb/``), :class:`Callback`
(``fn(progress)``), :class:`TimeBudget` (``stopped="time_budget"``), :class:`StopFile` (stop when a file
appears: ``stopped="stop_file"``) and :class:`Reports` (leaderboard, plots, ``best_arch.json`` through
:func:`densenas.viz.write_reports`); :func:`default_hooks` builds the usual list. A user hook is a peer of
them:

.. code-block:: python

    # my_hooks.py (anywhere on PYTHONPATH)
    from densenas.hooks import Hook

    class BestFile(Hook):
        '''Writes the best reward so far to a file after every candidate; stops at a target reward.'''
        def __init__(self, path="best.txt", target=None):
            self.path, self.target, self.best = path, target, None
        def after_candidate(self, progress):
            if progress.best is not None:
                self.best = progress.best.result.reward
                open(self.path, "w").write(f"{self.best:.4f}\\n")
        def stop_reason(self):
            if self.target is not None and self.best is not None and self.best >= self.target:
                return "target_reached"   # -> outcome.stopped
            return None

    # in the search config
    hooks = [dict(type="my_hooks:BestFile", path="work_dirs/best.txt", target=0.8)]

``type`` is ``"module:Class"`` (imported when the config names it) or the name of an entry point in the
``densenas.hook_plugins`` group. The built-in hooks are called first, the others in their given order. A
hook that is not one of the built-in classes (a subclass of one is a user hook too) and raises in any
method is switched off with a notice naming it and the exception; the search goes on (its candidates are
worth more than a hook's output). A built-in hook that raises stops the run (a log that cannot be
written, reports that cannot be written).
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .config import ConfigError
from .plugins import PluginError, available, load
from .progress import Log, Progress, fmt_s, progress_line

HOOKS = "densenas.hook_plugins"  # entry-point group of third-party hooks (docs/architecture.md)

TB_DIR = "tb"  # TensorBoard scalars go to <work_dir>/tb/

__all__ = ["HOOKS", "TB_DIR", "Hook", "RunInfo", "LogLines", "LiveBar", "TensorBoard", "Callback", "TimeBudget",
           "StopFile", "Reports", "HookList", "BUILTIN_HOOKS", "default_hooks", "build_hooks",
           "tensorboard_available"]


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
    """

    total: int
    done: int
    unit: str
    stage_label: str
    work_dir: Path | None
    history: Any


class Hook:
    """Base class: override what you need; every method is a no-op here (module docstring).

    :meth:`notify` sends a notice to every hook of the run (the log included) once the hook is in a
    :class:`HookList`.
    """

    _notify: Callable[[str], None] | None = None  # set by HookList

    def before_run(self, run: RunInfo) -> None:
        """Once, before the first candidate or epoch of this call."""

    def stop_reason(self) -> str | None:
        """Polled before each new candidate, batch, epoch or promoted run is started.

        Returns:
            ``None`` to go on, or why the run stops (e.g. ``"time_budget"``): the runs in flight finish and
            are recorded, nothing new starts, and the outcome's ``stopped`` is this string.
        """
        return None

    def seconds_left(self) -> float | None:
        """How long this hook lets the run go on, if it knows (a deadline): the progress's time left is
        capped by the smallest such answer. ``None``: no deadline."""
        return None

    def after_candidate(self, progress: Progress) -> None:
        """After each finished candidate (sampling) or supernet epoch (one-shot: ``progress.step``)."""

    def note(self, msg: str) -> None:
        """A notice of the loop (promotion, resume, a hook switched off)."""

    def after_run(self, outcome: Any, error: BaseException | None) -> None:
        """Once at the end: the :class:`~densenas.sampling.Outcome` (``None`` if the run raised ``error``)."""

    def notify(self, msg: str) -> None:
        """Send ``msg`` to every hook's :meth:`note` (the log included); dropped outside a :class:`HookList`."""
        if self._notify is not None:
            self._notify(msg)


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
    nothing else when the ``tensorboard`` package is missing or a write fails.

    Args:
        tb_dir: where the event files go (the loop's default: ``<work_dir>/tb``).
        note: where its notices go; ``None``: to every hook of the run (:meth:`Hook.notify`).
    """

    def __init__(self, tb_dir: str | Path, note: Log | None = None):
        self.tb_dir, self._vis = Path(tb_dir), None
        self._note = note if note is not None else self.notify

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
    """Calls ``fn(progress)`` after each candidate or epoch (``default_hooks(on_progress=fn)``)."""

    def __init__(self, fn: Callable[[Progress], None]):
        self.fn = fn

    def after_candidate(self, progress: Progress) -> None:
        self.fn(progress)


class TimeBudget(Hook):
    """A wall-clock limit of one :func:`~densenas.loop.run` call (the search and its promotion together):
    its clock starts in :meth:`before_run`; once ``seconds`` are spent it stops the run with
    ``stopped="time_budget"`` (the candidate, epoch or promoted runs in flight finish first).

    Args:
        seconds: the limit (``0``: nothing new starts; a resumed run with more time goes on).

    Raises:
        ValueError: ``seconds`` is negative or not a number.
    """

    REASON = "time_budget"

    def __init__(self, seconds: float):
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
            raise ValueError(f"TimeBudget: seconds must be a number >= 0, got {seconds!r}")
        self.seconds = float(seconds)
        self._t0: float | None = None

    def before_run(self, run: RunInfo) -> None:
        self._t0 = time.perf_counter()

    def seconds_left(self) -> float | None:
        if self._t0 is None:
            return None
        return self.seconds - (time.perf_counter() - self._t0)

    def stop_reason(self) -> str | None:
        left = self.seconds_left()
        return self.REASON if left is not None and left <= 0 else None


class StopFile(Hook):
    """Stops the run gracefully when ``path`` exists (``touch work_dir/STOP``): ``stopped="stop_file"``.

    Args:
        path: the file to watch; relative paths are taken from the run's work dir when it has one.
    """

    REASON = "stop_file"

    def __init__(self, path: str | Path = "STOP"):
        self.path = Path(path)
        self._resolved = self.path
        self._told = False  # the stop has been announced (once per run)

    def before_run(self, run: RunInfo) -> None:
        self._resolved = (run.work_dir / self.path if run.work_dir is not None and not self.path.is_absolute()
                          else self.path)
        self._told = False
        if self._resolved.exists():
            self.notify(f"{self._resolved} exists: nothing new starts (delete it to go on)")
            self._told = True

    def stop_reason(self) -> str | None:
        if not self._resolved.exists():
            return None
        if not self._told:
            self.notify(f"{self._resolved} found: stopping after the candidates in flight (delete it to resume)")
            self._told = True
        return self.REASON


class Reports(Hook):
    """The search's reports (:func:`densenas.viz.write_reports`: ``best_arch.json``, ``leaderboard.md`` /
    ``.csv``, ``rewards.png``, ``pareto.png``) at the end of the run — also when it raised, as long as the
    history holds a row — and, with ``every``, after every ``every`` finished candidates or epochs.

    Args:
        work_dir: where they go; ``None``: the run's work dir.
        every: also write them after each ``every``-th finished candidate (``None``: at the end only).
        **options: passed to :func:`~densenas.viz.write_reports` (``top``, ``metrics``, ``reward_label``,
            ``front``, ``limit``, ``promotion``).

    Raises:
        ValueError: ``every`` is not a positive integer; (in :meth:`before_run`) neither this hook nor the run
            has a work dir.
        TypeError: an option :func:`~densenas.viz.write_reports` does not take.
    """

    OPTIONS = ("top", "metrics", "reward_label", "front", "limit", "promotion")

    def __init__(self, work_dir: str | Path | None = None, *, every: int | None = None, **options: Any):
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ValueError(f"Reports: every must be a positive integer or None, got {every!r}")
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise TypeError(f"Reports: unknown option(s) {unknown}; it takes {list(self.OPTIONS)}")
        self.work_dir = None if work_dir is None else Path(work_dir)
        self.every, self.options = every, options
        self.written: dict[str, Path] = {}  # the files of the last write_reports call
        self._history: Any = None
        self._dir: Path | None = None

    def before_run(self, run: RunInfo) -> None:
        self._dir = self.work_dir or run.work_dir
        if self._dir is None:
            raise ValueError("Reports needs a work dir: give Reports(work_dir) or run(work_dir=...)")
        self._history = run.history

    def write(self) -> dict[str, Path]:
        """Write the reports now (nothing while the history holds no row); returns the files written."""
        from .viz import write_reports

        if self._history is None or not self._history.count(finished_only=False):
            return {}
        self._dir.mkdir(parents=True, exist_ok=True)
        self.written = write_reports(self._history, self._dir, **self.options)
        return self.written

    def after_candidate(self, progress: Progress) -> None:
        if self.every is not None and progress.done % self.every == 0:
            self.write()

    def after_run(self, outcome: Any, error: BaseException | None) -> None:
        self.write()


def tensorboard_available() -> bool:
    """Whether mmengine's ``TensorboardVisBackend`` can write (``tensorboard`` or ``tensorboardX``)."""
    return any(importlib.util.find_spec(m) is not None for m in ("tensorboard", "tensorboardX"))


def _best_reward(p: Progress) -> float | None:
    if p.step is not None:
        return p.best_step.result.reward if p.best_step else None
    return p.best.result.reward if p.best else None


BUILTIN_HOOKS: tuple[type[Hook], ...] = (LogLines, LiveBar, TensorBoard, Callback, TimeBudget, StopFile, Reports)
"""The hooks densenas ships: called first, and their errors stop the run (not subclasses: those are user hooks)."""


def is_builtin(hook: Hook) -> bool:
    """Whether ``hook`` is one of :data:`BUILTIN_HOOKS` (exactly: a subclass is a user hook)."""
    return type(hook) in BUILTIN_HOOKS


def default_hooks(log: Log | None = print, *, live: bool | None = None, work_dir: str | Path | None = None,
                  tensorboard: bool = True, time_budget_s: float | None = None,
                  reports: Reports | Mapping[str, Any] | bool | None = None,
                  on_progress: Callable[[Progress], None] | None = None) -> list[Hook]:
    """The usual hooks of a search, in their order: pass them (plus your own) as ``run(..., hooks=...)``.

    Args:
        log: :class:`LogLines` to this callable (``None``: no lines).
        live: :class:`LiveBar`; ``None``: when stdout is a terminal.
        work_dir: :class:`TensorBoard` scalars go to ``<work_dir>/tb`` (none without a work dir).
        tensorboard: ``False``: no :class:`TensorBoard` hook.
        time_budget_s: a :class:`TimeBudget` of this many seconds (``None``: no limit).
        reports: a :class:`Reports` hook, or ``True`` / a dict of its keyword arguments for one; ``None`` or
            ``False``: none.
        on_progress: a :class:`Callback` calling it with every :class:`~densenas.progress.Progress`.

    Returns:
        ``[LogLines, Callback, LiveBar, TensorBoard, TimeBudget, Reports]``, each where asked for.
    """
    hooks: list[Hook] = []
    if log is not None:
        hooks.append(LogLines(log))
    if on_progress is not None:
        hooks.append(Callback(on_progress))
    if sys.stdout.isatty() if live is None else live:
        hooks.append(LiveBar())
    if tensorboard and work_dir is not None:
        hooks.append(TensorBoard(Path(work_dir) / TB_DIR))
    if time_budget_s is not None:
        hooks.append(TimeBudget(time_budget_s))
    if isinstance(reports, Reports):
        hooks.append(reports)
    elif reports is True:
        hooks.append(Reports())
    elif isinstance(reports, Mapping):
        hooks.append(Reports(**reports))
    elif reports not in (None, False):
        raise TypeError(f"default_hooks: reports must be a Reports, a dict of its options, True or None, "
                        f"got {reports!r}")
    return hooks


class HookList:
    """The hooks of one loop call (module docstring): the built-in ones first, then the others in their
    order; a user hook that raises is switched off with a notice, a built-in one's error is raised.

    Args:
        hooks: :class:`Hook` objects (:func:`default_hooks` and your own).
        info: the run's :class:`RunInfo`, given to :meth:`Hook.before_run` by :meth:`start`.

    Raises:
        TypeError: an element of ``hooks`` is not a :class:`Hook`.
    """

    def __init__(self, hooks: Sequence[Hook] = (), *, info: RunInfo | None = None):
        self.info = info
        for h in hooks:
            if not isinstance(h, Hook):
                raise TypeError(f"hooks: {h!r} is not a densenas.hooks.Hook")
        hooks = list(hooks)
        self.hooks = [h for h in hooks if is_builtin(h)] + [h for h in hooks if not is_builtin(h)]
        for h in self.hooks:
            h._notify = self.note

    def _drop(self, h: Hook) -> None:
        self.hooks = [x for x in self.hooks if x is not h]

    def _call(self, name: str, *args: Any) -> list[Any]:
        """Call ``name`` on every hook in order; the answers of the hooks that did not raise."""
        out = []
        for h in list(self.hooks):
            try:
                out.append(getattr(h, name)(*args))
            except Exception as e:  # noqa: BLE001 - a hook's failure must not cost the search its candidates
                if is_builtin(h):
                    raise
                self._drop(h)
                self.note(f"hook {type(h).__name__} switched off: {name} raised {type(e).__name__}: {e}")
        return out

    def stop_reason(self) -> str | None:
        """The first hook's reason to stop (:meth:`Hook.stop_reason`), or ``None`` to go on (every hook is
        asked, so a failing one is switched off now, not at the next poll)."""
        return next((str(r) for r in self._call("stop_reason") if r), None)

    def seconds_left(self) -> float | None:
        """The smallest :meth:`Hook.seconds_left` of the hooks (``None``: no deadline)."""
        left = [float(s) for s in self._call("seconds_left") if s is not None]
        return min(left) if left else None

    def note(self, msg: str) -> None:
        """A notice to every hook (the log included)."""
        for h in list(self.hooks):
            try:
                h.note(msg)
            except Exception:  # noqa: BLE001 - a failing note is dropped, never recursed into
                if not is_builtin(h):
                    self._drop(h)

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
