#!/usr/bin/env python
"""Whole proxy candidates at two revisions of densenas, side by side in one run (issue #23: "nothing gets
slower on the CPU" after a change to the training loop).

Each revision runs in its own long-lived worker process (``PYTHONPATH`` pointing at a ``git worktree`` of that
revision, cwd the repository root so both read the same data). Both workers build the same search from the
same config, sample the same archs (checked: the parent compares their JSON), and evaluate them with
``ProxyTrainer.evaluate`` with early stopping off, so each candidate trains both stages. The workers take
turns arch by arch (ABBA order), one candidate at a time, so machine load changes hit both alike; one
warm-up candidate per worker is not counted. Prints seconds per candidate, the ratio and the largest reward
difference (the rewards must agree: a faster loop that changes the arithmetic is a different change).

    python benchmarks/bench_revisions.py --base f58e4cb [--head HEAD|WORKTREE] [--archs 6]
        [--config configs/search/auxcell_proxy.py] [--cfg-options evaluator.cuda_graphs=off ...]

``--head`` defaults to this checkout as it is (uncommitted edits included). Worktrees are made under
``work_dirs/revisions/`` and kept for the next run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The worker: evaluates archs by index and answers one JSON line each. Kept as a string so that it imports
# densenas from the revision under test, not from this checkout: it runs with ``python -P`` (the cwd, this
# checkout, is not put first on sys.path), PYTHONPATH set to the revision's tree (which comes before the
# editable install's finder) and a finder for the top-level plugin folders. The worker prints where densenas
# and densenas.tasks came from, and the parent checks both.
PRELUDE = r"""
import dataclasses, json, os, sys, time
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import importlib.util
from pathlib import Path
tree = Path(os.environ["DENSENAS_TREE"])
class TreeTops:
    # setup.py maps densenas.tasks / .decoders / .datasets to top-level folders, and the editable install's
    # finder would serve this checkout's; serve the revision's instead (their submodules follow __path__).
    def find_spec(self, name, path=None, target=None):
        top = name.partition("densenas.")[2]
        if name.startswith("densenas.") and "." not in top and (tree / top / "__init__.py").is_file():
            return importlib.util.spec_from_file_location(name, tree / top / "__init__.py",
                                                          submodule_search_locations=[str(tree / top)])
        return None
sys.meta_path.insert(0, TreeTops())
import densenas, densenas.tasks
MODULES = [densenas.__file__, densenas.tasks.__file__]
"""
WORKER = PRELUDE + r"""
import numpy as np, torch
from densenas.build import build_search
from densenas.config import load_config
from densenas.evaluation.proxy import ProxyTrainer
cfg_path, n, opts = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
torch.manual_seed(0)
search = build_search(load_config(cfg_path, opts), log=lambda s: None)
ev = search.evaluator
trainer = ProxyTrainer(search.task, search.space, search.encoder, search.shapes,
                       dataclasses.replace(ev.cfg, early_stop=False, measure_cost=False), log=lambda s: None)
rng = np.random.default_rng(1)
archs = [search.space.sample(rng) for _ in range(n + 1)]
print(json.dumps({"ready": True, "archs": [a.to_json() for a in archs], "modules": MODULES,
                  "threads": torch.get_num_threads()}), flush=True)
for line in sys.stdin:
    i = int(line)
    t0 = time.perf_counter()
    r = trainer.evaluate(archs[i], seed=100 + i)
    print(json.dumps({"i": i, "secs": time.perf_counter() - t0, "reward": r.reward}), flush=True)
"""


def worktree(rev: str) -> Path:
    """A detached worktree of ``rev`` under work_dirs/revisions (made once, reused)."""
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.strip()
    path = ROOT / "work_dirs" / "revisions" / sha
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "add", "--detach", str(path), sha], cwd=ROOT, check=True,
                       capture_output=True)
    return path


def revision_argv(code: str, *args: str) -> list[str]:
    """The command that runs ``code`` (:data:`PRELUDE` first) without this checkout first on sys.path."""
    return [sys.executable, "-P", "-c", code, *args]


def revision_env(tree: Path) -> dict[str, str]:
    """The environment of a process that imports densenas from ``tree`` (with ``python -P`` and
    :data:`PRELUDE`)."""
    return dict(os.environ, PYTHONPATH=str(tree), DENSENAS_TREE=str(tree), OMP_NUM_THREADS="1")


def check_modules(name: str, tree: Path, modules: list[str]) -> None:
    """Refuse a worker that imported densenas (or its plugin folders) from anywhere but ``tree``."""
    for module in modules:
        if Path(module).parent.parent.resolve() != tree.resolve():
            raise SystemExit(f"{name}: the worker imported {module}, not the one in {tree}")


class Worker:
    """One revision's worker process."""

    def __init__(self, name: str, tree: Path, config: str, n: int, opts: list[str], cpu: int | None):
        self.name = name
        self.proc = subprocess.Popen(revision_argv(WORKER, str(tree / config), str(n), json.dumps(opts)),
                                     cwd=ROOT, env=revision_env(tree), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True,
                                     preexec_fn=None if cpu is None else lambda: os.sched_setaffinity(0, {cpu}))
        self.info = self._read()
        check_modules(name, tree, self.info["modules"])

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"{self.name}: the worker exited (code {self.proc.wait()}); see its error above")
        return json.loads(line)

    def evaluate(self, i: int) -> dict:
        self.proc.stdin.write(f"{i}\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def _fmt(reward: float | None) -> str:
    return "failed" if reward is None else f"{reward:.4f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the revision of before (a commit, tag or branch)")
    p.add_argument("--head", default=None, help="the revision of after (default: this checkout as it is)")
    p.add_argument("--config", default="configs/search/auxcell_proxy.py", help="relative to the repository")
    p.add_argument("--archs", type=int, default=6, help="timed candidates per revision (plus one warm-up)")
    p.add_argument("--cfg-options", nargs="*", default=[], help="key=value overrides for both revisions")
    p.add_argument("--cpu", type=int, default=os.cpu_count() - 1,
                   help="the one core both workers are pinned to (they take turns, so they never share it; "
                        "a worker per core would time the cores, not the code); -1: not pinned")
    args = p.parse_args()

    trees = {f"base {args.base}": worktree(args.base),
             f"head {args.head or '(this checkout)'}": worktree(args.head) if args.head else ROOT}
    t0 = time.perf_counter()
    cpu = None if args.cpu < 0 else args.cpu
    workers = [Worker(k, t, args.config, args.archs, args.cfg_options, cpu) for k, t in trees.items()]
    print(f"workers ready in {time.perf_counter() - t0:.0f} s (threads: "
          f"{', '.join(str(w.info['threads']) for w in workers)})", flush=True)
    if workers[0].info["archs"] != workers[1].info["archs"]:
        raise SystemExit("the two revisions sample different archs from the same seed: their spaces differ, "
                         "so a side-by-side timing would compare different work")
    for w in workers:  # warm-up candidate (index n): allocator, thread pools, first-call costs
        w.evaluate(args.archs)
    secs = {w.name: 0.0 for w in workers}
    rewards: dict[str, list] = {w.name: [] for w in workers}
    for i in range(args.archs):
        for w in (workers if i % 2 == 0 else workers[::-1]):  # ABBA: load changes hit both alike
            r = w.evaluate(i)
            secs[w.name] += r["secs"]
            rewards[w.name].append(r["reward"])
        print(f"  arch {i}: " + ", ".join(f"{w.name} reward {_fmt(rewards[w.name][-1])}" for w in workers),
              flush=True)
    for w in workers:
        w.close()
    base, head = (w.name for w in workers)
    # a candidate that failed at one revision only is a difference of its own, not a reward of 0
    diff = max(float("inf") if (a is None) != (b is None) else abs((a or 0.0) - (b or 0.0))
               for a, b in zip(rewards[base], rewards[head]))
    print(f"{args.config}, {args.archs} archs, both stages each, one thread, taking turns"
          f"{'' if cpu is None else f' on core {cpu}'}:")
    for name in (base, head):
        print(f"  {name:<30} {secs[name] / args.archs:6.2f} s/candidate")
    print(f"  head / base time {secs[head] / secs[base]:.3f}; max |reward difference| {diff:.1e}")


if __name__ == "__main__":
    main()
