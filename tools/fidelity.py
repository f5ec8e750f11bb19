#!/usr/bin/env python
"""Does a search's cheap reward rank architectures like longer training does? Measure it for your data
and budget before spending a search on it.

For the search CONFIG describes, K archs (random, or spread over an existing search's history) are scored
by the search's own cheap evaluator and trained again LONG_MULT times longer with two seeds. Printed:
Kendall tau and Spearman rho of each cheap reward (stage 1, stage 2, the search's early-stopped reward)
against the long metric, with 95 % bootstrap intervals, the noise ceiling (long seed 1 vs seed 2), top-k
overlap, the cost ratio and a verdict; ``fidelity.png`` shows the scatter. Rows are written per arch, so a
killed run resumes with the same command, and ``--shard K/N`` splits the archs over N processes.

    python tools/fidelity.py configs/search/auxcell_proxy.py [--archs 16] [--long-mult 4] [--seeds 2]
        [--from-history work_dirs/auxcell_proxy/history.sqlite] [--cheap-scales 1 2] [--target miou]
        [--work-dir DIR] [--shard 0/2 --threads 1] [--cfg-options evaluator.stage1.iters=160 ...]
        [--final-iters 600 --final-seeds 2 --final-jobs 2]   # also rank against the exported model
                                                               # fine-tuned by tools/train.py
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

# OpenMP threads that spin while waiting make torch on a busy 2-core machine 5-10x slower (measured);
# sleeping waits cost nothing measurable when the machine is idle. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="search config (python file)")
    p.add_argument("--work-dir", help="rows, report and plot (default: work_dirs/fidelity/<config name>)")
    p.add_argument("--archs", type=int, default=16, help="archs to compare (default 16)")
    p.add_argument("--from-history", metavar="HISTORY", help="take the archs from this history.sqlite, spread "
                   "over its reward ranks, instead of sampling them")
    p.add_argument("--long-mult", type=float, default=4.0, help="longer training = this many times the "
                   "configured stage-1 and stage-2 iterations (default 4)")
    p.add_argument("--seeds", type=int, default=2, choices=(1, 2), help="long trainings per arch; 2 (default) "
                   "gives the noise ceiling")
    p.add_argument("--cheap-scales", type=float, nargs="+", default=[1.0], metavar="X",
                   help="cheap budgets to check, as multiples of the configured iterations (default: 1)")
    p.add_argument("--target", help="metric of the long training to rank by (default: the task's first "
                   "leaderboard metric, e.g. miou, ap)")
    p.add_argument("--seed", type=int, default=0, help="seed of the arch sample (default 0)")
    p.add_argument("--shard", default="0/1", help="K/N: measure only archs i with i %% N == K")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--final-iters", type=int, default=0, metavar="N",
                   help="also rank against the final model: each arch exported by tools/export.py and "
                        "fine-tuned by tools/train.py for N iterations, --final-seeds times (default 0: off)")
    p.add_argument("--final-seeds", type=int, default=2, help="fine-tunes per arch for the final target (default 2)")
    p.add_argument("--final-jobs", type=int, default=1, metavar="N",
                   help="final fine-tunes run side by side (default 1); each gets OMP_NUM_THREADS = cores // N "
                        "unless set. On a GPU they share it")
    p.add_argument("--final-args", default="", metavar="'ARGS'",
                   help="more tools/export.py options for the final target, one quoted string: "
                        "--final-args='--crop 128 --batch-size 8'")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config keys, as for tools/search.py")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        shard = tuple(int(v) for v in args.shard.split("/"))
        if len(shard) != 2 or not 0 <= shard[0] < shard[1]:
            raise ValueError
    except ValueError:
        print(f"error: --shard {args.shard!r}: need K/N with 0 <= K < N", file=sys.stderr)
        return 2
    if args.archs < 3:
        print(f"error: --archs {args.archs}: need at least 3 archs to compare rankings", file=sys.stderr)
        return 2
    for name in ("final_seeds", "final_jobs"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} {getattr(args, name)}: must be at least 1", file=sys.stderr)
            return 2
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    work_dir = Path(args.work_dir or f"work_dirs/fidelity/{Path(args.config).stem}")
    work_dir.mkdir(parents=True, exist_ok=True)
    from densenas.progress import tee_log

    with tee_log(work_dir / "fidelity.log") as log:
        return run(args, work_dir, shard, log)


def run(args: argparse.Namespace, work_dir: Path, shard: tuple[int, int], log: Callable[[str], None]) -> int:
    """Measure the missing rows of this shard and print the (interim) report; returns the exit code."""
    from densenas.build import build_search
    from densenas.config import ConfigError, load_config
    from densenas.fidelity_run import (PLAN, ROWS, archs_from_history, load_rows, make_plan, open_plan,
                                       report, run_rows, sample_archs)

    try:
        cfg = load_config(args.config, args.cfg_options)
        search = build_search(cfg, work_dir=work_dir, log=log)
        if search.kind != "proxy":
            raise ConfigError(f"{args.config}: evaluator.type={search.kind!r}; tools/fidelity.py compares the "
                              f"per-arch rewards of a sampling search (evaluator.type='proxy'); a one-shot "
                              f"search scores no arch on its own")
        target = args.target or search.task.report_metrics[0][0]
        if args.from_history:
            archs, source = archs_from_history(args.from_history, args.archs), f"history {args.from_history}"
        else:
            archs, source = sample_archs(search.space, args.archs, args.seed), f"sampled, seed {args.seed}"
        for a in archs:
            search.space.check(a)
        # the metric's ranking is checked: a multi-objective search's cost term is exact, not trained
        evaluator = getattr(search.evaluator, "inner", search.evaluator)
        plan = open_plan(work_dir, make_plan(archs, evaluator.cfg, args.long_mult, args.seeds,
                                             args.cheap_scales, target, source))
        log(f"fidelity of {args.config}: {len(archs)} archs ({source}) of {search.space.name}; cheap "
            f"{plan['stage1_iters']}+{plan['stage2_iters']} iterations x {plan['cheap_scales']}, long "
            f"{plan['long_iters']}+{plan['long_stage2_iters']} x {plan['seeds']} seeds; target {target}; "
            f"work dir {work_dir}")
        run_rows(evaluator, plan, work_dir / ROWS, shard=shard, log=log)
        if args.final_iters:
            _final(args, cfg, search, plan, work_dir, shard, log)
        rows = load_rows(work_dir / ROWS, len(plan["archs"]))
        done = [r for r in rows if r is not None]
        label = dict(search.task.report_metrics).get(target, target)
        if len(done) < len(rows):
            log(f"{len(rows) - len(done)} of {len(rows)} archs still to measure (other shards); run this "
                f"command again without --shard when they are done for the final report")
            if sum("error" not in r for r in done) < 3:
                return 0
            text, _ = report(plan, done, work_dir, label, n_boot=args.bootstrap)
            log(f"\ninterim report on the {len(done)} archs measured so far:\n{text}")
            return 0
        text, summary = report(plan, rows, work_dir, label, n_boot=args.bootstrap)
        if args.final_iters:
            from densenas.fidelity_final import final_report, load_final

            lines, final = final_report({**plan, "final_iters": args.final_iters}, rows,
                                        load_final(work_dir, len(rows)), label, n_boot=args.bootstrap)
            text += "\n" + "\n".join(lines)
            summary["final"] = final
            (work_dir / "fidelity.json").write_text(json.dumps(summary, indent=1) + "\n")
    except (ConfigError, FileNotFoundError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log("\n" + text)
    log(f"rows in {work_dir / ROWS}, plan {work_dir / PLAN}, summary {work_dir / 'fidelity.json'}")
    return 0


def _final(args: argparse.Namespace, cfg, search, plan: dict, work_dir: Path, shard: tuple[int, int],
           log: Callable[[str], None]) -> None:
    """The "final" target (densenas/fidelity_final.py): export and fine-tune each arch the user's way."""
    from densenas.fidelity_final import FINAL, final_rows

    import shlex

    settings = {"iters": args.final_iters, "seeds": args.final_seeds, "args": shlex.split(args.final_args)}
    path = work_dir / FINAL / "settings.json"
    if path.is_file() and json.loads(path.read_text()) != settings:
        raise ValueError(f"{path} holds final fine-tunes with other settings ({json.loads(path.read_text())}); "
                         f"choose another --work-dir or remove {path.parent}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings) + "\n")
    resolved = work_dir / "search_config.py"
    cfg.dump(str(resolved))
    final_rows(plan, work_dir, resolved, iters=args.final_iters, seeds=args.final_seeds,
               metric=search.task.test_metric, export_args=settings["args"], shard=shard, jobs=args.final_jobs,
               log=log)


if __name__ == "__main__":
    sys.exit(main())
