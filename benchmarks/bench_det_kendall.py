#!/usr/bin/env python
"""Do cheap detection rewards rank architectures like longer training does? Kendall τ, measured.

NAS-FCOS (Wang et al., CVPR 2020) argues for the negative loss sum on the proxy validation set as the
search reward, because AP after a short proxy training is too noisy to rank candidates. This benchmark
samples architectures of a detection search config, scores each with the search's own evaluator (proxy
budget: both rewards, ``neg_loss`` and ``ap``, with early stopping off so every arch gets the same
training), trains each again for longer (``--long-iters`` stage-1 iterations plus the same share of
end-to-end ones), and prints Kendall τ between each proxy reward and the longer-trained AP.

    python benchmarks/bench_det_kendall.py [--config configs/search/nasfcos_fpn_proxy.py] [--archs 15]
        [--long-iters 320] [--out work_dirs/kendall.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# OpenMP threads that spin while waiting make torch on a busy 2-core machine 5-10x slower (measured);
# sleeping waits cost nothing measurable when the machine is idle. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs/search/nasfcos_fpn_proxy.py"))
    p.add_argument("--archs", type=int, default=15)
    p.add_argument("--long-iters", type=int, default=320, help="stage-1 iterations of the longer training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write every arch's figures to this JSON file")
    args = p.parse_args()

    import numpy as np

    from densenas.config import load_config, section
    from densenas.pipeline import build_backbone, build_space, resolve_device
    from densenas.pipeline_det import build_det_data, build_det_evaluator
    from densenas.tasks.detection import kendall_tau

    cfg = load_config(args.config)
    work = ROOT / "work_dirs" / "bench_det_kendall"
    work.mkdir(parents=True, exist_ok=True)
    data = build_det_data(section(cfg, "data"), source=args.config, log=lambda s: None)
    encoder, shapes = build_backbone(section(cfg, "backbone", {}), source=args.config)
    space = build_space(section(cfg, "space"), len(data.classes), source=args.config)
    ev = build_det_evaluator(cfg, space, encoder, shapes, data, resolve_device(cfg.get("device", "auto")),
                             work, log=lambda s: None)
    ev.cfg = dataclasses.replace(ev.cfg, early_stop=False, measure_cost=False)
    rng = np.random.default_rng(args.seed)
    archs, rows, t0 = [], [], time.perf_counter()
    while len(archs) < args.archs:
        a = space.sample(rng)
        if a.key not in {b.key for b in archs}:
            archs.append(a)
    for i, arch in enumerate(archs):
        short = ev.evaluate(arch, seed=i)
        if not short.ok:
            print(f"arch {i}: proxy evaluation failed ({short.error}); skipped")
            continue
        long = ev.train_longer(arch, args.long_iters, seed=i)
        rows.append({"arch": arch.to_dict(), "neg_loss": short.metrics["neg_loss"],
                     "ap": short.metrics["ap"], "long_ap": long["ap"], "long_neg_loss": long["neg_loss"]})
        print(f"arch {i + 1}/{len(archs)}: proxy neg_loss {rows[-1]['neg_loss']:.4f} AP {rows[-1]['ap']:.4f} | "
              f"long AP {long['ap']:.4f} ({time.perf_counter() - t0:.0f}s)", flush=True)
    long_ap = [r["long_ap"] for r in rows]
    print(f"\n{len(rows)} archs of {space.name}; proxy budget {ev.cfg.stage1.iters}+"
          f"{ev.cfg.stage2.iters if ev.cfg.stage2 else 0} iterations, longer training {args.long_iters}+ "
          f"(same stage-2 share); {time.perf_counter() - t0:.0f}s")
    for key, label in (("neg_loss", "negative loss (proxy)"), ("ap", "AP (proxy)")):
        print(f"  Kendall tau({label:22s}, AP after longer training) = "
              f"{kendall_tau([r[key] for r in rows], long_ap):+.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
