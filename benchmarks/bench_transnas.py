"""Strategies side by side on TransNAS-Bench-101 micro (Duan et al., CVPR 2021), a tabular benchmark.

Compares every sampling strategy of :data:`densenas.strategies.STRATEGIES` (random search; REINFORCE,
Zoph & Le 2017 / Nekrasov et al. 2019; regularized evolution, Real et al. 2019; the surrogate-guided
search, PNAS / BANANAS / SMAC style; Optuna's samplers, Akiba et al. 2019) on the measured validation
results of the 711 distinct cells of the micro space (6 edges x {none, skip_connect, conv1x1, conv3x3};
archs missing from the table are invalid), on its four dense tasks.

A strategy named ``NAME+params`` or ``NAME+flops`` is warm-started (``Strategy.seed_with``) with the
``--ws-take`` best of ``--ws-pool`` random archs ranked by the table's parameter count or FLOPs: the
zero-cost proxies a tabular benchmark can offer (Abdelfattah et al., "Zero-Cost Proxies for Lightweight
NAS", ICLR 2021, count both; on our real segmentation histories #params ranked better than NASWOT,
``benchmarks/bench_zerocost.py``). The warm-start archs are trained, so they count as queries.

A strategy named ``NAME+prior`` (the surrogate) is given the results of an earlier search of the same space on
another task (``--prior TASK:N``: ``N`` random archs of TASK's table with their ``val``, a different draw per
seed; with ``--compose``, ``TASK`` is a comma-separated list of tasks, one per block, e.g. the target's blocks
in another order), through ``SurrogateSearch.set_prior``: a transfer prior (issue #24, item 7). The prior's
archs are not queries; proposing one of them is.

Only distinct archs count as queries: a re-proposed arch is answered from a cache (and still told to the
strategy) without counting, as :func:`densenas.loop.run` answers it from the history. Reported: mean and
standard error over seeds of the regret (best ``val`` in the table minus best ``val`` found so far), its
ratio to random search's at the same budget, and each strategy's proposal time (ms per query, on one
thread).

A table of our own (``--history``): the finished candidates of the project's own searches, e.g. the
default aux-cell search (``configs/search/auxcell_proxy.py``, 16 decisions of
:class:`densenas.decoders.auxcell.AuxCellSpace`), read with :func:`load_history_space`: the union of their archs is
the table (an arch trained several times gets the mean of its rewards; its #params and MAdds from the
history's ``cost`` feed the ``+params`` / ``+flops`` warm starts), and archs outside it are invalid.
Its limits: it is small (the five 40-candidate default searches of seeds 0/1 hold 149 distinct archs) and
a *biased* sample, the archs a surrogate search chose (many near the best), not a uniform draw of the
space, so random search over it is a stronger baseline than over the space; its rewards are single proxy
trainings (two trainings of one arch can differ by 0.1); and strategies that generate archs rather than
pick them measure little there: REINFORCE's policy samples almost never land on one of the 149 listed
archs among the 8.5e9 of the space, so it falls back to uniform draws of the table (random search), and
evolution's one-decision mutations (:class:`ListedTableSpace`) soon exhaust the few listed neighbours and
re-propose known archs until the proposal cap stops them (the ``capped`` column). The history files are
copied to a temporary directory before they are opened, so a running search's files are never written to.

A synthetic many-decision table (``--compose``): several TransNAS micro cells side by side, one 6-decision
block per listed task (``--compose segmentsemantic,normal,autoencoder,room_layout``: 24 decisions, 711^4
valid archs), reward the mean of the blocks' standardised ``val`` (:class:`ComposedSpace`; every value
measured, the sum an assumption: the blocks do not interact). Valid archs are dense in its product space,
so REINFORCE and evolution work there as on a real space.

Usage::

    python benchmarks/bench_transnas.py                         # segmentsemantic, 20 seeds, 100 queries
    python benchmarks/bench_transnas.py --task all --seeds 50
    python benchmarks/bench_transnas.py --strategies random,surrogate,gp-ucb=surrogate \\
        --kw 'gp-ucb={"acquisition": "ucb"}'
    python benchmarks/bench_transnas.py --history work_dirs/auto_default work_dirs/auto_s1 \\
        --budget 50 --at 5,10,25,50
    python benchmarks/bench_transnas.py --compose segmentsemantic,normal,autoencoder,room_layout \\
        --budget 50 --at 10,25,50
    python benchmarks/bench_transnas.py --strategies random,surrogate,surrogate+prior --prior normal:50 \\
        --budget 50 --at 5,10,25,50
"""
from __future__ import annotations

import argparse
import ast
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# OpenMP threads that spin while waiting make torch on a busy 2-core machine 5-10x slower (measured);
# sleeping waits cost nothing measurable when the machine is idle. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402 (after OMP_WAIT_POLICY)
from threadpoolctl import threadpool_limits  # noqa: E402

from densenas.arch import Arch, Decision, InvalidArch  # noqa: E402
from densenas.build import WARM_START_STREAM  # noqa: E402
from densenas.history import History, history_file  # noqa: E402
from densenas.result import Result  # noqa: E402
from densenas.space import SearchSpace, TableSpace  # noqa: E402
from densenas.strategies import build_strategy  # noqa: E402

OPS = ("none", "skip_connect", "conv1x1", "conv3x3")  # op ids 0..3 of TransNAS-Bench-101 micro
DEFAULT_TABLE = ROOT.parent / "shared" / "benchmarks" / "transnas101_micro_dense.json"
STRATEGIES = ("random", "reinforce", "evolution", "optuna", "surrogate", "surrogate+params")


def load_space(table_path: Path, task: str) -> tuple[TableSpace, dict[str, dict[str, float]]]:
    """The micro space restricted to the archs of ``task``, and ``Arch.key -> {val, params, flops}``."""
    tasks = json.loads(Path(table_path).read_text())["tasks"]
    if task not in tasks:
        raise SystemExit(f"task {task!r} not in {table_path}; have {sorted(tasks)}")
    decisions = [Decision(f"edge{i}", OPS) for i in range(6)]
    space = TableSpace("transnas101_micro", decisions, table={})
    rows: dict[str, dict[str, float]] = {}
    for ops, entry in tasks[task].items():
        arch = space.from_indices(ast.literal_eval(ops))
        rows[arch.key] = {k: float(v) for k, v in entry.items()}
    space.table = {k: r["val"] for k, r in rows.items()}
    return space, rows


class ListedTableSpace(TableSpace):
    """A :class:`TableSpace` whose ``mutate`` picks among the listed one-decision neighbours directly.

    ``SearchSpace.mutate`` redraws a random one-decision change until it is valid (up to 1000 tries),
    which on a sparse table (149 archs among 8.5e9) costs seconds per proposal and then fails. This draws
    from the same distribution, a valid change ``(decision, option)`` with probability proportional to
    ``1 / (n_decisions * (options - 1))``, and raises the same ``RuntimeError`` when there is none.
    """

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        children, p = self._children(arch)
        if not children:
            raise RuntimeError(f"space {self.name!r}: no valid mutation of {arch}")
        return children[int(rng.choice(len(children), p=p))]

    def _children(self, arch: Arch) -> tuple[list[Arch], np.ndarray]:
        """The listed one-decision neighbours of ``arch`` and their probabilities (cached per table)."""
        cache = getattr(self, "_mutations", None)
        if cache is None or cache[0] is not self.table:
            cache = self._mutations = (self.table, {})
        if arch.key not in cache[1]:
            children, weights = [], []
            for d in self.decisions():
                for option in d.options if len(d) > 1 else ():
                    if option != arch[d.name]:
                        child = arch.replace(**{d.name: option})
                        if self.table is None or child.key in self.table:
                            children.append(child)
                            weights.append(1.0 / (len(d) - 1))
            w = np.asarray(weights)
            cache[1][arch.key] = (children, w / w.sum() if len(w) else w)
        return cache[1][arch.key]


class ComposedSpace(SearchSpace):
    """Several TransNAS-Bench-101 micro cells side by side: block ``b`` is a cell of the table of
    ``tasks[b]``, 6 decisions each; an arch is valid when every block is a valid cell of its table.

    A synthetic many-decision benchmark built only from measured values (see :func:`load_composed`):
    the reward is the mean over blocks of each block's standardised ``val``, an additive function of
    low-dimensional measured landscapes, the construction of Kandasamy, Schneider & Poczos, "High
    Dimensional Bayesian Optimisation and Bandits via Additive Models" (ICML 2015). Its limit: the blocks
    do not interact, which favours models with an additive part (the surrogate's linear kernel) over a
    real network whose cells do.
    """

    name = "transnas101_composed"

    def __init__(self, blocks: list[dict[tuple[int, ...], float]]):
        self.blocks = blocks
        self.cells = [sorted(b) for b in blocks]
        self._decisions = [Decision(f"b{b}.edge{i}", OPS) for b in range(len(blocks)) for i in range(6)]

    def decisions(self) -> list[Decision]:
        return self._decisions

    def split(self, arch: Arch) -> list[tuple[int, ...]]:
        """The per-block op-index tuples of ``arch``."""
        idx = arch.indices(self._decisions)
        return [tuple(idx[6 * b:6 * b + 6]) for b in range(len(self.blocks))]

    def check(self, arch: Arch) -> None:
        super().check(arch)
        for b, cell in enumerate(self.split(arch)):
            if cell not in self.blocks[b]:
                raise InvalidArch(f"block {b} cell {cell} is not in its table")

    def sample(self, rng: np.random.Generator) -> Arch:
        """Uniform over valid archs: a uniform valid cell per block."""
        return self.from_indices([i for cells in self.cells for i in cells[int(rng.integers(len(cells)))]])

    def size(self) -> int:
        return int(np.prod([len(c) for c in self.cells], dtype=np.float64))


class ComposedRows(Mapping):
    """``Arch.key -> {val, params, flops}`` of a :class:`ComposedSpace`, computed on lookup."""

    def __init__(self, space: ComposedSpace, columns: list[dict[tuple[int, ...], dict[str, float]]]):
        self.space, self.columns = space, columns

    def __getitem__(self, key: str) -> dict[str, float]:
        arch = Arch.from_json(key)
        rows = [self.columns[b][cell] for b, cell in enumerate(self.space.split(arch))]
        return {k: float(np.mean([r[k] for r in rows])) for k in ("val", "params", "flops")}

    def __iter__(self) -> Iterator[str]:
        raise TypeError("a composed table is not enumerated")

    def __len__(self) -> int:
        return self.space.size()


def load_composed(table_path: Path, tasks: list[str]) -> tuple[ComposedSpace, ComposedRows, float]:
    """The :class:`ComposedSpace` of ``tasks`` (one block per entry; repeats allowed), its rows and best val.

    Each block's ``val`` is standardised over its table's 711 cells (``(val - mean) / std``), so blocks of
    different tasks weigh alike and the regret is in units of a table's standard deviation; ``params``
    and ``flops`` are the mean over blocks (for the ``+params`` / ``+flops`` warm starts).
    """
    columns, blocks = [], []
    for task in tasks:
        _, rows = load_space(table_path, task)
        vals = np.asarray([r["val"] for r in rows.values()])
        mean, std = float(vals.mean()), float(vals.std())
        col = {}
        for key, r in rows.items():
            cell = tuple(OPS.index(v) for _, v in sorted(json.loads(key)["choices"].items(),
                                                          key=lambda kv: int(kv[0][4:])))
            col[cell] = {**r, "val": (r["val"] - mean) / std}
        columns.append(col)
        blocks.append({c: r["val"] for c, r in col.items()})
    space = ComposedSpace(blocks)
    top = float(np.mean([max(b.values()) for b in blocks]))
    return space, ComposedRows(space, columns), top


def auxcell_decisions() -> list[Decision]:
    """The 16 decisions of the default aux-cell space (``configs/search/auxcell_proxy.py``: 3 cells,
    2 blocks per cell, 4 encoder levels; the decisions do not depend on classes or width)."""
    from densenas.decoders.auxcell import AuxCellSpace

    return AuxCellSpace(num_classes=6, width=48).decisions()


def load_history_space(paths: list[str | Path], decisions: list[Decision] | None = None,
                       name: str = "auxcell") -> tuple[TableSpace, dict[str, dict[str, float]]]:
    """A :class:`TableSpace` over the finished archs of search histories, with their measured rewards.

    Each history is copied to a temporary directory and read there (:class:`densenas.history.History`
    opens its file for writing, and the original may belong to a running search). Successful
    candidates with a finite reward of space ``name`` are kept; an arch trained several times (the same
    arch in several histories) gets the mean of its rewards, #params and MAdds. See the module docstring
    for what such a table can and cannot show.

    Args:
        paths: history files or work dirs holding ``history.sqlite``.
        decisions: the space's decisions (default: :func:`auxcell_decisions`); every arch must fit them.
        name: the space name the candidates' archs carry.

    Returns:
        The space (its table: ``Arch.key -> mean reward``) and ``Arch.key -> {val, params, flops, runs}``
        (``params`` / ``flops``: the history's ``cost["params"]`` / ``cost["madds"]``, NaN when absent).

    Raises:
        SystemExit: a path holds no history, an arch does not fit ``decisions``, or no candidate is left.
    """
    decisions = list(decisions) if decisions is not None else auxcell_decisions()
    space = ListedTableSpace(name, decisions, table={})
    runs: dict[str, list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_history_") as tmp:
        for i, path in enumerate(paths):
            src = history_file(path)
            if not src.is_file():
                raise SystemExit(f"--history {path}: no history file {src}")
            copy = Path(tmp) / f"{i}.sqlite"
            shutil.copyfile(src, copy)
            for suffix in ("-wal", "-shm"):  # a live search's committed rows may still sit in its WAL
                if Path(str(src) + suffix).is_file():
                    shutil.copyfile(str(src) + suffix, str(copy) + suffix)
            with History(copy) as history:
                for cand in history.finished():
                    res = cand.result
                    if cand.arch.space != name or res is None or not res.ok or res.reward is None \
                            or not math.isfinite(res.reward):
                        continue
                    try:
                        arch = space.from_indices(cand.arch.indices(decisions))
                    except InvalidArch as e:
                        raise SystemExit(f"--history {path}: candidate {cand.id} does not fit the "
                                         f"{len(decisions)} decisions: {e}") from None
                    cost = res.cost or {}
                    runs.setdefault(arch.key, []).append(
                        (float(res.reward), float(cost.get("params", math.nan)), float(cost.get("madds", math.nan))))
    if not runs:
        raise SystemExit(f"--history: no successful {name!r} candidate in {[str(p) for p in paths]}")
    rows = {k: {"val": float(np.mean([r for r, _, _ in v])), "params": float(np.mean([p for _, p, _ in v])),
                "flops": float(np.mean([f for _, _, f in v])), "runs": float(len(v))} for k, v in runs.items()}
    space.table = {k: r["val"] for k, r in rows.items()}
    return space, rows


PRIOR_STREAM = 7919  # the prior's random draw: its own RNG stream per seed


def draw_prior(space: SearchSpace, rows: Mapping[str, dict[str, float]], n: int, seed: int) -> list[tuple[Arch, float]]:
    """``n`` distinct random archs of an earlier search's table with their ``val`` (an earlier search's
    history of ``n`` candidates, uniformly drawn)."""
    rng = np.random.default_rng([int(seed), PRIOR_STREAM])
    archs: dict[str, Arch] = {}
    for _ in range(100 * n):
        if len(archs) == n:
            break
        a = space.sample(rng)
        archs.setdefault(a.key, a)
    return [(a, rows[k]["val"]) for k, a in archs.items()]


def run_search(cfg: dict[str, Any], space: TableSpace, rows: dict[str, dict[str, float]], budget: int,
               max_proposals: int, warm: tuple[str, int, int] | None = None,
               prior: list[tuple[Arch, float]] | None = None) -> tuple[np.ndarray, int, int, float]:
    """Best ``val`` so far after each distinct query (padded if ``max_proposals`` ran out first).

    Args:
        warm: ``(table column, pool, take)``: seed the strategy with the ``take`` archs of a random
            ``pool`` that score highest on that column (a zero-cost proxy).

    Returns:
        The best-so-far curve of length ``budget``, proposals made, distinct archs queried (below
        ``budget`` when the proposal cap stopped the search) and seconds spent in ``propose``.
    """
    strategy = build_strategy(cfg, space)
    if warm is not None:
        column, pool, take = warm
        rng = np.random.default_rng([int(cfg["seed"]), WARM_START_STREAM])  # as a search's warm start
        archs = list({a.key: a for a in (space.sample(rng) for _ in range(pool))}.values())
        strategy.seed_with(sorted(archs, key=lambda a: -rows[a.key][column])[:take])
    if prior is not None:
        if not hasattr(strategy, "set_prior"):
            raise SystemExit(f"strategy {cfg['type']!r} takes no prior (the surrogate does)")
        strategy.set_prior(prior)
    cache: dict[str, Result] = {}
    curve: list[float] = []
    best, proposals, spent = -np.inf, 0, 0.0
    while len(curve) < budget and proposals < max_proposals:
        t0 = time.perf_counter()
        arch: Arch = strategy.propose()
        spent += time.perf_counter() - t0
        proposals += 1
        result = cache.get(arch.key)
        if result is None:
            result = cache[arch.key] = Result(reward=rows[arch.key]["val"])
            best = max(best, result.reward)
            curve.append(best)
        strategy.observe(arch, result)
    distinct = len(curve)
    curve += [best] * (budget - distinct)
    return np.asarray(curve), proposals, distinct, spent


def parse_strategies(text: str) -> list[tuple[str, str, str | None]]:
    """``label[=type]`` items -> ``(label, strategy type, warm-start column or None)``."""
    out = []
    for item in text.split(","):
        label, _, kind = item.partition("=")
        kind = kind or label
        base, _, column = kind.partition("+")
        if column and column not in ("params", "flops", "prior"):
            raise SystemExit(f"{item}: '+{column}' must be '+params' or '+flops' (warm starts) or '+prior'")
        out.append((label, base, column or None))
    return out


def bench_task(title: str, space: SearchSpace, rows: Mapping[str, dict[str, float]],
               strategies: list[tuple[str, str, str | None]], args: argparse.Namespace,
               extra: dict[str, dict[str, Any]], top: float | None = None) -> dict[str, Any]:
    """Run every strategy on one table; print and return the regret table.

    Args:
        top: the best ``val`` of the table (default: the maximum over ``rows``).
    """
    top = max(r["val"] for r in rows.values()) if top is None else top
    print(f"\n{title}: {len(rows):.4g} archs, {len(space.decisions())} decisions, best val {top:.4f}; {args.seeds} "
          f"seeds x {args.budget} distinct queries; regret = best - found, mean +- s.e. (ratio to random)")
    header = f"{'strategy':<18}" + "".join(f"{'@' + str(q):>24}" for q in args.at) + \
        f"{'ms/query':>10}{'capped':>8}"
    print(header + "\n" + "-" * len(header))
    report: dict[str, Any] = {"best": top, "strategies": {}}
    for label, kind, column in strategies:
        curves, spent, capped = [], 0.0, 0
        for seed in range(args.seeds):
            cfg = {"type": kind, "seed": seed, **extra.get(label, {})}
            warm = (column, args.ws_pool, args.ws_take) if column in ("params", "flops") else None
            prior = None
            if column == "prior":
                if args.prior_table is None:
                    raise SystemExit(f"{label}: '+prior' needs --prior TASK:N")
                prior = draw_prior(*args.prior_table, args.prior_n, seed)
            curve, _, distinct, t = run_search(cfg, space, rows, args.budget, args.max_proposals * args.budget,
                                               warm, prior)
            curves.append(curve)
            spent += t
            capped += distinct < args.budget
        regret = top - np.stack(curves)  # [seeds, budget]
        means = regret.mean(axis=0)
        ses = regret.std(axis=0, ddof=1) / np.sqrt(len(regret)) if len(regret) > 1 else 0 * means
        base = report["strategies"].get("random", {}).get("mean")
        cols = []
        for q in args.at:
            ratio = f"({means[q - 1] / base[q - 1]:.2f})" if base is not None and base[q - 1] > 0 else ""
            cols.append(f"{means[q - 1]:.4f} +- {ses[q - 1]:.4f} {ratio}")
        ms = 1e3 * spent / (args.seeds * args.budget)
        print(f"{label:<18}" + "".join(f"{c:>24}" for c in cols) + f"{ms:>10.1f}{capped:>8}", flush=True)
        report["strategies"][label] = {"mean": means.tolist(), "se": np.asarray(ses).tolist(),
                                       "ms_per_query": ms, "capped": capped}
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", type=Path, default=DEFAULT_TABLE, help="TransNAS-Bench-101 micro JSON")
    p.add_argument("--task", default="segmentsemantic",
                   help="segmentsemantic, normal, autoencoder, room_layout or all")
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--budget", type=int, default=100, help="distinct queries per search")
    p.add_argument("--at", default="10,25,50,100", help="report regret after these many queries")
    p.add_argument("--strategies", default=",".join(STRATEGIES),
                   help="comma-separated label[=type][+params|+flops] (random first: ratios are to it)")
    p.add_argument("--kw", action="append", default=[], metavar="LABEL=JSON",
                   help='extra constructor kwargs, e.g. reinforce={"lr": 0.003}')
    p.add_argument("--ws-pool", type=int, default=64, help="warm start: random archs ranked")
    p.add_argument("--ws-take", type=int, default=8, help="warm start: best ranked archs queued")
    p.add_argument("--max-proposals", type=int, default=20,
                   help="proposal cap, times the budget: a search stuck re-proposing known archs "
                        "stops there and keeps its best (counted in the 'capped' column)")
    p.add_argument("--history", nargs="+", metavar="PATH",
                   help="instead of TransNAS: a table of the finished archs of these search histories "
                        "(history.sqlite files or work dirs; aux-cell space, see load_history_space)")
    p.add_argument("--compose", metavar="TASKS",
                   help="instead of one table: a comma-separated list of TransNAS tasks, one 6-decision "
                        "block each (repeats allowed), reward the mean standardised val (ComposedSpace)")
    p.add_argument("--prior", metavar="TASK:N",
                   help="the '+prior' strategies' earlier search: N random archs of TASK's table (with "
                        "--compose: comma-separated tasks, one per block)")
    p.add_argument("--out", type=Path, help="also write the curves as JSON here")
    args = p.parse_args(argv)
    args.prior_table, args.prior_n = None, 0
    if args.prior:
        task, _, n = args.prior.rpartition(":")
        if not task or not n.isdigit() or int(n) < 1:
            raise SystemExit(f"--prior {args.prior!r}: give TASK:N, e.g. normal:50")
        args.prior_n = int(n)
        args.prior_table = (load_composed(args.table, task.split(","))[:2] if args.compose
                            else load_space(args.table, task))
    args.at = [int(x) for x in args.at.split(",")]
    if max(args.at) > args.budget:
        raise SystemExit("--at exceeds --budget")
    extra = {name: json.loads(js) for name, _, js in (k.partition("=") for k in args.kw)}
    strategies = parse_strategies(args.strategies)
    if args.history and args.compose:
        raise SystemExit("--history and --compose are two different tables: give one")
    if args.history:
        space, rows = load_history_space(args.history)
        if args.budget > len(rows):
            raise SystemExit(f"--budget {args.budget} exceeds the {len(rows)} archs of the history table")
        tables = {"history": (f"history table ({len(args.history)} searches)", space, rows, None)}
    elif args.compose:
        tasks = args.compose.split(",")
        tables = {"composed": (f"TransNAS-Bench-101 micro composed of {'+'.join(tasks)} (standardised val)",
                               *load_composed(args.table, tasks))}
    else:
        tasks = list(json.loads(args.table.read_text())["tasks"]) if args.task == "all" else [args.task]
        tables = {task: (f"TransNAS-Bench-101 micro / {task}", *load_space(args.table, task), None)
                  for task in tasks}
    torch.set_num_threads(1)  # tiny models: threads only add overhead
    with threadpool_limits(limits=1):
        report = {task: bench_task(title, space, rows, strategies, args, extra, top)
                  for task, (title, space, rows, top) in tables.items()}
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "tasks": report}))


if __name__ == "__main__":
    main()
