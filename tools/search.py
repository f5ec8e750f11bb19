#!/usr/bin/env python
"""Run (or resume) an architecture search from a config.

    python tools/search.py configs/search/auxcell_proxy.py [--work-dir DIR] [--resume]
        [--cfg-options search.num_candidates=50 strategy.lr=1e-3 ...]

Writes into the work dir: history.sqlite (every candidate; the search resumes from it), best_arch.json,
leaderboard.md/.csv, rewards.png and search.log.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# OpenMP threads that spin while waiting make torch on a busy 2-core machine 5-10x slower (measured);
# sleeping waits cost nothing measurable when the machine is idle. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="search config (python file)")
    p.add_argument("--work-dir", help="output directory (default: the config's work_dir)")
    p.add_argument("--resume", action="store_true",
                   help="continue the search recorded in the work dir (default: refuse to mix runs)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config keys, e.g. search.num_candidates=10")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from densenas.config import ConfigError, check_keys, load_config, section
    from densenas.differentiable import build_job, is_differentiable
    from densenas.evaluation.supernet_search import DERIVED, search_supernet
    from densenas.history import History
    from densenas.pipeline import (build_backbone, build_data, build_evaluator, build_space,
                                   evaluator_config, resolve_device)
    from densenas.pipeline_det import (DET_METRICS, build_det_data, build_det_evaluator,
                                       det_evaluator_config, is_detection)
    from densenas.search import progress_line, run_search
    from densenas.strategies import STRATEGIES, build_strategy
    from densenas.viz import write_reports

    try:
        cfg = load_config(args.config, args.cfg_options)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    work_dir = Path(args.work_dir or cfg.get("work_dir") or f"work_dirs/{Path(args.config).stem}")
    work_dir.mkdir(parents=True, exist_ok=True)
    hist_path = work_dir / "history.sqlite"
    if hist_path.exists() and not args.resume:
        print(f"error: {hist_path} already holds a search; pass --resume to continue it or choose "
              f"another --work-dir", file=sys.stderr)
        return 2
    log_file = open(work_dir / "search.log", "a")

    def log(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    source = cfg.filename
    seed = int(cfg.get("seed", 0))
    device = resolve_device(cfg.get("device", "auto"))
    search_cfg = section(cfg, "search", {})
    if is_differentiable(cfg):  # one supernet trained epoch by epoch instead of candidates
        try:
            job = build_job(cfg, log=log)
        except (ConfigError, FileNotFoundError, ValueError, TypeError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        cfg.dump(str(work_dir / "config.py"))
        log(f"{job.summary}, device {device}, work dir {work_dir}")
        history = History(hist_path)
        if args.resume and history.count(finished_only=False):
            log(f"resuming after epoch {history.count()}")
        try:
            last = search_supernet(job.space, job.train, job.val, job.loss_fn, job.score_fn, history,
                                   work_dir, epochs=job.epochs, darts=job.darts, seed=seed, device=device,
                                   time_budget_s=job.time_budget_s,
                                   on_progress=lambda p: log(progress_line(p, "epoch")))
        except FloatingPointError as e:  # recorded as a failed epoch; earlier epochs and checkpoint kept
            log(f"error: the supernet diverged ({e}); lower strategy.w_lr / strategy.arch_lr and resume "
                f"from the last good epoch with --resume")
            history.close()
            return 1
        out = write_reports(history, work_dir)
        if last is not None:
            log(f"derived after the last epoch: {job.space.describe(last)} -> {work_dir / DERIVED}")
        log(f"{history.count()} epochs in {hist_path}; best epoch's arch {out['best_arch']}")
        history.close()
        return 0
    try:
        task = (section(cfg, "task", {}) or {}).get("type", "segmentation")
        if task not in ("segmentation", "detection"):
            raise ConfigError(f"{source}: task {task!r} is searched with strategy 'darts' "
                              f"(strategy.type={section(cfg, 'strategy', {}).get('type')!r})")
        check_keys("search", search_cfg, run_search, source=source)
        detection = is_detection(cfg)
        det_evaluator_config(cfg) if detection else evaluator_config(cfg)
        data = (build_det_data if detection else build_data)(section(cfg, "data"), source=source, log=log)
        num_classes = len(data.classes) if detection else data.num_classes
        encoder, shapes = build_backbone(section(cfg, "backbone", {}), source=source)
        space = build_space(section(cfg, "space"), num_classes, source=source)
        scfg = section(cfg, "strategy", {"type": "random"})
        if scfg.get("type") in STRATEGIES:
            check_keys("strategy", {k: v for k, v in scfg.items() if k != "type"},
                       STRATEGIES[scfg["type"]], source=source)
        strategy = build_strategy({"seed": seed, **scfg}, space)
    except (ConfigError, FileNotFoundError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg.dump(str(work_dir / "config.py"))
    log(f"search: space {space.name} ({len(space.decisions())} decisions, <= {space.size():.3g} archs), "
        f"strategy {type(strategy).__name__}, device {device}, work dir {work_dir}")
    if detection:
        evaluator = build_det_evaluator(cfg, space, encoder, shapes, data, device, work_dir, log=log)
    else:
        evaluator = build_evaluator(cfg, space, encoder, shapes, data, device, work_dir, seed=seed, log=log)
    history = History(hist_path)
    if args.resume and history.count(finished_only=False):
        log(f"resuming: {history.count()} finished, {len(history.running())} interrupted candidate(s)")
    num = int(search_cfg.pop("num_candidates", 30))
    search_cfg.setdefault("seed", seed)

    def on_progress(p) -> None:
        log(progress_line(p))

    run_search(space, strategy, evaluator, history, num_candidates=num, on_progress=on_progress,
               **search_cfg)
    report = dict(metrics=DET_METRICS, reward_label=f"reward ({evaluator.cfg.reward})") if detection else {}
    out = write_reports(history, work_dir, **report)
    best = history.best()
    if best is not None:
        key, name = ("ap", "AP") if detection else ("miou", "mIoU")
        log(f"best: candidate #{best.id} reward {best.result.reward:.4f} "
            f"{name} {best.result.metrics.get(key, 0):.4f} -> {out['best_arch']}")
        log(f"arch: {best.arch}")
    log(f"{history.count()} candidates in {hist_path}; leaderboard {out['md']}")
    history.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
