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
  shape) and the per-iteration times are compared.

    python benchmarks/gpu_check.py [--parts seg,det,irnas,finetune] [--devices cuda,cpu] [--out DIR]
    bash benchmarks/gpu_check.sh          # the same, refusing to start without a GPU

Prints one line per candidate / epoch as it finishes and a summary table (seconds per candidate on each
device, the ratio, the largest reward difference); writes ``summary.json`` into ``--out``.
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
            ["strategy.type=random", "search.num_candidates=4", "search.time_budget_s=None"]),
    "det": ("configs/search/nasfcos_fpn_proxy.py", ["search.num_candidates=2", "search.time_budget_s=None"]),
    "irnas": ("configs/search/irnas_denoise_proxy.py", ["search.epochs=2", "search.time_budget_s=None"]),
}


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


def summary(results: dict, devices: list[str]) -> str:
    """The side-by-side table; ``results[part]`` holds one dict per device, in ``devices`` order."""
    a, b = devices
    lines = [f"{'part':<9} {'rows':>4} {a + ' s/row':>12} {b + ' s/row':>12} {'ratio':>7} {'max |dreward|':>14}"
             f"  same archs"]
    for part, per in results.items():
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="seg,det,irnas,finetune")
    p.add_argument("--devices", default="cuda,cpu", help="two devices, the first is the one under test")
    p.add_argument("--iters", type=int, default=200, help="fine-tuning iterations on the first device")
    p.add_argument("--cpu-iters", type=int, default=40, help="fine-tuning iterations on the second device")
    p.add_argument("--out", default="work_dirs/gpu_check")
    p.add_argument("--smoke", action="store_true", help="tiny budgets (1 candidate / epoch, 10 iterations): "
                                                        "checks the script itself, e.g. on CPU")
    args = p.parse_args(argv)
    if args.smoke:
        for part, (config, opts) in PARTS.items():
            PARTS[part] = (config, [*opts, "search.epochs=1" if part == "irnas" else "search.num_candidates=1"])
        args.iters = args.cpu_iters = 10
    devices = args.devices.split(",")
    parts = args.parts.split(",")
    unknown = sorted(set(parts) - {*PARTS, "finetune"})
    if len(devices) != 2 or unknown:
        p.error(f"--devices needs two devices; unknown parts {unknown}")
    if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
        print("error: no CUDA device visible to torch (pass --devices cpu,cpu for a dry run)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    def log(s: str) -> None:
        print(f"{time.perf_counter() - t_start:7.1f}s {s}", flush=True)

    if torch.cuda.is_available():
        log(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, {os.cpu_count()} CPU cores")
    results: dict = {}
    for part in parts:
        for i, dev in enumerate(devices):
            tag = f"d{i}"
            try:
                if part == "finetune":
                    res = finetune_part(dev, args.iters if i == 0 else args.cpu_iters, out, log, tag)
                else:
                    res = search_part(part, dev, out, log, tag)
            except Exception as e:  # one broken path must not hide the others' figures
                log(f"[{part} {dev}] FAILED: {type(e).__name__}: {str(e)[:2000]}")
                res = {"error": f"{type(e).__name__}: {e}"}
            results.setdefault(part, []).append({"device": dev, **res})
    (out / "summary.json").write_text(json.dumps(results, indent=1, default=str))
    print(summary(results, devices))
    log("done")
    return 1 if any("error" in v for per in results.values() for v in per) else 0


if __name__ == "__main__":
    sys.exit(main())
