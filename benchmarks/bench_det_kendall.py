#!/usr/bin/env python
"""Do cheap detection rewards rank architectures like longer training does? Kendall τ, measured.

NAS-FCOS (Wang et al., CVPR 2020) argues for the negative loss sum on the proxy validation set as the
search reward, because AP after a short proxy training is too noisy to rank candidates. This benchmark
samples architectures of a detection search config, scores each with the search's own evaluator (proxy
budget: both rewards, ``neg_loss`` and ``ap``, with early stopping off so every arch gets the same
training), trains each again for longer (``--long-iters`` stage-1 iterations plus the same share of
end-to-end ones), and prints Kendall τ between each proxy reward and the longer-trained AP.

With ``--repeat`` (default) every arch is trained for longer a second time with another seed, and the τ
between the two longer-trained APs is printed as the noise ceiling: no cheap reward can rank archs by
longer-trained AP better than that AP ranks them itself across seeds.

Every finished arch is written to ``work_dirs/bench_det_kendall/<settings>/arch_<i>.json`` at once, so a
killed run resumes where it stopped, and ``--shard K/N`` lets N processes (one thread each) share the
archs on a multi-core machine; the run that finds every arch done prints the result.

    python benchmarks/bench_det_kendall.py [--config configs/search/nasfcos_fpn_proxy.py] [--archs 15]
        [--long-iters 320] [--proxy-scales 1 2] [--no-repeat] [--shard 0/2] [--out kendall.json]
        [--cfg-options data.root=data/proxy_coco_big data.proxy.num_val=96]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# OpenMP threads that spin while waiting make torch on a busy 2-core machine 5-10x slower (measured);
# sleeping waits cost nothing measurable when the machine is idle. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs/search/nasfcos_fpn_proxy.py"))
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides, as for tools/search.py (e.g. data.proxy.num_val=96)")
    p.add_argument("--archs", type=int, default=15)
    p.add_argument("--long-iters", type=int, default=320, help="stage-1 iterations of the longer training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--proxy-scales", type=float, nargs="+", default=[1.0],
                   help="proxy budgets to compare, as multiples of the config's stage-1/stage-2 iterations")
    p.add_argument("--repeat", action=argparse.BooleanOptionalAction, default=True,
                   help="train each arch for longer twice (two seeds) to measure the noise ceiling")
    p.add_argument("--shard", default="0/1", help="K/N: evaluate only the archs i with i %% N == K")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default=None, help="also write every arch's figures to this JSON file")
    args = p.parse_args()

    import numpy as np
    import torch

    from densenas.build import build_search
    from densenas.config import load_config
    from densenas.tasks.detection.metrics import kendall_tau

    shard, num_shards = (int(v) for v in args.shard.split("/"))
    if not 0 <= shard < num_shards:
        raise SystemExit(f"--shard {args.shard}: need K/N with 0 <= K < N")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.cfg_options)
    work = ROOT / "work_dirs" / "bench_det_kendall"
    scales = "-".join(f"{x:g}" for x in args.proxy_scales)
    options = "".join(f"_{o}" for o in sorted(args.cfg_options)).replace("/", "-")
    rows_dir = work / (f"{Path(args.config).stem}{options}_n{args.archs}_seed{args.seed}_long{args.long_iters}"
                       f"_proxy{scales}{'_rep' if args.repeat else ''}")
    rows_dir.mkdir(parents=True, exist_ok=True)
    search = build_search(cfg, work_dir=work, log=lambda s: None)
    space, ev = search.space, search.evaluator
    base = dataclasses.replace(ev.cfg, early_stop=False, measure_cost=False)
    budgets = {}  # proxy label -> evaluator config at that budget
    for scale in args.proxy_scales:
        s1 = dataclasses.replace(base.stage1, iters=max(1, round(base.stage1.iters * scale)))
        s2 = None if base.stage2 is None else dataclasses.replace(base.stage2, iters=round(base.stage2.iters * scale))
        budgets[f"{s1.iters}+{s2.iters if s2 else 0}"] = dataclasses.replace(base, stage1=s1, stage2=s2)
    rng = np.random.default_rng(args.seed)
    archs, t0 = [], time.perf_counter()
    while len(archs) < args.archs:
        a = space.sample(rng)
        if a.key not in {b.key for b in archs}:
            archs.append(a)
    print(f"{len(archs)} archs of {space.name}, shard {args.shard}, rows in {rows_dir}", flush=True)
    for i, arch in enumerate(archs):
        path = rows_dir / f"arch_{i:03d}.json"
        if i % num_shards != shard or path.is_file():
            continue
        row = {"arch": arch.to_dict()}
        for label, bcfg in budgets.items():
            ev.cfg = bcfg
            short = ev.evaluate(arch, seed=i)
            if not short.ok:
                row["error"] = f"proxy evaluation at {label} failed: {short.error}"
                break
            row[f"neg_loss@{label}"], row[f"ap@{label}"] = short.metrics["neg_loss"], short.metrics["ap"]
        if "error" not in row:
            ev.cfg = base
            long = ev.train_longer(arch, args.long_iters, seed=i)
            row.update(long_ap=long["ap"], long_neg_loss=long["neg_loss"])
            if args.repeat:
                row["long_ap_seed2"] = ev.train_longer(arch, args.long_iters, seed=1000 + i)["ap"]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(row, indent=1) + "\n")
        tmp.replace(path)
        if "error" in row:
            print(f"arch {i}: {row['error']}; left out", flush=True)
            continue
        proxy = " | ".join(f"{lb}: neg_loss {row[f'neg_loss@{lb}']:.4f} AP {row[f'ap@{lb}']:.4f}" for lb in budgets)
        again = f", again {row['long_ap_seed2']:.4f}" if args.repeat else ""
        print(f"arch {i + 1}/{len(archs)}: {proxy} | long AP {row['long_ap']:.4f}{again} "
              f"({time.perf_counter() - t0:.0f}s)", flush=True)

    done = sorted(rows_dir.glob("arch_*.json"))
    if len(done) < len(archs):
        print(f"{len(done)}/{len(archs)} archs done in {rows_dir}; run the other shards (or this command "
              f"again without --shard) to finish")
        return
    rows = [r for r in (json.loads(p.read_text()) for p in done) if "error" not in r]
    long_ap = [r["long_ap"] for r in rows]
    print(f"\n{len(rows)} archs of {space.name} ({len(done) - len(rows)} failed); longer training "
          f"{args.long_iters}+ stage-1 iterations (same stage-2 share)")
    for lb in budgets:
        for key, name in (("neg_loss", "negative loss"), ("ap", "AP")):
            tau = kendall_tau([r[f"{key}@{lb}"] for r in rows], long_ap)
            print(f"  Kendall tau({name} after {lb} iterations, AP after longer training) = {tau:+.3f}")
    if args.repeat:
        print(f"  noise ceiling: Kendall tau(AP after longer training, same with another seed) = "
              f"{kendall_tau([r['long_ap_seed2'] for r in rows], long_ap):+.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")

if __name__ == "__main__":
    main()
