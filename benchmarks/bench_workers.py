#!/usr/bin/env python
"""Candidates per hour of one search on Ray workers vs one process, side by side in one run (issue "scale
out": 2 Ray workers of 1 thread each vs 1 worker of 2 threads on a 2-core machine, goal >= 1.3x).

Each setting runs ``tools/search.py`` on the same config, seed, strategy and ``parallel.batch`` (pipeline mode,
the default: that many in flight, recorded in row order), so a strategy that is deterministic given the seed
proposes the same archs and the best arch must agree; ``ray2batch`` is the older batch mode (every worker
waits for the slowest of its batch and for the next batch's proposals), whose rows differ. Throughput is
counted over the search loop (first row started to last row finished, from ``history.sqlite``): the
teacher, the feature cache and the Ray start-up are reported apart.

    python benchmarks/bench_workers.py [--config configs/search/auxcell_proxy.py] [--candidates 12]
        [--settings one2,one1,ray2,ray2batch]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: name -> (what it is, extra tools/search.py arguments, extra --cfg-options)
SETTINGS = {
    "one2": ("1 worker, 2 threads", ["--workers", "1"], ["evaluator.cpu_threads=2"]),
    "one1": ("1 worker, 1 thread (default)", ["--workers", "1"], []),
    "ray2": ("2 Ray workers, 1 thread each", ["--workers", "2"], ["parallel.cpus_per_worker=1"]),
    "ray2batch": ("2 Ray workers, batch mode", ["--workers", "2"], ["parallel.cpus_per_worker=1",
                                                                    "parallel.mode=batch"]),
}


def loop_stats(history: Path) -> dict:
    """Rows, loop seconds (first start to last finish), the best row's arch and reward."""
    con = sqlite3.connect(history)
    try:
        rows = con.execute("SELECT id, arch_json, reward, status, started, finished FROM candidates "
                           "ORDER BY id").fetchall()
    finally:
        con.close()
    done = [r for r in rows if r[5] is not None]
    span = max(r[5] for r in done) - min(r[4] for r in done)
    best = max((r for r in done if r[2] is not None), key=lambda r: r[2])
    return {"rows": len(done), "loop_s": span, "per_hour": 3600 * len(done) / span, "best_id": best[0],
            "best_reward": best[2], "best_arch": json.loads(best[1]), "rewards": [r[2] for r in done]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/search/auxcell_proxy.py")
    p.add_argument("--candidates", type=int, default=12)
    p.add_argument("--batch", type=int, default=2, help="archs proposed per round (the same in every setting)")
    p.add_argument("--settings", default="one2,one1,ray2")
    p.add_argument("--out", default="work_dirs/bench_workers")
    args = p.parse_args(argv)
    names = args.settings.split(",")
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        p.error(f"unknown settings {unknown}; available: {sorted(SETTINGS)}")
    out = Path(args.out)
    stats = {}
    for name in names:
        what, flags, opts = SETTINGS[name]
        work = out / name
        shutil.rmtree(work, ignore_errors=True)
        cmd = [sys.executable, str(ROOT / "tools/search.py"), args.config, "--work-dir", str(work), *flags,
               "--cfg-options", f"search.num_candidates={args.candidates}", "search.time_budget_s=None",
               f"parallel.batch={args.batch}", *opts]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(f"{name}: tools/search.py failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}", file=sys.stderr)
            return 1
        stats[name] = {**loop_stats(work / "history.sqlite"), "wall_s": wall}
        s = stats[name]
        print(f"{what:<30} {s['rows']} candidates, loop {s['loop_s']:6.1f} s -> {s['per_hour']:6.1f}/hour "
              f"(whole run {wall:.0f} s); best #{s['best_id']} reward {s['best_reward']:.4f}", flush=True)
    base = stats[names[0]]
    for name in names[1:]:
        s = stats[name]
        diff = max(abs(a - b) for a, b in zip(s["rewards"], base["rewards"]) if a is not None and b is not None)
        print(f"{SETTINGS[name][0]} vs {SETTINGS[names[0]][0]}: {s['per_hour'] / base['per_hour']:.2f}x "
              f"candidates/hour; same best arch: {s['best_arch'] == base['best_arch']}; "
              f"max |reward difference| row by row {diff:.1e}")
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
