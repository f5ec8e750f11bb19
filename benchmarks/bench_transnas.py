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

Only distinct archs count as queries: a re-proposed arch is answered from a cache (and still told to the
strategy) without counting, as :func:`densenas.loop.run` answers it from the history. Reported: mean and
standard error over seeds of the regret (best ``val`` in the table minus best ``val`` found so far), its
ratio to random search's at the same budget, and each strategy's proposal time (ms per query, on one
thread).

Usage::

    python benchmarks/bench_transnas.py                         # segmentsemantic, 20 seeds, 100 queries
    python benchmarks/bench_transnas.py --task all --seeds 50
    python benchmarks/bench_transnas.py --strategies random,surrogate,gp-ucb=surrogate \\
        --kw 'gp-ucb={"acquisition": "ucb"}'
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# OpenMP threads that spin while waiting make torch on a busy 2-core machine 5-10x slower (measured);
# sleeping waits cost nothing measurable when the machine is idle. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402 (after OMP_WAIT_POLICY)
from threadpoolctl import threadpool_limits  # noqa: E402

from densenas.arch import Arch, Decision  # noqa: E402
from densenas.build import WARM_START_STREAM  # noqa: E402
from densenas.result import Result  # noqa: E402
from densenas.space import TableSpace  # noqa: E402
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


def run_search(cfg: dict[str, Any], space: TableSpace, rows: dict[str, dict[str, float]], budget: int,
               max_proposals: int, warm: tuple[str, int, int] | None = None
               ) -> tuple[np.ndarray, int, int, float]:
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
        if column and column not in ("params", "flops"):
            raise SystemExit(f"{item}: warm start '+{column}' must be '+params' or '+flops'")
        out.append((label, base, column or None))
    return out


def bench_task(table: Path, task: str, strategies: list[tuple[str, str, str | None]], args: argparse.Namespace,
               extra: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Run every strategy on one table; print and return the regret table."""
    space, rows = load_space(table, task)
    top = max(r["val"] for r in rows.values())
    print(f"\nTransNAS-Bench-101 micro / {task}: {len(rows)} archs, best val {top:.4f}; {args.seeds} seeds x "
          f"{args.budget} distinct queries; regret = best - found, mean +- s.e. (ratio to random)")
    header = f"{'strategy':<18}" + "".join(f"{'@' + str(q):>24}" for q in args.at) + \
        f"{'ms/query':>10}{'capped':>8}"
    print(header + "\n" + "-" * len(header))
    report: dict[str, Any] = {"best": top, "strategies": {}}
    for label, kind, column in strategies:
        curves, spent, capped = [], 0.0, 0
        for seed in range(args.seeds):
            cfg = {"type": kind, "seed": seed, **extra.get(label, {})}
            warm = (column, args.ws_pool, args.ws_take) if column else None
            curve, _, distinct, t = run_search(cfg, space, rows, args.budget, args.max_proposals * args.budget,
                                               warm)
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
    p.add_argument("--out", type=Path, help="also write the curves as JSON here")
    args = p.parse_args(argv)
    args.at = [int(x) for x in args.at.split(",")]
    if max(args.at) > args.budget:
        raise SystemExit("--at exceeds --budget")
    extra = {name: json.loads(js) for name, _, js in (k.partition("=") for k in args.kw)}
    tasks = list(json.loads(args.table.read_text())["tasks"]) if args.task == "all" else [args.task]
    torch.set_num_threads(1)  # tiny models: threads only add overhead
    with threadpool_limits(limits=1):
        report = {task: bench_task(args.table, task, parse_strategies(args.strategies), args, extra)
                  for task in tasks}
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "tasks": report}))


if __name__ == "__main__":
    main()
