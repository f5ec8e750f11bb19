#!/usr/bin/env python
"""Transfer tables: decoders found by a segmentation search, fine-tuned on another dense task, against the
task's hand-designed heads on the same backbone, under the same budget (Nekrasov et al., "Fast Neural
Architecture Search of Compact Semantic Segmentation Models via Auxiliary Cells", CVPR 2019, Sec. 5:
NYUv2 depth and MPII / COCO keypoints).

Every model goes the way a user's would: ``tools/export.py`` writes its config (found arch with ``--task``,
or ``--baseline``), ``tools/train.py`` fine-tunes it once per seed (``randomness.seed``), ``tools/test.py``
scores the last checkpoint and counts its parameters. Runs whose ``test.json`` exists are kept, so an
interrupted table resumes where it stopped.

    python benchmarks/transfer.py --task depth \\
        --archs work_dirs/auxcell_proxy_newcomer/best_arch.json work_dirs/auxcell_proxy/best_arch.json \\
        --baselines fcn deeplabv3plus --seeds 0 1 --iters 300 --out work_dirs/transfer_depth
    python benchmarks/transfer.py --task keypoints --archs ... --baselines heatmap@48 heatmap@256 \\
        --out work_dirs/transfer_keypoints

Prints (and writes ``table.md`` / ``table.json`` in ``--out``) one row per model: the mean over seeds of
each metric, ``±`` half the spread between seeds, and the inference parameters.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see tools/search.py
from densenas.finetune import ROOT, fine_tune  # noqa: E402
from densenas.finetune import headline as pick  # noqa: E402  (the first metric matching a pattern)

#: (column label, regex matched against the metric keys tools/test.py reports, lower is better)
COLUMNS = {
    "depth": [("RMSE lin", r"(^|/)rmse$", True), ("RMSE log", r"(^|/)rmse_log$", True),
              ("abs rel", r"(^|/)abs_rel$", True), ("sq rel", r"(^|/)sq_rel$", True),
              ("δ1", r"(^|/)(d1|a1)$", False), ("δ2", r"(^|/)(d2|a2)$", False), ("δ3", r"(^|/)(d3|a3)$", False)],
    # proxy / COCO: PCKAccuracy(prefix="pckh@0.5") -> "pckh@0.5/PCKh"; MPII: MpiiPCKAccuracy's PCKh, PCKh@0.1
    "keypoints": [("PCKh@0.5", r"^pckh$|pckh@0\.5", False), ("PCKh@0.1", r"pckh@0\.1", False),
                  ("AP", r"(^|/)ap$", False), ("AR", r"(^|/)ar$", False)],
}


def models(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """``(name, tools/export.py arguments)`` of every found arch and baseline."""
    out = []
    for a in args.archs:
        res = json.loads(Path(a).read_text()).get("result") or {}
        cid = res.get("candidate")
        name = f"found #{cid} ({Path(a).parent.name})" if cid is not None else f"found ({Path(a).stem})"
        out.append((name, [a]))
    for b in args.baselines:  # NAME or NAME@WIDTH (e.g. heatmap@256: mmpose's default deconv width)
        name, _, width = b.partition("@")
        out.append((f"{name} ({width} ch)" if width else name,
                    ["--baseline", name, *(["--width", width] if width else [])]))
    return out


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()


def run_one(name: str, export_args: list[str], seed: int, args: argparse.Namespace) -> dict:
    """Export (once per model), fine-tune with ``seed`` and test; returns tools/test.py's JSON
    (:func:`densenas.finetune.fine_tune`)."""
    out = Path(args.out)
    return fine_tune([*export_args, "--task", args.task, "--iters", str(args.iters), *args.export_args],
                     out / f"{slug(name)}.py", out / f"{slug(name)}_s{seed}", seed)


def table(task: str, rows: dict[str, list[dict]]) -> tuple[str, list[dict]]:
    """Markdown table (mean ± half spread over seeds) and its rows as dicts."""
    cols = COLUMNS[task]
    head = ["model", *[f"{c[0]} {'↓' if c[2] else '↑'}" for c in cols], "params (M)", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out = []
    for name, runs in rows.items():
        cells, rec = [name], {"model": name, "seeds": len(runs)}
        for label, pat, _ in cols:
            vals = [v for v in (pick(r["metrics"], pat) for r in runs) if v is not None]
            if not vals:
                cells.append("–")
                continue
            mean, half = sum(vals) / len(vals), (max(vals) - min(vals)) / 2
            rec[label] = mean
            cells.append(f"{mean:.3f} ± {half:.3f}" if len(vals) > 1 else f"{mean:.3f}")
        rec["params"] = runs[0]["params"]
        cells += [f"{runs[0]['params'] / 1e6:.3f}", str(len(runs))]
        lines.append("| " + " | ".join(cells) + " |")
        out.append(rec)
    return "\n".join(lines), out


def run_all(todo_models: list[tuple[str, list[str]]], args: argparse.Namespace) -> dict[str, list[dict]] | None:
    """Every model x ``args.seeds`` through :func:`run_one`, with a progress line each; ``None`` (the error
    printed) when one fails."""
    rows: dict[str, list[dict]] = {}
    todo = [(m, s) for m in todo_models for s in args.seeds]
    t0 = time.perf_counter()
    for i, ((name, export_args), seed) in enumerate(todo, 1):
        t = time.perf_counter()
        try:
            r = run_one(name, export_args, seed, args)
        except RuntimeError as e:
            print(f"error: {name} seed {seed}: {e}", file=sys.stderr)
            return None
        rows.setdefault(name, []).append(r)
        print(f"[{i}/{len(todo)}] {name} seed {seed}: {time.perf_counter() - t:.0f}s "
              f"(total {time.perf_counter() - t0:.0f}s)", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, choices=sorted(COLUMNS))
    p.add_argument("--archs", nargs="*", default=[], help="found arch JSONs (best_arch.json of searches)")
    p.add_argument("--baselines", nargs="*", default=[],
                   help="the task's hand-designed heads, NAME or NAME@WIDTH (channels; default: the exporter's)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--iters", type=int, default=300, help="fine-tuning iterations of every model")
    p.add_argument("--out", required=True, help="directory of configs, runs and the table")
    p.add_argument("--export-args", nargs=argparse.REMAINDER, default=[],
                   help="more tools/export.py options for every model (last on the line)")
    args = p.parse_args(argv)
    for a in args.archs:
        if not Path(a).is_file():
            print(f"error: arch file not found: {a}", file=sys.stderr)
            return 2
    if not args.archs and not args.baselines:
        print("error: give --archs and/or --baselines", file=sys.stderr)
        return 2
    Path(args.out).mkdir(parents=True, exist_ok=True)
    rows = run_all(models(args), args)
    if rows is None:
        return 1
    md, recs = table(args.task, rows)
    (Path(args.out) / "table.md").write_text(md + "\n")
    (Path(args.out) / "table.json").write_text(json.dumps(recs, indent=2) + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
