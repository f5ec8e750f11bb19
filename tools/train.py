#!/usr/bin/env python
"""Fine-tune an exported mmseg / mmdet / mmpose config with the ordinary mmengine Runner.

    python tools/train.py configs/finetune/found_proxy.py [--work-dir DIR] [--resume]
        [--cfg-options train_cfg.max_iters=500 ...] [--launcher none|pytorch|slurm]
    tools/dist_train.sh CONFIG GPUS [ARGS...]      # GPUS processes via torchrun (--launcher pytorch)

Data-parallel as in OpenMMLab: one process per GPU (without CUDA: per CPU worker, gloo backend), each with
its share of every epoch (mmengine's samplers) and batch ``train_dataloader.batch_size``, so the global batch
is ``processes x batch_size``. Only rank 0 prints the final metrics.

Checkpoints (``load_from``, ``--resume``, ``init_cfg=dict(type='Pretrained', ...)``) are read weights-only
(densenas/safeload.py): a file whose pickle would run code is refused, naming the global it needs.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

LAUNCHERS = ("none", "pytorch", "slurm")  # densenas.distributed.LAUNCHERS (not imported: torch loads late)

# OpenMP threads that spin while waiting make torch on a busy 2-core machine 5-10x slower (measured);
# sleeping waits cost nothing measurable when the machine is idle. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("--work-dir")
    p.add_argument("--resume", action="store_true", help="resume from the latest checkpoint")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    p.add_argument("--launcher", choices=LAUNCHERS, default="none", help="job launcher (multi-process runs)")
    # torch.distributed.launch passes --local-rank (older: --local_rank); torchrun sets LOCAL_RANK instead
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    from densenas.config import ConfigError, read_config
    from mmengine.runner import Runner

    from densenas import distributed as dist
    from densenas.safeload import CheckpointLoadError, install
    from densenas.task import task_of_config

    if not Path(args.config).is_file():
        print(f"error: config file not found: {args.config}", file=sys.stderr)
        return 2
    try:
        cfg = read_config(args.config, args.cfg_options)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.work_dir:
        cfg.work_dir = args.work_dir
    cfg.resume = args.resume
    try:
        dist.setup_runner(cfg, args.launcher, args.local_rank)
    except dist.LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if isinstance(cfg.get("visualizer"), dict):
        # mmengine keeps one visualizer per name for the whole process: a fixed name (mmseg's configs use
        # "visualizer") would send a second run's files to the first run's, possibly deleted, log dir
        cfg.visualizer.pop("name", None)
    install()  # load_from, --resume and Pretrained init_cfg load weights-only (densenas/safeload.py)
    try:
        runner = Runner.from_cfg(cfg)
        runner.train()
        metrics = runner.val_loop.run() if runner.val_loop is not None else {}
    except CheckpointLoadError as e:  # a checkpoint that needs code to load, or not a checkpoint at all
        print(f"error: {e}", file=sys.stderr)
        return 2
    if dist.is_main():
        print(f"final val metrics: {metrics}")
        note = task_of_config(cfg).metric_note("val") if runner.val_loop is not None and not metrics else ""
        if note:
            print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
