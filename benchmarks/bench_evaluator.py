#!/usr/bin/env python
"""Evaluator speed-ups of Nekrasov et al. (CVPR 2019), measured side by side in one run:

1. stage-1 training step with cached (frozen) encoder features vs recomputing the encoder every step;
2. evaluator cost per candidate with early stopping (stage 2 only above the running mean of stage-1
   rewards) vs always training both stages, on the same sampled architectures.

    python benchmarks/bench_evaluator.py [--config configs/search/auxcell_proxy.py] [--archs 8]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# OpenMP threads that spin while waiting make torch on a busy 2-core machine 5-10x slower (measured);
# sleeping waits cost nothing measurable when the machine is idle. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402 (after OMP_WAIT_POLICY)


def step_times(encoder, decoder, images, labels, cache, steps: int, batch: int) -> tuple[float, float]:
    """Seconds per stage-1 step: (cached features, encoder recomputed under no_grad)."""
    from densenas.tasks.segmentation.losses import seg_loss

    opt = torch.optim.AdamW(decoder.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    out = []
    for cached in (True, False):
        for i in range(steps + 2):
            if i == 2:
                t0 = time.perf_counter()
            idx = torch.randint(len(images), (batch,), generator=gen)
            if cached:
                feats = cache.batch(idx)
            else:
                with torch.no_grad():
                    feats = encoder(images[idx])
            res = decoder(feats)
            logits = res[0] if isinstance(res, tuple) else res
            loss = seg_loss(logits, labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        out.append((time.perf_counter() - t0) / steps)
    return out[0], out[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs/search/auxcell_proxy.py"))
    p.add_argument("--archs", type=int, default=8, help="sampled archs for the early-stopping comparison")
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()

    from densenas.build import build_search
    from densenas.config import load_config
    from densenas.evaluation.proxy import ProxyTrainer

    torch.manual_seed(0)
    cfg = load_config(args.config, ["task.teacher=None"])  # KD off: the step timings compare feature paths
    search = build_search(cfg, log=lambda s: None)
    space, encoder, shapes, ev = search.space, search.encoder, search.shapes, search.evaluator
    ecfg = dataclasses.replace(ev.cfg, measure_cost=False)
    train = (search.task.images("train"), search.task.data.train[1])

    # 1. cached features vs recomputing the encoder
    decoder = space.build(space.default_arch(), shapes).train()
    cached, recomputed = step_times(encoder, decoder, *train, ev.caches["train"], args.steps,
                                    ecfg.stage1.batch_size)
    print(f"stage-1 step, batch {ecfg.stage1.batch_size} at {train[0].shape[-1]}px: "
          f"cached {cached * 1e3:.1f} ms vs recomputed encoder {recomputed * 1e3:.1f} ms "
          f"-> {recomputed / cached:.2f}x faster with the cache "
          f"(one-off cache cost {ev.cache_seconds:.2f}s = {ev.cache_seconds / cached:.0f} cached steps)")

    # 2. early stopping vs always both stages, same archs, same seeds; the two evaluators take turns
    # arch by arch so that machine load changes hit both sides alike
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(args.archs)]
    evs = {early: ProxyTrainer(search.task, space, encoder, shapes, dataclasses.replace(ecfg, early_stop=early),
                               log=lambda s: None)
           for early in (True, False)}
    secs = {True: 0.0, False: 0.0}
    res: dict[bool, list] = {True: [], False: []}
    for i, a in enumerate(archs):
        for early in ((True, False) if i % 2 == 0 else (False, True)):
            t0 = time.perf_counter()
            res[early].append(evs[early].evaluate(a, seed=i))
            secs[early] += time.perf_counter() - t0
    (t_es, r_es), (t_all, r_all) = (secs[True], res[True]), (secs[False], res[False])
    n2 = sum(r.stage == 2 for r in r_es)
    print(f"evaluator on {len(archs)} archs: early stopping {t_es / len(archs):.1f} s/candidate "
          f"({n2}/{len(archs)} reached stage 2) vs both stages always {t_all / len(archs):.1f} "
          f"s/candidate -> {t_all / t_es:.2f}x cheaper with early stopping")
    best_es = max(range(len(archs)), key=lambda i: r_es[i].reward or -1)
    best_all = max(range(len(archs)), key=lambda i: r_all[i].reward or -1)
    print(f"best arch by final reward: early stopping #{best_es}, both stages #{best_all} "
          f"({'same' if best_es == best_all else 'different'})")


if __name__ == "__main__":
    main()
