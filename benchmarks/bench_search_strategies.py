"""Strategies on a real search: best reward reached after k candidates, same config, seeds and budget.

The tabular check (``benchmarks/bench_transnas.py``) says how a strategy ranks on measured results; this
one runs the real thing: every ``(strategy, seed)`` pair is a full search of ``CONFIG`` (the default is
the aux-cell decoder search of Nekrasov et al., CVPR 2019, on the bundled proxy set) with only
``strategy`` and ``seed`` changed, and prints the best reward after ``--at`` candidates. Runs resume from
their history, so an interrupted benchmark continues where it stopped; the teacher and encoder features
are cached once per seed and shared by the strategies (the cache is keyed by content hashes).

Usage::

    python benchmarks/bench_search_strategies.py configs/search/auxcell_proxy.py \\
        --strategies surrogate,random --seeds 0,1 --candidates 30 \\
        --cfg-options evaluator.stage1.iters=40 evaluator.stage2.iters=10
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/bench_transnas.py

import numpy as np  # noqa: E402

from densenas.build import build_search  # noqa: E402
from densenas.config import load_config  # noqa: E402
from densenas.history import History  # noqa: E402


def run_one(config: str, overrides: list[str], strategy: dict[str, Any], seed: int, candidates: int,
            work_dir: Path, cache: Path) -> list[float | None]:
    """One search (resumed if its history exists); the rewards of its candidates in order (failed: None)."""
    cfg = load_config(config, overrides)
    cfg["strategy"] = dict(strategy)
    cfg["seed"] = seed
    cfg["search"] = {**dict(cfg.get("search") or {}), "num_candidates": candidates, "time_budget_s": None}
    work_dir.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    if not (work_dir / "cache").exists():
        (work_dir / "cache").symlink_to(cache.resolve(), target_is_directory=True)
    with open(work_dir / "search.log", "a") as log_file:
        def log(msg: str) -> None:
            line = f"{time.strftime('%H:%M:%S')} [{work_dir.name}] {msg}"
            print(line, flush=True)
            log_file.write(line + "\n")

        search = build_search(cfg, work_dir=work_dir, log=log)
        cfg.dump(str(work_dir / "config.py"))
        with History(work_dir / "history.sqlite") as history:
            search.run(history, work_dir, log=log)
            return [c.result.reward if c.result.ok else None for c in history.finished()]


def best_after(rewards: list[float | None], k: int) -> float:
    done = [r for r in rewards[:k] if r is not None]
    return max(done) if done else float("nan")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="?", default="configs/search/auxcell_proxy.py")
    p.add_argument("--strategies", default="surrogate,random",
                   help="comma-separated strategy types (kwargs with --kw)")
    p.add_argument("--kw", action="append", default=[], metavar="TYPE=JSON", help="strategy kwargs")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--candidates", type=int, default=30)
    p.add_argument("--at", default="10,20,30")
    p.add_argument("--work-root", type=Path, default=Path("work_dirs/bench_search_strategies"))
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    names, seeds = args.strategies.split(","), [int(s) for s in args.seeds.split(",")]
    at = [int(a) for a in args.at.split(",")]
    kw = {n: json.loads(js) for n, _, js in (k.partition("=") for k in args.kw)}
    curves: dict[str, dict[int, list]] = {n: {} for n in names}
    for seed in seeds:
        for name in names:
            curves[name][seed] = run_one(args.config, args.cfg_options, {"type": name, **kw.get(name, {})}, seed,
                                         args.candidates, args.work_root / f"{name}_s{seed}",
                                         args.work_root / f"cache_s{seed}")
    print(f"\nbest reward after k candidates ({args.config}, {' '.join(args.cfg_options) or 'as shipped'})")
    print(f"{'strategy':<12}{'seed':>6}" + "".join(f"{'@' + str(k):>10}" for k in at))
    for name in names:
        rows = [[best_after(curves[name][s], k) for k in at] for s in seeds]
        for s, row in zip(seeds, rows):
            print(f"{name:<12}{s:>6}" + "".join(f"{v:>10.4f}" for v in row))
        print(f"{name:<12}{'mean':>6}" + "".join(f"{v:>10.4f}" for v in np.nanmean(rows, axis=0)))
    (args.work_root / "summary.json").write_text(json.dumps({"config": args.config, "overrides": args.cfg_options,
                                                             "rewards": curves}, indent=1))


if __name__ == "__main__":
    main()
