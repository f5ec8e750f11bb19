#!/usr/bin/env python
"""Evaluate a fine-tuned model and report its metrics, parameters and multiply-adds.

The config's task (``densenas_task``, written by tools/export.py; else its ``default_scope``) says what to
count: mmseg segmentors without their aux heads, whole mmdet detectors up to the raw head outputs, restorers.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--input-size 512 512] [--json out.json]
        [--launcher none|pytorch|slurm]
    tools/dist_test.sh CONFIG CHECKPOINT GPUS [ARGS...]   # GPUS processes via torchrun

Several processes (``--launcher``, as tools/train.py) each evaluate their share of the test set; mmengine
gathers the results, and rank 0 counts the cost, prints and writes the figures.

The checkpoint is read weights-only (densenas/safeload.py): a file whose pickle would run code is refused,
naming the global it needs, and one whose weights are not exactly the model's is refused with the missing,
unexpected and differently shaped keys (never evaluated with random weights).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# OpenMP threads that spin while waiting make torch on a busy 2-core machine 5-10x slower (measured);
# sleeping waits cost nothing measurable when the machine is idle. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("checkpoint")
    p.add_argument("--work-dir")
    p.add_argument("--input-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="image size for MAdds (default: the config's test resize)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    p.add_argument("--launcher", choices=("none", "pytorch", "slurm"), default="none",
                   help="job launcher (multi-process runs)")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    import torch
    from densenas.config import ConfigError, read_config
    from mmengine.model import is_model_wrapper
    from mmengine.runner import Runner

    from densenas import distributed as dist

    from densenas.costs import count_madds
    from densenas.safeload import CheckpointLoadError, check_state_dict_keys, install, safe_torch_load
    from densenas.task import task_of_config

    for f in (args.config, args.checkpoint):
        if not Path(f).is_file():
            print(f"error: file not found: {f}", file=sys.stderr)
            return 2
    install()  # every checkpoint mmengine loads from here on is read weights-only (densenas/safeload.py)
    try:  # refused before anything is built: a file that needs code to load, no checkpoint, a bad config
        checkpoint, cfg = safe_torch_load(args.checkpoint), read_config(args.config, args.cfg_options)
    except (CheckpointLoadError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg.work_dir = args.work_dir or str(Path(args.checkpoint).parent)
    cfg.load_from = args.checkpoint
    if isinstance(cfg.get("visualizer"), dict):
        # mmengine keeps one visualizer per name for the whole process: a fixed name (mmseg's configs use
        # "visualizer") would send a second run's files to the first run's, possibly deleted, log dir
        cfg.visualizer.pop("name", None)
    try:
        dist.setup_runner(cfg, args.launcher, args.local_rank)
    except dist.LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        runner = Runner.from_cfg(cfg)
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        # mmengine loads with strict=False and only logs missing weights: it would report the metrics of
        # a randomly initialised model
        check_state_dict_keys(model, checkpoint, args.checkpoint)
        del checkpoint
        metrics = runner.test()
    except CheckpointLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not dist.is_main():  # the metrics are gathered on every rank; rank 0 alone reports them
        return 0
    task = task_of_config(cfg)
    counted, params, channels, what = task.test_cost_model(model.eval(), cfg)
    size = tuple(args.input_size or task.test_size(cfg, runner))
    madds = count_madds(counted, torch.zeros(1, channels, *size))
    out = {"metrics": {k: _number(v) for k, v in metrics.items()}, "params": params, "madds": madds,
           "input_size": list(size), "config": args.config, "checkpoint": args.checkpoint, "task": task.name}
    print(f"metrics: {out['metrics']}")
    if not metrics and task.metric_note("test"):
        print(task.metric_note("test"))
    print(f"params{what}: {params / 1e6:.3f} M; MAdds at {size[0]}x{size[1]}: {madds / 1e9:.3f} G")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


def _number(v):
    """A metric as a float (metrics that are text, like a copy-paste summary line, are kept as text)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


if __name__ == "__main__":
    sys.exit(main())
