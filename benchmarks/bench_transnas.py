"""Strategies side by side on TransNAS-Bench-101 micro (Duan et al., CVPR 2021), a tabular benchmark.

Compares REINFORCE (Zoph & Le 2017; Nekrasov et al. 2019), regularized evolution (Real et al. 2019)
and random search on the measured validation results of the 711 distinct cells of the micro space
(6 edges x {none, skip_connect, conv1x1, conv3x3}; archs missing from the table are invalid).

Only distinct archs count as queries: a re-proposed arch is answered from a cache (and still told to
the strategy) without counting. Reported: mean and standard error over seeds of the regret
(best ``val`` in the table minus best ``val`` found so far) after 25, 50 and 100 queries.

Usage::

    python benchmarks/bench_transnas.py                     # segmentsemantic, 20 seeds, 100 queries
    python benchmarks/bench_transnas.py --task all --seeds 50
    python benchmarks/bench_transnas.py --kw 'reinforce={"lr": 0.003}'
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

from densenas.arch import Arch, Decision  # noqa: E402
from densenas.result import Result  # noqa: E402
from densenas.space import TableSpace  # noqa: E402
from densenas.strategies import build_strategy  # noqa: E402

OPS = ("none", "skip_connect", "conv1x1", "conv3x3")  # op ids 0..3 of TransNAS-Bench-101 micro
DEFAULT_TABLE = ROOT.parent / "shared" / "benchmarks" / "transnas101_micro_dense.json"
STRATEGIES = ("random", "reinforce", "evolution")


def load_space(table_path: Path, task: str) -> tuple[TableSpace, dict[str, float]]:
    """The micro space restricted to the archs of ``task``, and ``Arch.key -> val``."""
    tasks = json.loads(Path(table_path).read_text())["tasks"]
    if task not in tasks:
        raise SystemExit(f"task {task!r} not in {table_path}; have {sorted(tasks)}")
    decisions = [Decision(f"edge{i}", OPS) for i in range(6)]
    space = TableSpace("transnas101_micro", decisions, table={})
    vals: dict[str, float] = {}
    for ops, entry in tasks[task].items():
        arch = space.from_indices(ast.literal_eval(ops))
        vals[arch.key] = float(entry["val"])
    space.table = vals
    return space, vals


def run_search(cfg: dict[str, Any], space: TableSpace, vals: dict[str, float], budget: int,
               max_proposals: int) -> tuple[np.ndarray, int, int]:
    """Best ``val`` so far after each distinct query (padded if ``max_proposals`` ran out first).

    Returns:
        The best-so-far curve of length ``budget``, the number of proposals made and the number of
        distinct archs queried (below ``budget`` when the proposal cap stopped the search).
    """
    strategy = build_strategy(cfg, space)
    cache: dict[str, Result] = {}
    curve: list[float] = []
    best = -np.inf
    proposals = 0
    while len(curve) < budget and proposals < max_proposals:
        arch: Arch = strategy.propose()
        proposals += 1
        result = cache.get(arch.key)
        if result is None:
            result = cache[arch.key] = Result(reward=vals[arch.key])
            best = max(best, result.reward)
            curve.append(best)
        strategy.observe(arch, result)
    distinct = len(curve)
    curve += [best] * (budget - distinct)
    return np.asarray(curve), proposals, distinct


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", type=Path, default=DEFAULT_TABLE, help="TransNAS-Bench-101 micro JSON")
    p.add_argument("--task", default="segmentsemantic",
                   help="segmentsemantic, normal, autoencoder, room_layout or all")
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--budget", type=int, default=100, help="distinct queries per search")
    p.add_argument("--at", default="25,50,100", help="report regret after these many queries")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--max-proposals", type=int, default=20,
                   help="proposal cap, times the budget: a search stuck re-proposing known archs "
                        "stops there and keeps its best (counted in the 'capped' column)")
    p.add_argument("--kw", action="append", default=[], metavar="STRATEGY=JSON",
                   help='extra constructor kwargs, e.g. reinforce={"lr": 0.003}')
    args = p.parse_args(argv)

    torch.set_num_threads(1)  # tiny LSTM: threads only add overhead
    at = [int(x) for x in args.at.split(",")]
    if max(at) > args.budget:
        raise SystemExit("--at exceeds --budget")
    extra: dict[str, dict[str, Any]] = {}
    for item in args.kw:
        name, _, js = item.partition("=")
        extra[name] = json.loads(js)
    names = args.strategies.split(",")
    all_tasks = list(json.loads(Path(args.table).read_text())["tasks"])
    tasks = all_tasks if args.task == "all" else [args.task]

    for task in tasks:
        space, vals = load_space(args.table, task)
        top = max(vals.values())
        print(f"\nTransNAS-Bench-101 micro / {task}: {len(vals)} archs, best val {top:.4f}, "
              f"{args.seeds} seeds x {args.budget} distinct queries; regret = best - found "
              f"(mean +- s.e.)")
        header = f"{'strategy':<11}" + "".join(f"{'@' + str(q):>18}" for q in at) + \
            f"{'@' + str(at[-1]) + ' / random':>16}{'proposals/query':>17}{'capped':>8}{'time s':>8}"
        print(header)
        print("-" * len(header))
        mean_last: dict[str, float] = {}
        for name in names:
            t0 = time.perf_counter()
            curves, props, capped = [], 0, 0
            for seed in range(args.seeds):
                cfg = {"type": name, "seed": seed, **extra.get(name, {})}
                curve, n, distinct = run_search(cfg, space, vals, args.budget,
                                                args.max_proposals * args.budget)
                curves.append(curve)
                props += n
                capped += distinct < args.budget
            regret = top - np.stack(curves)  # [seeds, budget]
            cols = []
            for q in at:
                r = regret[:, q - 1]
                se = r.std(ddof=1) / np.sqrt(len(r)) if len(r) > 1 else 0.0
                cols.append(f"{r.mean():.4f} +- {se:.4f}")
            mean_last[name] = float(regret[:, at[-1] - 1].mean())
            base = mean_last.get("random")
            ratio = f"{mean_last[name] / base:.2f}" if base else "-"
            print(f"{name:<11}" + "".join(f"{c:>18}" for c in cols) + f"{ratio:>16}"
                  f"{props / (args.seeds * args.budget):>17.2f}{capped:>8}"
                  f"{time.perf_counter() - t0:>8.1f}")


if __name__ == "__main__":
    main()
