#!/usr/bin/env python
"""Memory of Ray workers holding a search's evaluator: large tensors shared through the object store
(``densenas/ray_share.py``, the default) vs pickled into each worker as before, side by side in one run.

For the search CONFIG the evaluator is built once (proxy data, cached encoder features); then for each setting
a :class:`~densenas.ray_executor.RayExecutor` with ``--workers`` workers is started on a fresh local Ray
instance, and once every worker holds its copy, each worker's private memory (USS: the pages only that
process maps, ``psutil.Process.memory_full_info().uss``) and resident set (RSS, shared pages included) are
read. Shared, a worker's USS should not grow with the evaluator; pickled, it holds the whole payload.

    python benchmarks/bench_ray_memory.py [--config configs/search/keypoints_ext_proxy_1200.py] [--workers 2]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Ray on 127.0.0.1 only (ray_executor.py)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def worker_memory(ex) -> list[tuple[float, float]]:
    """(USS, RSS) in MiB of each worker of a started executor."""
    import psutil

    out = []
    for name in ex.names.values():
        pid = int(re.search(r"pid (\d+)", name).group(1))
        info = psutil.Process(pid).memory_full_info()
        out.append((info.uss / 2**20, info.rss / 2**20))
    return out


def measure(evaluator, space, workers: int, shared: bool) -> tuple[float, list[tuple[float, float]]]:
    """(payload MiB, per-worker (USS, RSS) MiB) with the sharing on or off, on a fresh local Ray instance."""
    import logging

    import ray

    from densenas import ray_executor
    from densenas.parallel import ParallelCfg

    tmp = tempfile.mkdtemp(prefix="dnbench", dir="/tmp")
    lines: list[str] = []
    saved = ray_executor.shared_tensors
    if not shared:
        ray_executor.shared_tensors = contextlib.nullcontext  # pickled into every worker, as before
    try:
        ray.init(num_cpus=workers, _node_ip_address="127.0.0.1", include_dashboard=False, _temp_dir=tmp,
                 logging_level=logging.WARNING, log_to_driver=False)
        ex = ray_executor.RayExecutor(evaluator, space, ParallelCfg(workers=workers, cpus_per_worker=1),
                                      log=lines.append, connection=(True, tmp))
        try:
            mem = worker_memory(ex)
            payload = ex._size(ex.payload) / 2**20
        finally:
            ex.close()
    finally:
        ray_executor.shared_tensors = saved
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return payload, mem


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/search/keypoints_ext_proxy_1200.py")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)

    from densenas.build import build_search
    from densenas.config import load_config

    search = build_search(load_config(args.config, args.cfg_options),
                          work_dir=Path(tempfile.mkdtemp(prefix="bench_ray_memory_")), log=print)
    print(f"{args.config}: {args.workers} workers")
    rows = {}
    for shared in (False, True):
        payload, mem = measure(search.evaluator, search.space, args.workers, shared)
        rows[shared] = mem
        what = "shared (default)" if shared else "pickled per worker"
        per = ", ".join(f"w{i + 1} USS {u:.0f} / RSS {r:.0f}" for i, (u, r) in enumerate(mem))
        print(f"  {what:20s}: payload {payload:.0f} MiB; {per} MiB")
    uss = {k: sum(u for u, _ in v) / len(v) for k, v in rows.items()}
    print(f"mean worker USS, shared / pickled: {uss[True]:.0f} / {uss[False]:.0f} MiB = {uss[True] / uss[False]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
