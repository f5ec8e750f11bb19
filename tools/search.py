#!/usr/bin/env python
"""Run (or resume) an architecture search from a config.

    python tools/search.py configs/search/auxcell_proxy.py [--work-dir DIR] [--resume]
        [--workers N|auto] [--address auto|HOST:PORT]
        [--cfg-options search.num_candidates=50 strategy.lr=1e-3 parallel.mode=async ...]

--workers N (N > 1) starts a local Ray instance (127.0.0.1 only) and keeps N candidates in flight on N
workers, each with max(1, cores // N) torch threads. The default, auto, is one one-thread candidate per
CPU core (1 for a one-shot search; DENSENAS_WORKERS=N overrides it); --workers 1 trains in this process
without Ray. --address joins a cluster started with
`ray start --head` (the `parallel` config section sets the rest: mode, batch, cpus_per_worker,
gpus_per_worker, retries; densenas/parallel.py).

Writes into the work dir: history.sqlite (every candidate; the search resumes from it), best_arch.json,
leaderboard.md/.csv, rewards.png, search.log, config.py (the resolved config), tb/ (TensorBoard scalars);
a one-shot (DARTS) search also supernet.pth and derived_arch.json. The path from here to the reward is
described in docs/search.md ("How a search runs").

A one-shot search trains its supernet data-parallel over several processes (one per GPU; CPU processes on
gloo): tools/dist_search.sh CONFIG GPUS (torchrun, --launcher pytorch) or --launcher slurm. The DARTS batch
(strategy.batch_size) is the global batch, split over the processes; rank 0 alone writes the work dir
(densenas/distributed.py, densenas/evaluation/supernet.py).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

# OpenMP threads that spin while waiting make torch on a busy 2-core machine 5-10x slower (measured);
# sleeping waits cost nothing measurable when the machine is idle. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _workers(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'auto', got {value!r}") from None


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="search config (python file)")
    p.add_argument("--work-dir", help="output directory (default: the config's work_dir)")
    p.add_argument("--resume", action="store_true",
                   help="continue the search recorded in the work dir (default: refuse to mix runs)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config keys, e.g. search.num_candidates=10")
    p.add_argument("--workers", type=_workers, metavar="N|auto",
                   help="candidates trained in parallel on Ray workers (overrides parallel.workers; default auto: "
                        "one per CPU core; 1: in this process, no Ray)")
    p.add_argument("--address", metavar="auto|HOST:PORT",
                   help="join this Ray cluster instead of starting a local instance (overrides parallel.address)")
    p.add_argument("--launcher", choices=("none", "pytorch", "slurm"), default="none",
                   help="train a one-shot (supernet) search data-parallel over processes (tools/dist_search.sh)")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


MODE_WORDS = {  # the log line that says how the candidates are kept in flight (docs/parallel.md)
    "pipeline": lambda p: f"{p.batch_size} in flight, recorded in row order, the next proposed as each is recorded",
    "batch": lambda p: f"batches of {p.batch_size}, each waiting for its slowest",
    "async": lambda p: f"{p.count} in flight, recorded as they finish (not reproducible)",
}


def main(argv=None) -> int:
    args = parse_args(argv)
    from densenas import distributed as dist
    from densenas.build import parallel_cfg
    from densenas.config import ConfigError, load_config
    from densenas.parallel import check_address

    if isinstance(args.workers, int) and args.workers < 1:
        print(f"error: --workers must be at least 1, got {args.workers}", file=sys.stderr)
        return 2
    flags = {k: v for k, v in (("workers", args.workers), ("address", args.address)) if v is not None}
    try:
        cfg = load_config(args.config, args.cfg_options)
        if flags:  # the flags override the config's parallel section
            cfg.merge_from_dict({"parallel": {**dict(cfg.get("parallel") or {}), **flags}})
        pcfg = parallel_cfg(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        dist.init(args.launcher, local_rank=args.local_rank)
    except dist.LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if dist.is_distributed() and ((cfg.get("evaluator") or {}).get("type") != "supernet" or pcfg.use_ray):
        print(f"error: --launcher {args.launcher} with {dist.world_size()} processes trains one supernet "
              f"data-parallel (evaluator.type='supernet', no Ray); {args.config} trains separate candidates: "
              f"spread them with --workers N instead", file=sys.stderr)
        return 2
    work_dir = Path(args.work_dir or cfg.get("work_dir") or f"work_dirs/{Path(args.config).stem}")
    hist_path = work_dir / "history.sqlite"
    if hist_path.exists() and not args.resume:
        print(f"error: {hist_path} already holds a search; pass --resume to continue it or choose "
              f"another --work-dir", file=sys.stderr)
        return 2
    try:  # before the data and the teacher: a wrong address fails in seconds, not after them
        check_address(pcfg.address if pcfg.use_ray else None)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    work_dir.mkdir(parents=True, exist_ok=True)
    # ranks > 0 run the same steps on a scratch copy of the work dir (resumed from the same history and
    # checkpoint), quietly: rank 0 alone writes the work dir and prints
    run_dir = dist.rank_work_dir(work_dir)
    if run_dir != work_dir:
        with contextlib.redirect_stdout(open(os.devnull, "w")):
            return _search(cfg, pcfg, args, run_dir, run_dir / "history.sqlite", {})
    ray_run: dict = {}  # the Ray connection, then the executor that owns it: closed whatever happens
    try:
        return _search(cfg, pcfg, args, work_dir, hist_path, ray_run)
    finally:
        _close(ray_run)


def _search(cfg, pcfg, args, work_dir: Path, hist_path: Path, ray_run: dict) -> int:
    from densenas import distributed as dist
    from densenas.build import STOP_FILE, build_search, plan_search
    from densenas.config import ConfigError
    from densenas.history import History, HistoryError
    from densenas.parallel import make_executor
    from densenas.progress import tee_log
    from densenas.safeload import CheckpointLoadError

    with tee_log(work_dir / "search.log") as log:
        executor = None
        try:
            if pcfg.use_ray:
                from densenas.ray_executor import start_ray

                # a config error is reported in a second, before Ray starts (seconds more)
                plan_search(cfg, resume=args.resume)

                ray_run["connection"] = start_ray(pcfg, log)
            with dist.main_first():  # rank 0 writes the proxy data set before the other ranks read it
                search = build_search(cfg, work_dir=work_dir, log=log, resume=args.resume)
            if search.kind != "supernet":
                executor = ray_run["executor"] = make_executor(pcfg, search.evaluator, search.space, log=log,
                                                               connection=ray_run.pop("connection", None))
        except (ConfigError, FileNotFoundError, ValueError, TypeError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        cfg.dump(str(work_dir / "config.py"))
        log(f"{search.summary()}, work dir {work_dir}")
        log(f"to stop gracefully (after the work in flight, resumable): touch {work_dir / STOP_FILE}")
        reason = getattr(pcfg, "auto_reason", None)
        if search.kind != "supernet" and (reason or pcfg.count > 1):
            why = f" ({reason}; --workers N sets it)" if reason else ""
            log(f"workers: {pcfg.workers}{why}; parallel.mode={pcfg.mode}: " + MODE_WORDS[pcfg.mode](pcfg))
        if dist.is_distributed():
            log(f"data-parallel: {dist.world_size()} processes ({dist.default_backend()}), the global batch of "
                f"{search.strategy.cfg.batch_size} split over them; rank 0 writes the work dir")
        elif search.device.type == "cuda" and dist.cuda_count() > 1:
            log(f"note: {dist.cuda_count()} GPUs visible, this process uses one: "
                + (f"tools/dist_search.sh {args.config} {dist.cuda_count()} trains the supernet data-parallel"
                   if search.kind == "supernet" else
                   f"--workers {dist.cuda_count()} --cfg-options parallel.gpus_per_worker=1 trains one "
                   f"candidate per GPU"))
        try:
            with History(hist_path) as history:
                outcome = search.run(history, work_dir, log=log, executor=executor)
        except FloatingPointError as e:  # a diverged supernet: its row is failed, the last good epoch kept
            log(f"error: the supernet diverged ({e}); lower strategy.w_lr / strategy.arch_lr and resume from "
                f"the last good epoch with --resume")
            return 1
        except (CheckpointLoadError, HistoryError) as e:  # a checkpoint or stored state that needs code to
            # load, a damaged history row, a full disk: named, nothing finished lost
            print(f"error: {e}", file=sys.stderr)
            return 2
        report(search, outcome, work_dir, hist_path, log)
    return 0


def _close(ray_run: dict) -> None:
    """Stop the workers and the Ray instance this run started (nothing when it ran in one process)."""
    if ray_run.get("executor") is not None:
        ray_run.pop("executor").close()
    connection = ray_run.pop("connection", None)
    if connection is not None and connection[0]:
        import shutil

        import ray

        ray.shutdown()
        if connection[1]:
            shutil.rmtree(connection[1], ignore_errors=True)


def report(search, outcome, work_dir: Path, hist_path: Path, log) -> None:
    """The closing lines: the best (or derived) arch and where the leaderboard is."""
    best = outcome.best
    if search.kind == "supernet" and outcome.arch is not None:
        log(f"derived after the last epoch: {outcome.arch} -> {work_dir / 'derived_arch.json'}")
    elif best is not None and best.result is not None:
        st = getattr(outcome, "standing", None)
        if st is not None and st.rung > 0:  # promoted: the pick of the top rung (densenas/promotion.py)
            sd = "" if st.sd is None else f" ± {st.sd:.4f}"
            log(f"pick: #{best.id} rung {st.rung} score {st.score:.4f}{sd} over {st.runs} seed(s) (search reward "
                f"{best.result.reward:.4f}) -> {work_dir / 'best_arch.json'}")
        else:
            log(f"best: #{best.id} reward {best.result.reward:.4f} -> {work_dir / 'best_arch.json'}")
        log(f"arch: {best.arch}")
    log(f"{outcome.done} {'epochs' if search.kind == 'supernet' else 'candidates'} in {hist_path} "
        f"({outcome.stopped}); leaderboard {work_dir / 'leaderboard.md'}")


if __name__ == "__main__":
    sys.exit(main())
