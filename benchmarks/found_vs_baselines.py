#!/usr/bin/env python
"""Found model against every hand-designed baseline of its task, at equal parameters, the way a user gets them.

One command for the claim a NAS toolkit has to prove (FastDenseNAS, Nekrasov et al., CVPR 2019, Tab. 2:
the found decoder against DeepLab heads; NAS-FCOS, Wang et al., CVPR 2020: against FPN-FCOS): a search
(``--search CONFIG``, or ``--archs`` of earlier searches) → ``tools/export.py`` → ``tools/train.py`` with
several seeds → ``tools/test.py``, for the found arch and for each baseline, all under the same schedule.
Each baseline's width is chosen so its parameters are within ``--tolerance`` (default ±10 %) of the found
model's (counted on the exported config's model, as ``tools/test.py`` counts them); a baseline that no width
brings that close is reported with its ratio.

    python benchmarks/found_vs_baselines.py --task segmentation --search configs/search/auxcell_proxy.py \\
        --seeds 0 1 2 --iters 600 --out work_dirs/fvb_seg
    python benchmarks/found_vs_baselines.py --task segmentation --archs work_dirs/auxcell_proxy/best_arch.json \\
        --baselines deeplabv3plus aspp fcn --out work_dirs/fvb_seg

Prints (and writes ``table.md`` / ``table.json`` in ``--out``) one row per model: mean ± s.d. over seeds of
the task's headline metrics, params and MAdds as ``tools/test.py`` counts them. Finished runs are kept
(``<out>/<model>_s<seed>/test.json``), so an interrupted table resumes with the same command.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import transfer  # noqa: E402  (same folder: the export / fine-tune / test runner of the transfer tables)

from densenas.finetune import sh  # noqa: E402
from densenas.promotion import mean_sd  # noqa: E402

ROOT = transfer.ROOT
#: (column label, regex matched against tools/test.py's metric keys, lower is better), per task
COLUMNS = {
    "segmentation": [("mIoU", r"(^|/)miou$", False), ("aAcc", r"(^|/)aacc$", False), ("mAcc", r"(^|/)macc$", False)],
    "detection": [("AP", r"bbox_map$", False), ("AP50", r"bbox_map_50$", False), ("AP75", r"bbox_map_75$", False)],
    **transfer.COLUMNS,
}
#: the baselines each task's exporter knows, compared by default (tools/export.py --baseline)
BASELINES = {"segmentation": ["deeplabv3plus", "aspp", "fcn"], "detection": ["fpn_fcos", "fpn_retinanet"],
             "depth": ["deeplabv3plus", "fcn"], "keypoints": ["heatmap"]}
WIDTHS = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)


def params_of(config: Path) -> int:
    """Inference parameters of the model an exported config builds (``task.test_cost_model``, as
    ``tools/test.py`` counts them), without training it (in this process: the OpenMMLab stack loads once)."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    from densenas.task import task_of_config

    cfg = Config.fromfile(str(config))
    task = task_of_config(cfg)
    init_default_scope(cfg.get("default_scope", "mmseg"))
    try:
        model = MODELS.build(cfg.model).eval()
    except Exception as e:  # noqa: BLE001 - a width the head refuses is reported, the next one is tried
        raise RuntimeError(f"cannot build {config}: {type(e).__name__}: {e}") from None
    return int(task.test_cost_model(model, cfg)[1])


def _tool(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"tools_{name}", ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def export(args: argparse.Namespace, export_args: list[str], path: Path) -> Path:
    """``tools/export.py`` (in this process) unless ``path`` exists."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        rc = _tool("export")([*export_args, "--task", args.task, "--out", str(path), "--iters", str(args.iters),
                              *args.export_args])
        if rc != 0:
            raise RuntimeError(f"tools/export.py {' '.join(export_args)} failed (rc {rc})")
    return path


def matched_width(args: argparse.Namespace, name: str, target: int) -> tuple[int | None, float]:
    """The width of baseline ``name`` whose parameters are closest to ``target`` (and their ratio)."""
    best: tuple[float, int | None, float] = (math.inf, None, math.nan)
    for w in WIDTHS:
        try:
            cfg = export(args, ["--baseline", name, "--width", str(w)], Path(args.out) / "widths" / f"{name}_w{w}.py")
            ratio = params_of(cfg) / target
        except RuntimeError as e:  # a width this baseline refuses (e.g. groups): try the next
            print(f"  {name} width {w}: {str(e).splitlines()[0]}", flush=True)
            continue
        if abs(math.log(ratio)) < best[0]:
            best = (abs(math.log(ratio)), w, ratio)
        if ratio > 1 + args.tolerance:
            break  # params grow with the width
    return best[1], best[2]


def table(task: str, rows: dict[str, list[dict]], found_params: int | None) -> tuple[str, list[dict]]:
    """Markdown (mean ± s.d. over seeds; params ratio to the found model) and the rows as dicts."""
    cols = COLUMNS[task]
    head = ["model", *[f"{c[0]} {'↓' if c[2] else '↑'}" for c in cols], "params (M)", "vs found", "MAdds (G)",
            "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    recs = []
    for name, runs in rows.items():
        cells, rec = [name], {"model": name, "seeds": len(runs), "params": runs[0]["params"],
                              "madds": runs[0].get("madds")}
        for label, pat, _ in cols:
            vals = [v for v in (transfer.pick(r["metrics"], pat) for r in runs) if v is not None]
            if not vals:
                cells.append("–")
                continue
            m, sd = mean_sd(vals)
            sd = sd or 0.0
            rec[label], rec[f"{label}_sd"], rec[f"{label}_runs"] = m, sd, vals
            nd = 3 if abs(m) < 1 else 2  # COCO AP, PCKh, RMSE on a 0..1 scale need the third decimal
            cells.append(f"{m:.{nd}f} ± {sd:.{nd}f}" if len(vals) > 1 else f"{m:.{nd}f}")
        ratio = rec["params"] / found_params if found_params else math.nan
        rec["params_ratio"] = ratio
        cells += [f"{rec['params'] / 1e6:.3f}", f"{ratio:.2f}x" if found_params else "–",
                  f"{rec['madds'] / 1e9:.3f}" if rec["madds"] else "–", str(len(runs))]
        lines.append("| " + " | ".join(cells) + " |")
        recs.append(rec)
    return "\n".join(lines), recs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, choices=sorted(COLUMNS))
    p.add_argument("--search", help="run this search config first (into <out>/search; resumed if there)")
    p.add_argument("--search-options", nargs="*", default=[], help="--cfg-options of that search")
    p.add_argument("--archs", nargs="*", default=[], help="found arch JSONs (best_arch.json of earlier searches)")
    p.add_argument("--baselines", nargs="*", help="NAME or NAME@WIDTH (a fixed width: no matching); default: "
                                                  "every baseline of the task")
    p.add_argument("--tolerance", type=float, default=0.10, help="params within this fraction of the found")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--iters", type=int, default=600, help="fine-tuning iterations of every model")
    p.add_argument("--out", required=True, help="directory of configs, runs and the table")
    p.add_argument("--export-args", nargs=argparse.REMAINDER, default=[],
                   help="more tools/export.py options for every model (last on the line)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "benchmark.log"
    archs = list(args.archs)
    if args.search:
        work = out / "search"
        if not (work / "best_arch.json").is_file():
            resume = ["--resume"] if (work / "history.sqlite").is_file() else []
            print(f"search: {args.search} -> {work}", flush=True)
            sh([sys.executable, "tools/search.py", args.search, "--work-dir", str(work), *resume,
                *(["--cfg-options", *args.search_options] if args.search_options else [])], log)
        archs.append(str(work / "best_arch.json"))
    missing = [a for a in archs if not Path(a).is_file()]
    if missing or not archs:
        print(f"error: arch file not found: {missing}" if missing else "error: give --search or --archs",
              file=sys.stderr)
        return 2
    models: list[tuple[str, list[str]]] = transfer.models(argparse.Namespace(archs=archs, baselines=[]))
    found_params = params_of(export(args, models[0][1], out / f"{transfer.slug(models[0][0])}.py"))
    print(f"found: {found_params / 1e6:.3f} M params", flush=True)
    for b in args.baselines or BASELINES[args.task]:
        name, _, width = b.partition("@")
        if not width:
            w, ratio = matched_width(args, name, found_params)
            if w is None:
                print(f"  {name}: no width could be exported; left out", flush=True)
                continue
            flag = "" if abs(ratio - 1) <= args.tolerance else f" (outside ±{args.tolerance:.0%})"
            print(f"  {name}: width {w}, {ratio:.2f}x the found model's params{flag}", flush=True)
            width = str(w)
        models.append((f"{name} ({width} ch)", ["--baseline", name, "--width", width]))
    rows = transfer.run_all(models, args)
    if rows is None:
        return 1
    md, recs = table(args.task, rows, found_params)
    (out / "table.md").write_text(md + "\n")
    (out / "table.json").write_text(json.dumps(recs, indent=2) + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
