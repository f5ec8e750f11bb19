#!/usr/bin/env python
"""Compact segmentation models side by side: parameters, MAdds and CPU latency at 512x512 (Nekrasov et al.,
WACV 2020: "compact is not fast").

Every model is built from an exported mmseg config (``tools/export.py``: a found template or aux-cell
network, ``--baseline cgnet|fastscnn|erfnet|...``) as ``tools/test.py`` counts it (auxiliary heads excluded);
latency is the median of interleaved rounds (each round times every model once, after warm-up passes), so
the models share whatever else runs on the machine, and is printed as ratios to the first model too.

    python benchmarks/bench_compact.py work_dirs/template_found.py work_dirs/cgnet.py work_dirs/fastscnn.py
        [--size 512 512] [--rounds 15] [--threads 2] [--out compact.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

# OpenMP threads that spin while waiting make torch on a busy 2-core machine 5-10x slower (measured);
# sleeping waits cost nothing measurable when the machine is idle. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def build(path: str):
    """(model for counting and timing, deployed params) of an exported config, weights random."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope, init_default_scope

    from densenas.task import task_of_config

    cfg = Config.fromfile(path)
    if cfg.get("custom_imports"):
        from mmengine.utils import import_modules_from_strings

        import_modules_from_strings(**cfg.custom_imports)
    scope = cfg.get("default_scope", "mmseg")
    if DefaultScope.get_current_instance() is None or DefaultScope.get_current_instance().scope_name != scope:
        init_default_scope(scope)
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    backbone = cfg.model.get("backbone", {})
    if backbone.get("type") == "DenseNASBackbone":
        backbone.backbone.pretrained = False  # weights do not change the cost
    model = MODELS.build(cfg.model).eval()
    counted, params, channels, _ = task_of_config(cfg).test_cost_model(model, cfg)
    return counted, params, channels


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("configs", nargs="+", help="exported configs (tools/export.py)")
    p.add_argument("--size", type=int, nargs=2, default=[512, 512], metavar=("H", "W"))
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", help="also write the figures to this JSON file")
    args = p.parse_args()

    import torch

    from densenas.costs import count_madds

    if args.threads:
        torch.set_num_threads(args.threads)
    models = {}
    for path in args.configs:
        model, params, channels = build(path)
        x = torch.zeros(1, channels, *args.size)
        madds = count_madds(model, x)  # restores the wrapper's (training) mode: time it in eval mode
        models[Path(path).stem] = (model.eval(), x, params, madds)
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for r in range(args.warmup + args.rounds):
            for name, (model, x, *_rest) in models.items():
                t0 = time.perf_counter()
                model(x)
                if r >= args.warmup:
                    times[name].append((time.perf_counter() - t0) * 1000)
    first = statistics.median(next(iter(times.values())))
    print(f"{args.size[0]}x{args.size[1]}, {torch.get_num_threads()} threads, median of {args.rounds} "
          f"interleaved rounds")
    print(f"{'model':28s} {'params (M)':>10s} {'MAdds (G)':>10s} {'latency (ms)':>13s} {'x first':>8s}")
    rows = []
    for name, (_, _, params, madds) in models.items():
        lat = statistics.median(times[name])
        rows.append({"model": name, "params": params, "madds": madds, "latency_ms": lat})
        print(f"{name:28s} {params / 1e6:10.3f} {madds / 1e9:10.3f} {lat:13.1f} {lat / first:8.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
