#!/usr/bin/env python
"""Does the runtime matter? Eager PyTorch vs ONNX Runtime latency of template archs and compact baselines.

MnasNet (Tan et al., CVPR 2019) timed candidates on the phone they were for, FBNet (Wu et al., CVPR 2019)
estimated them from a per-op table of the target. A latency-aware search here times candidates with
``objective.runtime`` (densenas/latency.py). This benchmark measures, for ``--archs`` archs of a search space
(sampled, or the finished candidates of a search's ``--history``) and the compact baselines (CGNet,
Fast-SCNN, ERFNet; tools/export.py --baseline), at ``--size``:

* eager PyTorch and ONNX Runtime (CPU execution provider) latency, one thread each, median of ``--repeats``;
* Kendall tau between the two rankings (scipy.stats.kendalltau) over the archs, and with the baselines;
* FBNet's lookup-table estimate (densenas/latency_table.py, built here on first use) against ORT measured:
  its tau and median relative error;
* with ``--history``: the search's Pareto front (its metric vs latency) under each runtime.

    python benchmarks/bench_deploy.py --config configs/search/template_proxy.py --archs 30 --size 512 \\
        --out work_dirs/bench_deploy
    python benchmarks/bench_deploy.py --config configs/search/template_ort_proxy.py \\
        --history work_dirs/template_ort_proxy/history.sqlite --size 512 --out work_dirs/bench_deploy_front

Writes ``table.md``, ``latency.json``, ``eager_vs_ort.png`` (and ``fronts.png``) in ``--out``. Time it on an
otherwise idle machine: both runtimes run one thread, side by side per model.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
BASELINES = ("cgnet", "fastscnn", "erfnet")


def candidates(args: argparse.Namespace) -> tuple[list[tuple[str, object, float | None]], object]:
    """``(name, model, metric or None)`` of the archs (encoder + candidate, as CostAware times them) and the
    built search (its space and evaluator)."""
    import numpy as np

    from densenas.build import build_search
    from densenas.config import load_config
    from densenas.evaluation.objective import _Deployed
    from densenas.history import History

    search = build_search(load_config(args.config, args.cfg_options), work_dir=Path(args.out) / "search",
                          log=lambda s: None)
    ev = getattr(search.evaluator, "inner", search.evaluator)
    rows: list[tuple[str, object, float | None]] = []
    if args.history:
        with History(args.history) as h:
            done = [c for c in h.finished() if c.result is not None and c.result.ok]
        for c in done[: args.archs]:
            metric = c.result.metrics.get("metric_reward", c.result.reward)
            rows.append((f"#{c.id}", _Deployed(ev.encoder, ev.candidate(c.arch)).eval(), float(metric)))
    else:
        rng = np.random.default_rng(args.seed)
        for i in range(args.archs):
            rows.append((f"arch{i}", _Deployed(ev.encoder, ev.candidate(search.space.sample(rng))).eval(), None))
    return rows, search


def baselines(args: argparse.Namespace) -> list[tuple[str, object, float | None]]:
    """The compact baselines as tools/test.py counts them (whole networks up to the logits)."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope

    from densenas.task import task_of_config

    import importlib.util

    spec = importlib.util.spec_from_file_location("tools_export", ROOT / "tools" / "export.py")
    module = importlib.util.module_from_spec(spec)  # the tools are scripts, not a package
    spec.loader.exec_module(module)
    export = module.main
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.baselines:
            path = Path(tmp) / f"{name}.py"
            if export(["--baseline", name, "--out", str(path), "--crop", str(args.size)]) != 0:
                raise RuntimeError(f"tools/export.py --baseline {name} failed")
            cfg = Config.fromfile(str(path))
            with DefaultScope.overwrite_default_scope(cfg.get("default_scope", "mmseg")):
                model = MODELS.build(cfg.model).eval()
            graph = task_of_config(cfg).test_cost_model(model, cfg)[0]
            out.append((name, graph, None))
    return out


def kendall(a: list[float], b: list[float]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs/search/template_proxy.py"))
    p.add_argument("--cfg-options", nargs="*", default=[])
    p.add_argument("--history", help="a search's history.sqlite: its finished candidates, with their metric")
    p.add_argument("--archs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baselines", nargs="*", default=list(BASELINES))
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--lut", help="latency table JSON (default <out>/lut_onnxruntime.json); 'none': skip it")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import torch

    from densenas.latency import measure
    from densenas.latency_table import LatencyTable, machine

    torch.set_num_threads(1)
    shape = (1, 3, args.size, args.size)
    archs, _ = candidates(args)
    models = archs + baselines(args)
    table = None if args.lut == "none" else LatencyTable(args.lut or out / "lut_onnxruntime.json",
                                                         runtime="onnxruntime", threads=1, warmup=args.warmup,
                                                         repeats=args.repeats, log=None)
    recs = []
    for i, (name, model, metric) in enumerate(models):
        params = sum(p.numel() for p in model.parameters())
        eager = measure(model, shape, runtime="torch", warmup=args.warmup, repeats=args.repeats).ms
        ort = measure(model, shape, runtime="onnxruntime", threads=1, warmup=args.warmup, repeats=args.repeats).ms
        lut = table.estimate(model, shape) if table is not None else None
        recs.append(dict(model=name, params=params, eager_ms=eager, ort_ms=ort, lut_ms=lut, metric=metric,
                         baseline=i >= len(archs)))
        print(f"[{i + 1}/{len(models)}] {name}: {params / 1e3:.0f} K params, eager {eager:.1f} ms, ORT {ort:.1f} ms"
              + (f", table {lut:.1f} ms" if lut is not None else ""), flush=True)
    summary = summarise(recs, table is not None)
    summary.update(size=args.size, threads=1, machine=machine(), torch=torch.__version__, config=args.config,
                   history=args.history)
    (out / "latency.json").write_text(json.dumps({"summary": summary, "models": recs}, indent=1) + "\n")
    md = markdown(recs, summary)
    (out / "table.md").write_text(md + "\n")
    plots(recs, out, bool(args.history))
    print(md)
    return 0


def summarise(recs: list[dict], with_lut: bool) -> dict:
    """Kendall tau (eager vs ORT over the archs, and with the baselines), eager/ORT ratio, table error."""
    import numpy as np

    archs = [r for r in recs if not r["baseline"]]
    s = {"archs": len(archs), "tau_eager_ort_archs": kendall([r["eager_ms"] for r in archs], [r["ort_ms"] for r in archs]),
         "tau_eager_ort_all": kendall([r["eager_ms"] for r in recs], [r["ort_ms"] for r in recs]),
         "median_eager_over_ort": float(np.median([r["eager_ms"] / r["ort_ms"] for r in recs]))}
    if with_lut:
        s["tau_lut_ort_all"] = kendall([r["lut_ms"] for r in recs], [r["ort_ms"] for r in recs])
        s["median_lut_rel_error"] = float(np.median([abs(r["lut_ms"] - r["ort_ms"]) / r["ort_ms"] for r in recs]))
    return s


def markdown(recs: list[dict], s: dict) -> str:
    lines = ["| model | params (K) | eager PyTorch (ms) | ONNX Runtime (ms) | eager / ORT | table estimate (ms) | "
             "metric |", "|---|---|---|---|---|---|---|"]
    for r in sorted(recs, key=lambda r: r["ort_ms"]):
        lines.append(f"| {r['model']} | {r['params'] / 1e3:.0f} | {r['eager_ms']:.1f} | {r['ort_ms']:.1f} | "
                     f"{r['eager_ms'] / r['ort_ms']:.2f} | "
                     + (f"{r['lut_ms']:.1f}" if r["lut_ms"] is not None else "–") + " | "
                     + (f"{r['metric']:.4f}" if r["metric"] is not None else "–") + " |")
    lines.append("")
    lines.append(f"Kendall tau eager vs ORT: {s['tau_eager_ort_archs']:+.2f} over the {s['archs']} archs, "
                 f"{s['tau_eager_ort_all']:+.2f} with the baselines; median eager / ORT {s['median_eager_over_ort']:.2f}x"
                 + (f"; table estimate vs ORT measured: tau {s['tau_lut_ort_all']:+.2f}, median relative error "
                    f"{s['median_lut_rel_error']:.0%}" if "tau_lut_ort_all" in s else ""))
    return "\n".join(lines)


def plots(recs: list[dict], out: Path, fronts: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from densenas.pareto import non_dominated

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for base in (False, True):
        pts = [r for r in recs if r["baseline"] == base]
        ax.scatter([r["eager_ms"] for r in pts], [r["ort_ms"] for r in pts], s=18, marker="s" if base else "o",
                   label="compact baselines" if base else "archs")
        if base:
            for r in pts:
                ax.annotate(r["model"], (r["eager_ms"], r["ort_ms"]), fontsize=7)
    ax.set_xlabel("eager PyTorch latency (ms, 1 thread)")
    ax.set_ylabel("ONNX Runtime latency (ms, 1 thread)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "eager_vs_ort.png", dpi=120)
    plt.close(fig)
    withm = [r for r in recs if r["metric"] is not None]
    if not (fronts and withm):
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, label in ((axes[0], "eager_ms", "eager PyTorch"), (axes[1], "ort_ms", "ONNX Runtime")):
        on = non_dominated([(r["metric"], r[key]) for r in withm], ("max", "min"))
        ax.scatter([r[key] for r in withm], [r["metric"] for r in withm], s=14, c=["C3" if f else "C0" for f in on])
        front = sorted((r[key], r["metric"], r["model"]) for r, f in zip(withm, on) if f)
        ax.step([f[0] for f in front], [f[1] for f in front], where="post", color="C3")
        for c, m, name in front:
            ax.annotate(name, (c, m), fontsize=7)
        ax.set_xlabel(f"{label} latency (ms, 1 thread)")
        ax.set_title(f"front under {label}: {', '.join(f[2] for f in front)}", fontsize=8)
    axes[0].set_ylabel("metric (search)")
    fig.tight_layout()
    fig.savefig(out / "fronts.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
