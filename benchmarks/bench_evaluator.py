#!/usr/bin/env python
"""Evaluator speed-ups of Nekrasov et al. (CVPR 2019), measured side by side in one run:

1. stage-1 training step with cached (frozen) encoder features vs recomputing the encoder every step;
2. evaluator cost per candidate with early stopping (stage 2 only above the running mean of stage-1
   rewards) vs always training both stages, on the same sampled architectures;
3. one worker's speed-ups (issue "scale out", item 5): whole candidates (both stages, validation, cost)
   with the settings of before (NCHW tensors, a for-loop AdamW, torch's threads) vs channels-last, vs
   channels-last with the fused AdamW, vs both with 1 thread (the evaluator's defaults), same archs and
   seeds, taking turns arch by arch; prints seconds per candidate, the ratio and the largest reward
   difference;
4. the host reads of a training loop (issue #23): the losses' finiteness read every step
   (``evaluator.check_every=1``, as the loop did before) vs once every 25 steps (the default), same archs
   and seeds; the rewards must be equal (reading less often changes no arithmetic). On the CPU a read is
   cheap; on CUDA each one waits for the GPU (``benchmarks/gpu_check.py --parts profile`` counts them).

    python benchmarks/bench_evaluator.py [--config configs/search/auxcell_proxy.py] [--archs 8] [--parts 1,2,3,4]
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
    p.add_argument("--parts", default="1,2,3,4", help="which comparisons to run")
    p.add_argument("--speed-archs", type=int, default=6, help="sampled archs for comparison 3")
    args = p.parse_args()
    parts = {int(x) for x in args.parts.split(",")}

    from densenas.build import build_search
    from densenas.config import load_config
    from densenas.evaluation.proxy import ProxyTrainer

    torch.manual_seed(0)
    cfg = load_config(args.config, ["task.teacher=None"])  # KD off: the step timings compare feature paths
    search = build_search(cfg, log=lambda s: None)
    space, encoder, shapes, ev = search.space, search.encoder, search.shapes, search.evaluator
    ecfg = dataclasses.replace(ev.cfg, measure_cost=False)
    train = (search.task.images("train"), search.task.data.train[1])

    if 3 in parts:
        speedups(search, args.speed_archs)
    if 4 in parts:
        compare(search, {"host read every step (check_every=1)": dict(check_every=1),
                         "every 25 steps (the default)": dict(check_every=25)}, args.speed_archs)
    if 1 not in parts and 2 not in parts:
        return
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


def speedups(search, n_archs: int) -> None:
    """Comparison 3: whole candidates, the evaluator of before vs the faster settings, same archs/seeds."""
    threads = torch.get_num_threads()
    variants = {f"before (NCHW, loop AdamW, {threads} thr)": dict(memory_format="contiguous", fused_adamw=False,
                                                                  cpu_threads=None),
                f"channels-last ({threads} thr)": dict(memory_format="channels_last", fused_adamw=False,
                                                       cpu_threads=None),
                f"+ fused AdamW ({threads} thr)": dict(memory_format="channels_last", fused_adamw=True,
                                                       cpu_threads=None),
                "+ 1 thread (the default)": dict(memory_format="channels_last", fused_adamw=True, cpu_threads=1)}
    compare(search, variants, n_archs)


def compare(search, variants: dict[str, dict], n_archs: int) -> None:
    """Whole candidates (both stages) under each variant of the evaluator settings, same archs and seeds."""
    from densenas.evaluation.proxy import ProxyTrainer

    ev = search.evaluator
    # early stopping off: every candidate runs both stages, so each variant does the same work
    evs = {k: ProxyTrainer(search.task, search.space, search.encoder, search.shapes,
                           dataclasses.replace(ev.cfg, early_stop=False, **v), log=lambda s: None)
           for k, v in variants.items()}
    rng = np.random.default_rng(1)
    archs = [search.space.sample(rng) for _ in range(n_archs)]
    secs = {k: 0.0 for k in evs}
    rewards: dict[str, list[float]] = {k: [] for k in evs}
    for i, a in enumerate(archs):
        for k in (list(evs) if i % 2 == 0 else list(evs)[::-1]):  # take turns: load changes hit all alike
            t0 = time.perf_counter()
            rewards[k].append(evs[k].evaluate(a, seed=100 + i).reward)
            secs[k] += time.perf_counter() - t0
    base = next(iter(evs))
    print(f"one worker, {n_archs} archs, both stages each (OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}):")
    for k in evs:
        diff = max(abs(x - y) for x, y in zip(rewards[k], rewards[base]))
        print(f"  {k:<38} {secs[k] / n_archs:6.1f} s/candidate  {secs[base] / secs[k]:.2f}x  "
              f"max |reward - first| {diff:.1e}")


if __name__ == "__main__":
    main()
