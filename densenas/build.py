"""One builder for every search: config -> task, data, backbone, space, strategy, evaluator, loop budget.

``tools/search.py``, the config tests and the benchmarks all call :func:`build_search`, so there is one
dispatch, read here: the config names its task (``task.type``, a ``densenas.task_plugins`` entry point), its space
(``space.type``, a ``densenas.space_plugins`` entry point), its strategy (``strategy.type``) and its evaluator
(``evaluator.type``: ``proxy`` — the two-stage proxy trainer of Nekrasov et al., CVPR 2019 — or
``supernet`` — one-shot DARTS training, Liu et al., ICLR 2019). Every key of every section is checked
before any data is read; an impossible combination is refused with a message naming the keys.

``strategy.warm_start=dict(proxy="naswot", pool=64, take=8)`` (any sampling strategy, the proxy evaluator):
before the first candidate of a fresh search, ``pool`` random archs are ranked by a zero-cost score of
their untrained candidate (:mod:`densenas.zerocost`, :meth:`ProxyTrainer.zero_cost`) and the best ``take``
are proposed first (:meth:`Strategy.seed_with`); the ranking goes to ``<work_dir>/zero_cost.json``.

``strategy.prior=["work_dirs/earlier"]`` (the surrogate): the finished results of earlier searches of the same
space (another dataset, task or budget; read-only, :func:`densenas.history.read_results`) become the
surrogate's transfer prior (:meth:`~densenas.strategies.surrogate.SurrogateSearch.set_prior`).
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from .backbones import build_backbone
from .config import ConfigError, build_dataclass, check_keys, section
from .history import History, HistoryError, history_file, read_results
from .hooks import build_hooks
from .parallel import ParallelCfg, auto_workers
from .plugins import SPACES, PluginError, load
from .promotion import PromotionCfg
from .space import SearchSpace, ShapeSpec
from .strategies import STRATEGIES, Strategy, build_strategy
from .differentiable import DifferentiableSpace
from .task import Task, task_class
from .zerocost import SCORES as ZERO_COST_SCORES
from .zerocost import rank_pool

EVALUATORS = ("proxy", "supernet")
SEARCH_KEYS = {"proxy": {"num_candidates", "time_budget_s", "max_duplicates", "promote", "baselines"},
               "supernet": {"epochs", "time_budget_s"}}
WARM_START = {"proxy": "naswot", "pool": 64, "take": 8}  # strategy.warm_start keys and defaults
WARM_START_STREAM = 14  # the pool's RNG is default_rng([seed, this]): not the strategy's default_rng(seed)

#: ``touch <work_dir>/STOP`` ends a running search after the candidates in flight (resume: delete it first)
STOP_FILE = "STOP"


@dataclass
class Search:
    """Everything one search needs; ``budget`` holds the checked ``search`` section."""

    task: Task
    space: SearchSpace
    strategy: Strategy
    evaluator: Any
    device: torch.device
    seed: int
    budget: dict[str, Any]
    kind: str
    encoder: nn.Module | None = None
    shapes: dict[str, ShapeSpec] = field(default_factory=dict)
    warm_start: dict[str, Any] | None = None
    objective: Any = None  # densenas.evaluation.objective.ObjectiveCfg of a multi-objective search
    parallel: ParallelCfg = field(default_factory=ParallelCfg)  # densenas.parallel: workers, mode, batch
    promotion: PromotionCfg | None = None  # search.promote: longer budgets and seeds for the best
    baselines: tuple[str, ...] = ()  # search.baselines: the space's baseline archs, proposed first
    hooks: list[Any] = field(default_factory=list)  # the config's hooks (densenas.hooks), after the loop's own

    @property
    def front(self) -> tuple[str, str]:
        """The (maximised metric, minimised cost) of the leaderboard's Pareto front."""
        if self.objective is None:
            return "reward", "params"
        return ("metric_reward" if self.objective.target is not None else "reward"), self.objective.cost

    def summary(self) -> str:
        what = (f"{self.budget.get('epochs')} epochs" if self.kind == "supernet"
                else f"{self.budget.get('num_candidates')} candidates")
        return (f"search: task {self.task.name}, space {self.space.name} ({len(self.space.decisions())} "
                f"decisions, <= {self.space.size():.3g} archs), strategy {type(self.strategy).__name__}, "
                f"evaluator {self.kind}, {what}, device {self.device}")

    def loop_budget(self) -> Any:
        """The :class:`~densenas.loop.Budget` of the checked ``search`` (and ``parallel``) sections."""
        from .loop import Budget

        b = self.budget
        if self.kind == "supernet":
            return Budget(epochs=int(b["epochs"]), seed=self.seed)
        return Budget(candidates=int(b.get("num_candidates", 30)), seed=self.seed,
                      max_duplicates=int(b.get("max_duplicates", 200)), mode=self.parallel.mode,
                      batch=self.parallel.batch_size)

    def reports(self) -> Any:
        """The :class:`~densenas.hooks.Reports` hook of this search (its task's metrics, its front)."""
        from .hooks import Reports

        return Reports(metrics=self.task.report_metrics, reward_label=self.task.reward_label,
                       front=self.front if self.kind == "proxy" else None,
                       limit=None if self.objective is None else self.objective.limit, promotion=self.promotion)

    def loop_hooks(self, work_dir: str | Path, log: Callable[[str], None] = print) -> list[Any]:
        """The hooks of the loop: :func:`~densenas.hooks.default_hooks` (log lines, a live bar on a terminal,
        TensorBoard, ``search.time_budget_s``, the reports), a :class:`~densenas.hooks.StopFile` on
        ``<work_dir>/STOP`` (``touch`` it to end the search gracefully), then the config's ``hooks``."""
        from .hooks import StopFile, default_hooks

        return [*default_hooks(log, work_dir=work_dir, time_budget_s=self.budget.get("time_budget_s"),
                               reports=self.reports()), StopFile(STOP_FILE), *self.hooks]

    def run(self, history: Any, work_dir: str | Path, log: Callable[[str], None] = print,
            executor: Any = None) -> Any:
        """Run (or resume) the search through the one loop (:func:`densenas.loop.run`) with
        :meth:`loop_hooks` (the reports are a hook: written also when the run raised); returns the loop's
        :class:`~densenas.loop.Outcome`. ``executor``: where the candidates train
        (:func:`densenas.parallel.make_executor` of :attr:`parallel`; ``None``: here, one at a time)."""
        from .loop import run

        if not history.count(finished_only=False) and history.strategy_state() is None:
            # fresh search only: on resume the queue is in the strategy state
            if self.baselines:
                self.seed_baselines(log)
            if self.warm_start:
                self.seed_warm_start(work_dir, log)
        sampling = self.kind != "supernet"
        return run(self.space, self.strategy, self.evaluator, history, self.loop_budget(), work_dir=work_dir,
                   executor=executor if sampling else None, promotion=self.promotion if sampling else None,
                   hooks=self.loop_hooks(work_dir, log))

    def seed_baselines(self, log: Callable[[str], None] = print) -> list[Any]:
        """Queue the space's own expression of the named hand-designed baselines (``space.baseline_archs()``)
        to be proposed first, so the search starts from them and can only improve on them."""
        archs = baseline_archs(self.space, self.baselines, "search.baselines")
        self.strategy.seed_with(list(archs.values()))
        log(f"baselines: {', '.join(archs)} (as the space expresses them) are proposed first")
        return list(archs.values())

    def seed_warm_start(self, work_dir: str | Path, log: Callable[[str], None] = print) -> list[tuple[Any, float]]:
        """Rank ``warm_start.pool`` random archs by ``evaluator.zero_cost`` and queue the best ``take`` on the
        strategy (archs whose score failed are never queued); writes ``<work_dir>/zero_cost.json``."""
        ws, t0 = self.warm_start, time.perf_counter()
        rng = np.random.default_rng([self.seed, WARM_START_STREAM])
        ranked = rank_pool(self.space, lambda a: self.evaluator.zero_cost(a, ws["proxy"], seed=self.seed),
                           ws["pool"], rng, log=log)
        top = [a for a, s in ranked[:ws["take"]] if math.isfinite(s)]
        self.strategy.seed_with(top)
        seconds = time.perf_counter() - t0
        path = Path(work_dir) / "zero_cost.json"
        rows = [{"rank": i + 1, "score": s if math.isfinite(s) else None, "queued": i < len(top),
                 "arch": a.to_dict()} for i, (a, s) in enumerate(ranked)]
        path.write_text(json.dumps({"proxy": ws["proxy"], "pool": ws["pool"], "take": ws["take"], "seed": self.seed,
                                    "seconds": seconds, "ranked": rows}, indent=1))
        log(f"warm start: ranked {len(ranked)} random archs by {ws['proxy']} in {seconds:.1f}s "
            f"({seconds / max(len(ranked), 1):.2f}s each); the top {len(top)} are proposed first -> {path}")
        return ranked


@dataclass
class SupernetCfg:
    """``evaluator=dict(type="supernet")``: the supernet trainer takes its hyper-parameters from the DARTS
    strategy (``strategy=dict(type="darts", w_lr=..., batch_size=...)``); no keys of its own."""


def evaluator_class(kind: str) -> tuple[Callable[..., Any], type]:
    """The evaluator builder and its config dataclass for ``evaluator.type``."""
    if kind == "proxy":
        from .evaluation.proxy import ProxyCfg, ProxyTrainer

        return ProxyTrainer, ProxyCfg
    from .evaluation.supernet import trainer_for_task

    return trainer_for_task, SupernetCfg


def resolve_device(name: str | None) -> torch.device:
    """``auto`` (default): CUDA when present, else CPU."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def space_class(kind: Any, source: str = "config") -> type[SearchSpace]:
    """The :class:`SearchSpace` subclass named ``kind`` (``space.type``)."""
    try:
        return load(SPACES, kind, "space.type")
    except PluginError as e:
        raise ConfigError(f"{source}: {e}") from None


def _typed(cfg, name: str, source: str) -> tuple[str, dict[str, Any]]:
    """A section's ``type`` (required) and its other keys."""
    sec = dict(section(cfg, name, {}) or {})
    kind = sec.pop("type", None)
    if kind is None:
        raise ConfigError(f"{source}: '{name}.type' is required")
    return kind, sec


def plan_search(cfg, resume: bool = False) -> dict[str, Any]:
    """Check every section of a search config without reading data; returns the checked pieces.

    ``resume``: the search continues a history, whose strategy state holds the prior it started with, so
    ``strategy.prior`` files that are gone since are not an error (:func:`check_prior`).

    Raises:
        ConfigError: unknown keys or values, or an impossible task / space / strategy / evaluator
            combination; the message names the file and the keys.
    """
    source = cfg.filename or "config"
    task_type, task_opts = _typed(cfg, "task", source)
    try:
        tcls = task_class(task_type)
    except PluginError as e:
        raise ConfigError(f"{source}: {e}") from None
    check_keys("task", task_opts, tcls, source=source)
    space_type, space_opts = _typed(cfg, "space", source)
    scls = space_class(space_type, source)
    check_keys("space", space_opts, scls, source=source)
    kind = getattr(scls, "output_kind", "")
    if space_type not in tcls.spaces and kind not in tcls.accepts:
        raise ConfigError(f"{source}: task.type={task_type!r} cannot search space.type={space_type!r}: the space "
                          f"outputs {kind or 'an undeclared kind'!r} (output_kind), the task accepts "
                          f"{list(tcls.accepts)} (its spaces: {list(tcls.spaces)})")
    strat_type, strat_opts = _typed(cfg, "strategy", source)
    warm_start = strat_opts.pop("warm_start", None)
    prior = strat_opts.pop("prior", None)
    if strat_type not in STRATEGIES:
        raise ConfigError(f"{source}: 'strategy.type' is {strat_type!r}; available: {sorted(STRATEGIES)}")
    ev_type, ev_opts = _typed(cfg, "evaluator", source)
    if ev_type not in EVALUATORS:
        raise ConfigError(f"{source}: 'evaluator.type' is {ev_type!r}; available: {list(EVALUATORS)}")
    one_shot = bool(getattr(STRATEGIES[strat_type], "one_shot", False))
    differentiable = issubclass(scls, DifferentiableSpace)
    if one_shot != (ev_type == "supernet") or (ev_type == "supernet") != differentiable:
        raise ConfigError(
            f"{source}: strategy.type={strat_type!r}, evaluator.type={ev_type!r} and space.type={space_type!r} "
            f"do not fit: a one-shot strategy (darts) needs evaluator.type='supernet' and a differentiable "
            f"space; a sampling strategy needs evaluator.type='proxy' and a space of separately trained "
            f"candidates")
    check_keys("strategy", strat_opts, STRATEGIES[strat_type], source=source)
    ecls, ecfg_cls = evaluator_class(ev_type)
    ecfg = build_dataclass("evaluator", ecfg_cls, ev_opts, source)
    warm_start = check_warm_start(warm_start, strat_type, one_shot, ev_type, ecls, source)
    prior = check_prior(prior, strat_type, source, must_exist=not resume)
    budget = dict(section(cfg, "search", {}) or {})
    check_keys("search", budget, lambda **kw: None, extra=SEARCH_KEYS[ev_type], source=source)
    promotion, baselines = budget.pop("promote", None), _baseline_names(budget.pop("baselines", None), source)
    if promotion is not None:
        if not isinstance(promotion, Mapping):
            raise ConfigError(f"{source}: 'search.promote' must be a dict like dict(rungs=1, top=4, scale=3, "
                              f"seeds=2), got {promotion!r}")
        promotion = build_dataclass("search.promote", PromotionCfg, dict(promotion), source)
    if ev_type == "supernet" and "epochs" not in budget:
        raise ConfigError(f"{source}: 'search.epochs' is required with evaluator.type='supernet'")
    backbone = section(cfg, "backbone", None)
    if ev_type == "supernet" and backbone:
        raise ConfigError(f"{source}: 'backbone' is unused with evaluator.type='supernet' (the supernet is the "
                          f"whole network); remove the section")
    objective = section(cfg, "objective", None)
    if objective is not None:
        if ev_type != "proxy":
            raise ConfigError(f"{source}: 'objective' needs evaluator.type='proxy' (a one-shot search trains no "
                              f"candidate of its own to cost)")
        from .evaluation.objective import ObjectiveCfg

        objective = build_dataclass("objective", ObjectiveCfg, objective, source)
    if promotion is not None and promotion.cost is None and objective is not None:
        promotion.cost = objective.cost  # ties are broken by what the search minimises
    parallel = parallel_cfg(cfg)
    if parallel.use_ray and one_shot:
        raise ConfigError(f"{source}: 'parallel' with workers > 1 or an address needs a sampling strategy; "
                          f"strategy.type={strat_type!r} trains one supernet (set parallel.workers=1)")
    hooks = build_hooks(cfg.get("hooks"), source)  # imported and constructed now: a bad hook fails in a second
    return dict(source=source, task=(tcls, task_opts), space=(scls, space_opts), strategy=(strat_type, strat_opts),
                evaluator=(ev_type, ecls, ecfg), budget=budget, backbone=backbone or {"type": "mobilenet_v2"},
                one_shot=one_shot, warm_start=warm_start, prior=prior, objective=objective, parallel=parallel,
                promotion=promotion, baselines=baselines, hooks=hooks)


def parallel_cfg(cfg) -> ParallelCfg:
    """The checked ``parallel`` section (:class:`densenas.parallel.ParallelCfg`; defaults when absent), with
    ``workers="auto"`` resolved for this machine (:func:`densenas.parallel.auto_workers`; the reason is kept
    in ``auto_reason`` for the log)."""
    source = cfg.filename or "config"
    pcfg = build_dataclass("parallel", ParallelCfg, section(cfg, "parallel", {}) or {}, source)
    if pcfg.workers != "auto":
        return pcfg
    one_shot = (section(cfg, "evaluator", {}) or {}).get("type") == "supernet"
    device = resolve_device(cfg.get("device", "auto"))
    gpus = 0
    if device.type == "cuda":
        gpus = torch.cuda.device_count() if device.index is None else 1
    try:
        n, why = auto_workers(gpus, one_shot)
    except ValueError as e:
        raise ConfigError(f"{source}: parallel.workers='auto': {e}") from None
    objective = section(cfg, "objective", None) or {}
    if gpus == 0 and n > 1 and objective.get("cost") == "latency_ms" and not objective.get("latency_table"):
        # a candidate timed while other workers train on the same cores gets their latency, not its own
        n, why = 1, "latency measured on this CPU: one candidate at a time, so no other worker disturbs the timing"
    extra = {"gpus_per_worker": 1} if gpus > 1 and n > 1 and not pcfg.gpus_per_worker else {}
    out = dataclasses.replace(pcfg, workers=n, **extra)
    out.auto_reason = why
    return out


def check_prior(given: Any, strat_type: str, source: str, must_exist: bool = True) -> list[Path] | None:
    """The checked ``strategy.prior``: earlier searches' work dirs or ``history.sqlite`` files whose results
    the surrogate learns from (:meth:`densenas.strategies.surrogate.SurrogateSearch.set_prior`).

    ``must_exist=False`` (a resumed search): a missing file is kept in the list, for :func:`build_search` to
    report; the resumed strategy's state holds the prior it started with.

    Raises:
        ConfigError: not a path or list of paths, a strategy other than the surrogate, or (``must_exist``) a
            missing file.
    """
    if given is None or given == []:
        return None
    key = "strategy.prior"
    items = [given] if isinstance(given, (str, Path)) else given
    if not isinstance(items, (list, tuple)) or not all(isinstance(p, (str, Path)) for p in items):
        raise ConfigError(f"{source}: '{key}' must be a search's work dir or history.sqlite, or a list of them, "
                          f"got {given!r}")
    if strat_type != "surrogate":
        raise ConfigError(f"{source}: '{key}' is read by the surrogate strategy only, not {strat_type!r}")
    paths = []
    for p in items:
        path = history_file(p)
        if not path.is_file() and must_exist:
            raise ConfigError(f"{source}: '{key}': no history at {p} (give a search's work dir or its "
                              f"history.sqlite)")
        paths.append(path)
    return paths


def check_warm_start(given: Any, strat_type: str, one_shot: bool, ev_type: str, ecls: Any, source: str
                     ) -> dict[str, Any] | None:
    """The checked ``strategy.warm_start`` section with its defaults filled in (``None``: no warm start).

    Raises:
        ConfigError: not a dict, an unknown key or proxy, ``pool`` / ``take`` not positive integers,
            ``take > pool``, a one-shot strategy, or an evaluator without ``zero_cost``.
    """
    if given is None:
        return None
    key = "strategy.warm_start"
    if not isinstance(given, Mapping):
        raise ConfigError(f"{source}: '{key}' must be a dict like dict(proxy='naswot', pool=64, take=8), "
                          f"got {given!r}")
    check_keys(key, given, lambda **kw: None, extra=WARM_START, source=source)
    ws = {**WARM_START, **given}
    if not isinstance(ws["proxy"], str) or ws["proxy"] not in ZERO_COST_SCORES:
        raise ConfigError(f"{source}: '{key}.proxy' is {ws['proxy']!r}; available: {sorted(ZERO_COST_SCORES)}")
    for name in ("pool", "take"):
        if isinstance(ws[name], bool) or not isinstance(ws[name], int) or ws[name] < 1:
            raise ConfigError(f"{source}: '{key}.{name}' must be a positive integer, got {ws[name]!r}")
    if ws["take"] > ws["pool"]:
        raise ConfigError(f"{source}: '{key}.take' ({ws['take']}) is larger than '{key}.pool' ({ws['pool']})")
    if one_shot:
        raise ConfigError(f"{source}: '{key}' needs a sampling strategy; strategy.type={strat_type!r} is one-shot "
                          f"(it trains one supernet and proposes no candidates to rank)")
    if not callable(getattr(ecls, "zero_cost", None)):
        raise ConfigError(f"{source}: '{key}' needs an evaluator with zero_cost(); evaluator.type={ev_type!r} "
                          f"has none")
    return ws


def baseline_archs(space: SearchSpace, names: Any, key: str = "search.baselines") -> dict[str, Any]:
    """The archs of ``space`` that express the named baselines (``names``: a tuple of names, or ``("all",)``
    for every baseline the space declares).

    Raises:
        ConfigError: the space declares no baselines, or not one of the names (the message lists them).
    """
    declared = getattr(space, "baseline_archs", None)
    have = dict(declared()) if callable(declared) else {}
    if not have:
        raise ConfigError(f"'{key}': space {space.name!r} cannot express a hand-designed baseline (its "
                          f"op set has none; see the space's docs for an extended variant)")
    if tuple(names) == ("all",):
        return have
    missing = [n for n in names if n not in have]
    if missing:
        raise ConfigError(f"'{key}': space {space.name!r} cannot express {missing}; it can express {sorted(have)}")
    return {n: have[n] for n in names}


def _baseline_names(value: Any, source: str) -> tuple[str, ...]:
    if value is None or value is False:
        return ()
    if value is True:
        return ("all",)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{source}: 'search.baselines' must be True (every baseline the space expresses) or a "
                          f"list of baseline names, got {value!r}")
    return tuple(value)


def make_space(scls: type[SearchSpace], opts: dict[str, Any], task: Task, source: str) -> SearchSpace:
    """The space with the arguments the task's data implies (``num_classes`` ...) filled in."""
    params = inspect.signature(scls).parameters
    kwargs = {k: v for k, v in task.space_defaults().items() if k in params and k not in opts}
    try:
        return scls(**opts, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: space ({scls.__name__}): {e}") from None


def build_search(cfg, work_dir: str | Path | None = None, log: Callable[[str], None] = print,
                 build_evaluator: bool = True, resume: bool = False) -> Search:
    """Check ``cfg``, read its data and build the objects of the search it describes.

    Args:
        cfg: a loaded config (:func:`densenas.config.load_config`).
        work_dir: where caches (features, teacher, supernet checkpoint) go; ``None``: memory only.
        log: progress messages.
        build_evaluator: ``False`` stops after the space and strategy (config tests).
        resume: the search continues its history (``tools/search.py --resume``): ``strategy.prior`` files
            that are gone are skipped, since the strategy state restored from the history holds the prior.
    """
    plan = plan_search(cfg, resume=resume)
    source = plan["source"]
    tcls, task_opts = plan["task"]
    try:
        task = tcls(**task_opts)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: task ({tcls.name}): {e}") from None
    seed, device = int(cfg.get("seed", 0)), resolve_device(cfg.get("device", "auto"))
    task.build_data(dict(section(cfg, "data", {}) or {}), source=source, log=log)
    space = make_space(*plan["space"], task=task, source=source)
    strat_type, strat_opts = plan["strategy"]
    try:
        strategy = build_strategy({"type": strat_type, "seed": seed, **strat_opts}, space)
    except (TypeError, ValueError) as e:  # a value the constructor refuses (lr=-1), named as for the space
        raise ConfigError(f"{source}: strategy ({strat_type}): {e}") from None
    gone = [str(p) for p in plan.get("prior") or [] if not p.is_file()]
    if gone:  # resume only (plan_search refuses it otherwise): the history's strategy state has the prior
        hist = Path(work_dir) / "history.sqlite" if work_dir is not None else None
        state = None
        if hist is not None and hist.is_file():
            with History(hist) as h:
                state = h.strategy_state()
        if not (state or {}).get("prior"):
            raise ConfigError(f"{source}: strategy.prior: {', '.join(gone)} not found, and "
                              f"{hist or 'the work dir'} holds no strategy state with the prior (the search was "
                              f"stopped before its first candidate): restore the file(s) to resume")
        log(f"prior: {', '.join(gone)} not found since the search started; the resumed strategy keeps the "
            f"{len(state['prior'])} prior results its state recorded")
        plan["prior"] = None
    if plan.get("prior"):
        try:
            pairs = [pair for path in plan["prior"] for pair in read_results(path)]
        except HistoryError as e:
            raise ConfigError(f"{source}: strategy.prior: {e}") from None
        kept = strategy.set_prior(pairs)
        log(f"prior: {kept} results of {len(plan['prior'])} earlier search(es) "
            f"({', '.join(str(p) for p in plan['prior'])})"
            + (f"; {len(pairs) - kept} not valid in this space, left out" if kept < len(pairs) else ""))
        if not kept:
            raise ConfigError(f"{source}: strategy.prior: none of the {len(pairs)} results of "
                              f"{[str(p) for p in plan['prior']]} is an arch of this space ({space.name})")
    ev_type, ecls, ecfg = plan["evaluator"]
    search = Search(task, space, strategy, None, device, seed, plan["budget"], ev_type,
                    warm_start=plan["warm_start"], objective=plan["objective"], parallel=plan["parallel"],
                    promotion=plan["promotion"], baselines=plan["baselines"], hooks=plan["hooks"])
    if search.promotion is not None and search.promotion.final_iters:
        if not task.test_metric[0]:
            raise ConfigError(f"{source}: search.promote.final_iters: task {task.name!r} names no headline metric "
                              f"(Task.test_metric) to score the fine-tuned candidates on")
        search.promotion = dataclasses.replace(search.promotion, final_metric=tuple(task.test_metric))
    if search.baselines:  # refused now, before any data or feature is computed for the search
        seeded = baseline_archs(space, search.baselines, f"{source}: search.baselines")
        if search.promotion is not None and search.promotion.baselines:
            # the baselines run at every promoted rung (densenas/promotion.py), so the pick is made against them
            search.promotion = dataclasses.replace(search.promotion, carry=tuple(a.key for a in seeded.values()))
    if not build_evaluator:
        return search
    cache = None if work_dir is None else Path(work_dir) / "cache"
    if ev_type == "supernet":
        search.evaluator = ecls(task, space, epochs=int(plan["budget"]["epochs"]), cfg=strategy.cfg, seed=seed,
                                device=device)
        return search
    try:
        encoder, shapes = build_backbone(plan["backbone"])
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None
    encoder = encoder.eval().to(device)
    task.prepare(encoder, shapes, device=device, work_dir=None if work_dir is None else Path(work_dir), seed=seed,
                 log=log)
    search.encoder, search.shapes = encoder, shapes
    search.evaluator = ecls(task, space, encoder, shapes, ecfg, device=device, cache_dir=cache, log=log)
    if search.objective is not None:
        from .evaluation.objective import CostAware

        search.evaluator = CostAware(search.evaluator, search.objective, tuple(task.images("val").shape[-2:]))
    return search

