"""How ``history.sqlite`` grows with the number of candidates, per strategy (issue #23, item 8).

Runs the one search loop (:func:`densenas.loop.run`) with a strategy on TransNAS-Bench-101 micro
segmentation (Duan et al., CVPR 2021; the table's measured ``val`` is the reward, so a candidate costs
nothing) and prints, at a few candidate counts, the size of the history (database plus its WAL), the
packed strategy state, the bytes this process wrote (``wchar`` of ``/proc/self/io``: SQLite's writes, WAL
and checkpoints) per candidate since the previous line, and the loop's time. A history that records a
search in linear work keeps the bytes written per candidate flat down the table.

Usage::

    python benchmarks/bench_history.py                       # optuna and surrogate, 200 candidates
    python benchmarks/bench_history.py --strategies optuna --candidates 1000
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from bench_transnas import DEFAULT_TABLE, load_space  # noqa: E402

from densenas.history import History  # noqa: E402
from densenas.history_codec import _pack  # noqa: E402
from densenas.loop import Budget, run  # noqa: E402
from densenas.result import Result  # noqa: E402
from densenas.strategies import build_strategy  # noqa: E402


class TableEvaluator:
    """The table's ``val`` as the reward (no training)."""

    def __init__(self, rows: dict[str, dict[str, float]]):
        self.rows = rows

    def evaluate(self, arch, seed: int = 0) -> Result:
        return Result(reward=self.rows[arch.key]["val"], metrics={"val": self.rows[arch.key]["val"]})


def written() -> int:
    """Bytes this process has passed to write() so far (Linux)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def measure(strategy_type: str, checkpoints: list[int], table: Path) -> list[dict[str, float]]:
    space, rows = load_space(table, "segmentsemantic")
    strategy = build_strategy({"type": strategy_type, "seed": 0}, space)
    rows_out = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.sqlite"
        with History(path) as h:
            done, spent = 0, 0.0
            for n in checkpoints:
                t0, w0, before = time.perf_counter(), written(), h.count()
                run(space, strategy, TableEvaluator(rows), h, Budget(candidates=n, seed=0))
                spent += time.perf_counter() - t0
                h.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                done = h.count()
                rows_out.append({"candidates": done, "bytes": size(path),
                                 "written": (written() - w0) / max(done - before, 1),
                                 "state": len(_pack(strategy.state_dict(), "state")), "seconds": spent})
    return rows_out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--strategies", default="optuna,surrogate")
    p.add_argument("--candidates", type=int, default=200)
    p.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    a = p.parse_args()
    checkpoints = sorted({max(1, a.candidates // 4), a.candidates // 2, a.candidates})
    print("| strategy | candidates | history.sqlite | per candidate | strategy state | written per candidate "
          "| loop time |")
    print("|---|---|---|---|---|---|---|")
    for name in a.strategies.split(","):
        for r in measure(name, checkpoints, a.table):
            print(f"| {name} | {r['candidates']} | {r['bytes'] / 1e6:.2f} MB | {r['bytes'] / r['candidates'] / 1e3:.1f} kB "
                  f"| {r['state'] / 1e3:.0f} kB | {r['written'] / 1e3:.0f} kB | {r['seconds']:.1f} s |")


if __name__ == "__main__":
    main()
