#!/usr/bin/env python
"""Every densenas path on a GPU next to the CPU, side by side in one run (issue "scale out", item 4).

Four parts, each run once per device with the same seed, strategy and budget, so both devices train the
same archs (random search proposes the same sequence on both) and the rewards must agree up to
floating-point noise:

* ``seg``: a short auxiliary-cell decoder search (Nekrasov et al., CVPR 2019) on the bundled proxy set;
* ``det``: a short NAS-FCOS FPN search (Wang et al., CVPR 2020) inside mmdet;
* ``irnas``: IR-NAS supernet epochs (Zhang et al.), first-order DARTS;
* ``finetune``: the best ``seg`` arch exported to an mmseg config and fine-tuned by ``tools/train.py``
  (mmengine Runner) for ``--iters`` iterations; the CPU run trains ``--cpu-iters`` of them (same schedule
  shape) and the per-iteration times are compared;
* ``profile`` (issue #23): one both-stage ``seg`` candidate after a warm-up one, under ``torch.profiler``:
  wall time, GPU-busy percent (CUDA kernel time over wall), host synchronisations, host-to-device copies,
  kernel and CUDA-graph launches counted by the profiler, peak GPU memory; then the same arch and seed timed
  without the profiler four ways on CUDA: the step replayed from a CUDA graph or launched eagerly
  (``evaluator.cuda_graphs``), each with bf16 autocast and in fp32 (``evaluator.amp``), twice each;
* ``inflight`` (issue #23): ``k`` processes on the first device at once (``--inflight 1,2,4,8``), each
  training ``--inflight-candidates`` ``seg`` candidates (both stages); the ``max(k)`` worker processes are
  built and warmed up once, then each round's k workers start together; candidates per hour for each ``k``
  over the span from the first candidate's start to the last one's end. Ray's fractional
  ``gpus_per_worker`` does the same inside a search; plain processes measure it where Ray is not installed;
* ``paper`` (issue #23, item 5): the default search at the scale of Nekrasov et al.
  (``configs/search/auxcell_paper_scale.py``: 3,600 + 400 proxy images at 512 px, stage 1 282 iterations at
  batch 64, stage 2 113 at batch 32), two random candidates on the device under test only (on a CPU one
  would take hours and the cached features do not fit 24 GiB): seconds per candidate, candidates per
  GPU-hour with one in flight, next to NAS-FCOS's about 13 GPU-minutes per candidate;
* ``proposals`` (issue #23, item 7): the driver side. Each shipped sampling config's own strategy (the
  default surrogate) proposes ``--proposal-budget`` archs of its space (aux-cell 16 decisions, NAS-FCOS FPN
  35), each observed at once with a synthetic reward (an additive function of its decisions), and the
  seconds per proposal are printed at 10 / 25 / 50 / 100 observations, next to the ``seg`` part's seconds per
  candidate on each device when that part ran. Proposals run on the driver's CPU whatever the device, so
  the part runs once; in ``pipeline`` mode (the default with Ray, ``--workers``) and ``async`` mode a
  proposal overlaps the other candidates in flight and only delays the worker it is for.

    python benchmarks/gpu_check.py [--parts seg,det,irnas,finetune,profile,inflight,proposals,paper]
        [--devices cuda,cpu]
        [--out DIR]
    bash benchmarks/gpu_check.sh          # the same, refusing to start without a GPU

Prints one line per candidate / epoch as it finishes, one ``result:`` line per part, and a summary table
(seconds per candidate on each device, the ratio, the largest reward difference); writes ``summary.json``
into ``--out`` after every part. ``--reference-cores N`` runs the second device's side at the same time in a
process pinned to the last N cores (this one keeps the others): on a 16-core GPU machine the one-thread CPU
reference then costs no extra wall time. SIGINT (``DEADLINE`` of ``.gpu/run.sh``) stops both sides, and
the parts measured so far are printed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402 (after OMP_WAIT_POLICY)

ROOT = Path(__file__).resolve().parents[1]

#: part -> (config, budget overrides); random search so both devices see the same archs
PARTS = {
    "seg": ("configs/search/auxcell_proxy.py",
            ["strategy.type=random", "search.num_candidates=4", "search.time_budget_s=None",
             "search.promote=None"]),  # the candidates are timed; the default promotion would triple the part
    "det": ("configs/search/nasfcos_fpn_proxy.py", ["search.num_candidates=2", "search.time_budget_s=None"]),
    "irnas": ("configs/search/irnas_denoise_proxy.py", ["search.epochs=2", "search.time_budget_s=None"]),
    "paper": ("configs/search/auxcell_paper_scale.py",  # the teacher is trained once per search, not timed here
              ["strategy.type=random", "search.num_candidates=2", "search.promote=None", "task.teacher.iters=200"]),
}
#: parts run on the device under test only
FIRST_DEVICE_ONLY = ("paper",)
#: --smoke: the paper part at a size that checks the script on a CPU in a minute
PAPER_SMOKE = ["data.root=work_dirs/gpu_check/proxy_voc_paper_smoke", "data.image_size=128", "data.proxy.size=128",
               "data.proxy.num_train=64", "data.proxy.num_val=16", "evaluator.stage1.iters=4",
               "evaluator.stage2.iters=2", "task.teacher.iters=4"]
NASFCOS_GPU_MIN = 13  # NAS-FCOS: about 3,000 candidates in 28 GPU-days


def search_part(part: str, device: str, out: Path, log, tag: str) -> dict:
    """Run one part's search on ``device``; returns per-row seconds and rewards."""
    from densenas.build import build_search
    from densenas.config import load_config
    from densenas.history import History

    config, opts = PARTS[part]
    cfg = load_config(str(ROOT / config), [*opts, f"device={device}"])
    if part == "det":  # the config's REINFORCE keys are not random search's
        cfg.strategy = dict(type="random")
    work = out / f"{part}_{tag}"
    if work.exists():  # a fresh search each time: no history, checkpoint or cached teacher from before
        shutil.rmtree(work)
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    search = build_search(cfg, work_dir=work, log=lambda s: None)
    setup = time.perf_counter() - t0
    log(f"[{part} {device}] built in {setup:.1f}s (data, encoder, feature cache, teacher)")
    with History(work / "history.sqlite") as history:
        search.run(history, work, log=lambda s: log(f"[{part} {device}] {s}"))
        if search.kind == "supernet":
            rows = [(s.result.wall_time, s.result.reward, s.arch.key) for s in history.steps()]
        else:
            rows = [(c.result.wall_time, c.result.reward if c.result.ok else float("nan"), c.arch.key)
                    for c in history.finished()]
    return {"setup_s": setup, "seconds": [r[0] for r in rows], "rewards": [r[1] for r in rows],
            "archs": [r[2] for r in rows], "work_dir": str(work)}


def finetune_part(device: str, iters: int, out: Path, log, tag: str) -> dict:
    """Export the best ``seg`` arch of the first device's search and fine-tune it with tools/train.py."""
    arch = out / "seg_d0" / "best_arch.json"
    deadline = time.time() + 600
    while not arch.exists() and (out / "seg_d0").exists() and time.time() < deadline:
        time.sleep(2)  # a parallel reference process (--reference-cores) waits for the first device's search
    if not arch.exists():
        arch = out / f"seg_{tag}" / "best_arch.json"
    cfg = out / f"finetune_{tag}.py"
    work = out / f"finetune_{tag}"
    subprocess.run([sys.executable, str(ROOT / "tools/export.py"), str(arch), "--out", str(cfg),
                    "--iters", str(iters), "--val-interval", str(iters), "--work-dir", str(work)],
                   check=True, cwd=ROOT, capture_output=True)
    env = dict(os.environ)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the mmengine Runner uses CUDA whenever it sees a GPU
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "tools/train.py"), str(cfg)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    text = proc.stdout + proc.stderr
    (out / f"finetune_{tag}.log").write_text(text)
    if proc.returncode != 0:
        raise RuntimeError(f"tools/train.py on {device} failed (rc {proc.returncode}):\n{text[-3000:]}")
    times = [float(t) for t in re.findall(r"Iter\(train\).*?\btime: ([0-9.]+)", text)]
    losses = [float(v) for v in re.findall(r"Iter\(train\).*?\bloss: ([0-9.]+)", text)]
    miou = re.findall(r"mIoU: ([0-9.]+)", text)
    res = {"iters": iters, "wall_s": seconds, "s_per_iter": sum(times[1:]) / max(len(times) - 1, 1) if times else None,
           "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
           "mIoU": float(miou[-1]) if miou else None}
    log(f"[finetune {device}] {iters} iters in {seconds:.1f}s, {res['s_per_iter']} s/iter (mmengine log), "
        f"loss {res['loss_first']} -> {res['loss_last']}, mIoU {res['mIoU']}")
    return res


def _seg_evaluator(device: str):
    """The default search's evaluator on ``device`` (teacher off: the same work on every device) and its
    space."""
    from densenas.build import build_search
    from densenas.config import load_config

    cfg = load_config(str(ROOT / PARTS["seg"][0]), [*PARTS["seg"][1], f"device={device}", "task.teacher=None",
                                                    "evaluator.early_stop=False"])
    search = build_search(cfg, log=lambda s: None)
    return search.evaluator, search.space


def profile_part(device: str, log, tag: str) -> dict:
    """One both-stage seg candidate (after a warm-up one) under torch.profiler; on CUDA then the same arch and
    seed timed without the profiler with the step replayed from a CUDA graph or launched eagerly, each with
    bf16 autocast and in fp32 (``evaluator.cuda_graphs`` x ``evaluator.amp``: what wins is the default)."""
    import numpy as np
    from torch.profiler import ProfilerActivity, profile

    ev, space = _seg_evaluator(device)
    rng = np.random.default_rng(0)
    warm, arch = space.sample(rng), space.sample(rng)
    ev.evaluate(warm, seed=0)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        result = ev.evaluate(arch, seed=1)
        if cuda:
            torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    events = prof.key_averages()
    kernel_us = sum(e.self_device_time_total for e in events if getattr(e, "device_type", None)
                    == torch.autograd.DeviceType.CUDA) if cuda else 0.0
    count = {name: sum(e.count for e in events if e.key == name)
             for name in ("cudaStreamSynchronize", "cudaMemcpyAsync", "aten::item", "aten::_local_scalar_dense",
                          "cudaGraphLaunch", "cudaLaunchKernel")}
    res = {"wall_s": wall, "reward": result.reward, "gpu_busy_pct": 100 * kernel_us / 1e6 / wall if cuda else None,
           "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None, **count,
           "graphs_failed": dict(ev._graphs_failed)}
    log(f"[profile {device}] candidate {wall:.2f}s (with the profiler), reward {result.reward}, GPU busy "
        f"{res['gpu_busy_pct']}%, syncs {count['cudaStreamSynchronize']}, memcpy {count['cudaMemcpyAsync']}, "
        f"item {count['aten::item']}, graph launches {count['cudaGraphLaunch']}, kernel launches "
        f"{count['cudaLaunchKernel']}, peak {res['peak_mem_gb']} GB")
    variants = [("auto", "auto"), ("auto", "off"), ("off", "auto"), ("off", "off")] if cuda else [("off", "off")]
    res["variants"] = {}
    for graphs, amp in variants:
        ev.cfg.cuda_graphs, ev.cfg.amp = graphs, amp
        ev._graphs_failed.clear()
        times, rewards = [], []
        for _ in range(2):  # the second run is the one a search sees after its first candidate
            t0 = time.perf_counter()
            r = ev.evaluate(arch, seed=1)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            rewards.append(r.reward if r.ok else float("nan"))
        name = f"graphs={graphs},amp={amp}"
        res["variants"][name] = {"s": times, "reward": rewards, "graphs_failed": dict(ev._graphs_failed)}
        log(f"[profile {device}] {name}: {times[0]:.2f}s then {times[1]:.2f}s, reward {rewards[1]:.4f}"
            + (f", capture failed: {ev._graphs_failed}" if ev._graphs_failed else ""))
    ev.cfg.cuda_graphs, ev.cfg.amp = "auto", "auto"
    return res


def inflight_worker(device: str, n: int, seed: int) -> None:
    """One worker of the ``inflight`` part: builds its evaluator, prints ``ready``, then for every ``go`` line
    on stdin trains ``n`` candidates and prints one JSON line of timestamps and rewards."""
    import numpy as np

    ev, space = _seg_evaluator(device)
    rng = np.random.default_rng(seed)
    ev.evaluate(space.sample(rng), seed=seed)  # warm-up: cuDNN autotuning and allocator, as in a search
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        archs = [space.sample(rng) for _ in range(n)]
        start = time.time()
        rewards = [ev.evaluate(a, seed=seed + i).reward for i, a in enumerate(archs)]
        print(json.dumps({"start": start, "end": time.time(), "rewards": rewards}), flush=True)


def inflight_part(device: str, ks: list[int], n: int, log) -> dict:
    """Candidates per hour with k candidate processes sharing ``device``: max(ks) workers are built once
    (start-up excluded), then for each k the first k of them train ``n`` candidates each, started together;
    the rate is k * n over the span from the first start to the last end."""
    workers = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--inflight-worker",
                                 f"{device},{n},{100 * j}"], cwd=ROOT, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for j in range(max(ks))]

    def line_of(w) -> str:
        line = w.stdout.readline()
        if not line:
            w.wait()
            raise RuntimeError(f"inflight worker failed (rc {w.returncode}): {w.stderr.read()[-2000:]}")
        return line.strip()

    out = {}
    try:
        t0 = time.perf_counter()
        for w in workers:
            if line_of(w) != "ready":
                raise RuntimeError("inflight worker said something other than 'ready'")
        log(f"[inflight {device}] {len(workers)} workers built and warm in {time.perf_counter() - t0:.1f}s")
        for k in ks:
            for w in workers[:k]:
                w.stdin.write("go\n")
                w.stdin.flush()
            rows = [json.loads(line_of(w)) for w in workers[:k]]
            span = max(r["end"] for r in rows) - min(r["start"] for r in rows)
            out[k] = {"span_s": span, "candidates": k * n, "per_hour": 3600 * k * n / span,
                      "s_per_candidate_each": span * 1.0 / n}
            log(f"[inflight {device}] k={k}: {k * n} candidates in {span:.1f}s -> {out[k]['per_hour']:.0f} / hour")
    finally:
        for w in workers:
            if w.poll() is None:
                try:
                    w.stdin.close()
                except OSError:
                    pass
        for w in workers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
    return out


#: the sampling configs whose strategy the ``proposals`` part times
PROPOSAL_CONFIGS = ("configs/search/auxcell_proxy.py", "configs/search/nasfcos_fpn_proxy.py")


def proposals_part(budget: int, log, at: tuple[int, ...] = (10, 25, 50, 100)) -> dict:
    """Seconds per proposal of each config's strategy after ``n`` observations, for ``n`` in ``at``."""
    import numpy as np

    from densenas.build import build_search
    from densenas.config import load_config
    from densenas.result import Result

    out = {}
    for config in PROPOSAL_CONFIGS:
        search = build_search(load_config(str(ROOT / config)), build_evaluator=False, log=lambda m: None)
        strategy, decs = search.strategy, search.space.decisions()
        rng = np.random.default_rng(0)
        weights = {d.name: rng.normal(size=len(d.options)) for d in decs}  # an additive toy reward

        def reward(arch) -> float:
            return float(sum(weights[d.name][list(d.options).index(arch[d.name])] for d in decs))

        seconds = []
        for _ in range(budget):
            t0 = time.perf_counter()
            arch = strategy.propose()
            seconds.append(time.perf_counter() - t0)
            strategy.observe(arch, Result(reward=reward(arch)))
        # the mean over the 5 proposals made with about n observations (n - 5 .. n - 1)
        per = {n: float(np.mean(seconds[max(0, n - 5):n])) for n in at if n <= budget}
        name = Path(config).stem
        out[name] = {"strategy": type(strategy).__name__, "decisions": len(decs), "s_per_proposal": per,
                     "total_s": float(sum(seconds))}
        log(f"[proposals] {name} ({type(strategy).__name__}, {len(decs)} decisions): "
            + ", ".join(f"{v:.3f} s at {n}" for n, v in per.items()) + " observations")
    return out


def summary(results: dict, devices: list[str]) -> str:
    """The side-by-side table; ``results[part]`` holds one dict per device, in ``devices`` order."""
    a, b = devices
    lines = [f"{'part':<9} {'rows':>4} {a + ' s/row':>12} {b + ' s/row':>12} {'ratio':>7} {'max |dreward|':>14}"
             f"  same archs"]
    for part, per in results.items():
        if any("error" in r for r in per):
            lines.extend(f"{part:<9} {r['device']}: FAILED {str(r['error'])[:300]}" for r in per if "error" in r)
            per = [r for r in per if "error" not in r]
        if not per:
            continue
        if part == "proposals":
            seg = {r["device"]: r for r in results.get("seg", []) if "seconds" in r}
            for name, r in per[0].items():
                if name == "device":
                    continue
                last = max(r["s_per_proposal"], key=int)
                vs = ", ".join(f"{sum(x['seconds']) / len(x['seconds']):.2f} s per {d} candidate"
                               for d, x in seg.items())
                lines.append(f"{part:<9} {name} ({r['decisions']} decisions): "
                             + ", ".join(f"{v:.3f} s @{n}" for n, v in r["s_per_proposal"].items())
                             + (f"; the {last}-observation proposal vs {vs}" if vs else ""))
            continue
        if part == "profile":
            for r in per:
                shown = {k: v for k, v in r.items() if k != "variants"}
                lines.append(f"{part:<9} {r['device']}: {json.dumps(shown, default=str)}")
                for name, v in r.get("variants", {}).items():
                    lines.append(f"{'':<9} {r['device']} {name}: " + " then ".join(f"{t:.2f}" for t in v["s"])
                                 + f" s, reward {v['reward'][-1]:.4f}"
                                 + (f", capture failed: {v['graphs_failed']}" if v["graphs_failed"] else ""))
            continue
        if part in ("inflight", *FIRST_DEVICE_ONLY):
            for r in per:
                shown = {k: v for k, v in r.items() if k not in ("device", "archs", "work_dir")}
                lines.append(f"{part:<9} {r['device']}: {json.dumps(shown, default=str)}")
            continue
        if len(per) < 2:
            lines.extend(f"{part:<9} {r['device']}: {json.dumps(r, default=str)[:300]}" for r in per)
            continue
        if part == "finetune":
            x, y = per
            if x.get("s_per_iter") and y.get("s_per_iter"):
                lines.append(f"{part:<9} {'iter':>4} {x['s_per_iter']:>12.4f} {y['s_per_iter']:>12.4f} "
                             f"{y['s_per_iter'] / x['s_per_iter']:>7.1f} {'':>14}  mIoU {x['mIoU']} / {y['mIoU']}")
            continue
        x, y = per
        if "seconds" not in x or "seconds" not in y:
            continue
        n = min(len(x["seconds"]), len(y["seconds"]))
        sx, sy = sum(x["seconds"][:n]) / n, sum(y["seconds"][:n]) / n
        dr = max((abs(p - q) for p, q in zip(x["rewards"][:n], y["rewards"][:n])), default=float("nan"))
        lines.append(f"{part:<9} {n:>4} {sx:>12.2f} {sy:>12.2f} {sy / sx:>7.1f} {dr:>14.2e}  "
                     f"{x['archs'][:n] == y['archs'][:n]}")
    return "\n".join(lines)


def prebuild_paper_set(log) -> subprocess.Popen | None:
    """Start building the ``paper`` part's proxy set (thousands of 512 px images, minutes of one CPU core)
    in a background process, so that it is ready when the part runs after the others."""
    from densenas.config import load_config

    config, opts = PARTS["paper"]
    data = load_config(str(ROOT / config), opts).data
    if not data.get("layout") == "proxy":
        return None
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from datasets.proxy import build_proxy_voc; "
            "import json; build_proxy_voc(sys.argv[2], **json.loads(sys.argv[3]))")
    log(f"[paper] building {data['root']} ({dict(data['proxy'])}) in the background")
    return subprocess.Popen([sys.executable, "-c", code, str(ROOT), str(ROOT / data["root"]),
                             json.dumps(dict(data["proxy"]))], cwd=ROOT)


def run_part(part: str, i: int, dev: str, args, out: Path, log) -> dict | None:
    """One part on device ``i`` (``None`` where the part does not run there)."""
    tag = f"d{i}"
    if part == "proposals":
        return proposals_part(args.proposal_budget, log) if i == 0 or args.side == 1 else None  # CPU either way
    if part in ("inflight", *FIRST_DEVICE_ONLY) and i > 0:  # the device under test only
        return None
    if part == "inflight":
        return inflight_part(dev, [int(k) for k in args.inflight.split(",")], args.inflight_candidates, log)
    if part == "profile":
        return profile_part(dev, log, tag)
    if part == "finetune":
        return finetune_part(dev, args.iters if i == 0 else args.cpu_iters, out, log, tag)
    res = search_part(part, dev, out, log, tag)
    if part in FIRST_DEVICE_ONLY:
        per = sum(res["seconds"]) / max(len(res["seconds"]), 1)
        res.update(s_per_candidate=per, per_gpu_hour_k1=3600 / per if per else None,
                   vs_nasfcos=f"{per / 60:.1f} min per candidate vs NAS-FCOS's ~{NASFCOS_GPU_MIN} GPU-min")
    return res


def _merge(results: dict, other: dict) -> None:
    """Put the second device's rows of ``other`` after the first device's rows of ``results``."""
    for part, rows in other.items():
        results.setdefault(part, []).extend(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="seg,det,irnas,finetune",
                   help="any of seg,det,irnas,finetune,profile,inflight,proposals,paper")
    p.add_argument("--devices", default="cuda,cpu", help="two devices, the first is the one under test")
    p.add_argument("--iters", type=int, default=200, help="fine-tuning iterations on the first device")
    p.add_argument("--cpu-iters", type=int, default=40, help="fine-tuning iterations on the second device")
    p.add_argument("--out", default="work_dirs/gpu_check")
    p.add_argument("--smoke", action="store_true", help="tiny budgets (1 candidate / epoch, 10 iterations): "
                                                        "checks the script itself, e.g. on CPU")
    p.add_argument("--inflight", default="1,2,4,8", help="k values of the inflight part")
    p.add_argument("--inflight-candidates", type=int, default=6, help="candidates per process, inflight part")
    p.add_argument("--proposal-budget", type=int, default=100, help="observations of the proposals part")
    p.add_argument("--paper-train", type=int, default=3600,
                   help="training images of the paper part (the per-candidate budget is the paper's iterations "
                        "whatever the set size; fewer images only shorten building the set on first use)")
    p.add_argument("--reference-cores", type=int, default=0,
                   help="run the second device's side in a parallel process pinned to the last N of this "
                        "process's CPU cores; this process and its children keep the others. Saves the wall "
                        "time of the one-thread CPU reference on a many-core GPU machine")
    p.add_argument("--side", type=int, choices=(0, 1), default=None, help=argparse.SUPPRESS)
    p.add_argument("--inflight-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.inflight_worker:
        dev, n, seed = args.inflight_worker.split(",")
        inflight_worker(dev, int(n), int(seed))
        return 0
    if args.smoke:
        for part, (config, opts) in PARTS.items():
            PARTS[part] = (config, [*opts, "search.epochs=1" if part == "irnas" else "search.num_candidates=1",
                                    *(PAPER_SMOKE if part == "paper" else [])])
        args.iters = args.cpu_iters = 10
        args.inflight_candidates = 1
        args.proposal_budget = 12
    elif args.paper_train != 3600:
        config, opts = PARTS["paper"]
        PARTS["paper"] = (config, [*opts, f"data.proxy.num_train={args.paper_train}",
                                   f"data.root=data/proxy_voc_paper_{args.paper_train}"])
    devices = args.devices.split(",")
    parts = args.parts.split(",")
    unknown = sorted(set(parts) - {*PARTS, "finetune", "profile", "inflight", "proposals"})
    if len(devices) != 2 or unknown:
        p.error(f"--devices needs two devices; unknown parts {unknown}")
    if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
        print("error: no CUDA device visible to torch (pass --devices cpu,cpu for a dry run)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    prefix = "" if args.side is None else f"[side {args.side}] "

    def log(s: str) -> None:
        print(f"{time.perf_counter() - t_start:7.1f}s {prefix}{s}", flush=True)

    if torch.cuda.is_available() and args.side != 1:
        log(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, {os.cpu_count()} CPU cores")
    sides = [0, 1] if args.side is None else [args.side]
    reference = None
    if args.reference_cores and args.side is None:
        have = sorted(os.sched_getaffinity(0))
        if not 0 < args.reference_cores < len(have):
            p.error(f"--reference-cores {args.reference_cores}: this process has {len(have)} cores; leave some "
                    f"for the device under test")
        ref, rest = set(have[-args.reference_cores:]), set(have[:-args.reference_cores])
        cmd = [sys.executable, str(Path(__file__).resolve()), "--side", "1", "--parts",
               ",".join(x for x in parts if x not in ("inflight", *FIRST_DEVICE_ONLY)), "--devices", args.devices,
               "--out", str(out), "--cpu-iters", str(args.cpu_iters), "--proposal-budget", str(args.proposal_budget),
               *(["--smoke"] if args.smoke else [])]
        reference = subprocess.Popen(cmd, cwd=ROOT, preexec_fn=lambda: os.sched_setaffinity(0, ref))
        os.sched_setaffinity(0, rest)  # inherited by the inflight workers and tools/train.py
        parts = [x for x in parts if x != "proposals"]  # timed in the reference process, off these cores
        log(f"the {devices[1]} side runs in process {reference.pid} on cores {sorted(ref)}; this one on "
            f"{len(rest)} others")
        sides = [0]
    if args.side == 1:  # the parallel reference process: proposals here, off the device under test's cores
        parts = [x for x in parts if x != "proposals"] + (["proposals"] if "proposals" in parts else [])
    prebuild = prebuild_paper_set(log) if "paper" in parts and 0 in sides and parts[0] != "paper" else None
    results: dict = {}
    interrupted = False
    for part in parts:
        for i in sides:
            dev = devices[i]
            try:
                if part == "paper" and prebuild is not None and prebuild.wait() != 0:
                    raise RuntimeError(f"building the paper set failed (rc {prebuild.returncode})")
                res = run_part(part, i, dev, args, out, log)
            except KeyboardInterrupt:  # DEADLINE on the GPU machine: keep what was measured
                log(f"[{part} {dev}] interrupted")
                interrupted = True
                break
            except Exception as e:  # one broken path must not hide the others' figures
                log(f"[{part} {dev}] FAILED: {type(e).__name__}: {str(e)[:2000]}")
                res = {"error": f"{type(e).__name__}: {e}"}
            if res is None:
                continue
            results.setdefault(part, []).append({"device": dev, **res})
            log(f"[{part} {dev}] result: {json.dumps({k: v for k, v in res.items() if k != 'archs'}, default=str)[:1500]}")
            name = "summary.json" if args.side is None else f"results_d{args.side}.json"
            (out / name).write_text(json.dumps(results, indent=1, default=str))
        if interrupted:
            break
    if args.side is not None:
        return 0
    if reference is not None:
        try:
            reference.wait()
        except KeyboardInterrupt:
            reference.send_signal(2)
            try:
                reference.wait(timeout=15)
            except subprocess.TimeoutExpired:
                reference.kill()
        path = out / "results_d1.json"
        if path.exists():
            _merge(results, json.loads(path.read_text()))
        else:
            log("the reference process wrote no results")
    (out / "summary.json").write_text(json.dumps(results, indent=1, default=str))
    print(summary(results, devices))
    log("done")
    return 1 if any("error" in v for per in results.values() for v in per) else 0


if __name__ == "__main__":
    sys.exit(main())
