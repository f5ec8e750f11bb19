#!/usr/bin/env python
"""Write an ordinary OpenMMLab config (mmseg / mmdet / mmpose / mmengine) for a found architecture or a baseline.

    python tools/export.py work_dirs/auxcell_proxy/best_arch.json --out configs/finetune/found_proxy.py
    python tools/export.py --baseline aspp --out configs/finetune/baseline_aspp_proxy.py
    # real data: --dataset voc --data-root data/VOCdevkit/VOC2012 --crop 512 --iters 40000
    python tools/export.py work_dirs/autodeeplab_proxy/derived_arch.json --out adl.py --crop 64
    python tools/export.py work_dirs/irnas_denoise_proxy/derived_arch.json --out irnas.py --sigma 25
    python tools/export.py work_dirs/irnas_denoise_proxy/derived_arch.json --baseline dncnn --out dncnn.py
    python tools/export.py work_dirs/nasfcos_fpn_proxy/best_arch.json --out nasfcos.py
    python tools/export.py --baseline fpn_fcos --width 32 --out fpn_fcos.py
    python tools/export.py work_dirs/auxcell_proxy/history.sqlite --candidate 17 --out c17.py  # any candidate,
        # e.g. one of the Pareto front marked in leaderboard.md
    # a found segmentation decoder transferred to depth (mmseg DepthEstimator) or keypoints (mmpose top-down)
    python tools/export.py work_dirs/auxcell_proxy/best_arch.json --task depth --out depth_found.py
    python tools/export.py --baseline deeplabv3plus --task depth --out depth_dlv3p.py
    python tools/export.py work_dirs/auxcell_proxy/best_arch.json --task keypoints --out kpt_found.py
    python tools/export.py --baseline heatmap --width 48 --out kpt_heatmap.py
    # the user's own VOC-layout set: the classes are counted from its label masks, or named
    python tools/export.py --baseline deeplabv3plus --dataset voc --data-root my_set --out dlv3p.py
    python tools/export.py --baseline deeplabv3plus --dataset voc --data-root my_set --classes bg,road,car --out x.py

The task (and the space settings, classes and backbone the arch was searched with) come from the search's
``config.py`` next to the arch JSON; ``--task`` names it otherwise. Segmentation classes: ``--classes``, else
the search's (for the data it searched on), else the data's own (the proxy manifest; on a VOC layout the
label values of the train/val masks, printed; Cityscapes: its 19). Found model and baseline of one task
share the data pipeline and schedule, so ``tools/train.py`` fine-tunes them under the same budget.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# OpenMP threads that spin while waiting make torch on a busy 2-core machine 5-10x slower (measured);
# sleeping waits cost nothing measurable when the machine is idle. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: options every task's exporter takes (schedule and runtime)
COMMON = ("val_interval", "workers", "work_dir")


def parse_classes(text: str) -> int | list[str]:
    """``--classes``: a count (``"3"``) or comma-separated class names (``"background,road,car"``).

    Raises:
        argparse.ArgumentTypeError: a count below 1, an empty name or a repeated one.
    """
    text = text.strip()
    if text.isdigit():
        if int(text) < 1:
            raise argparse.ArgumentTypeError(f"--classes {text!r}: need at least 1 class")
        return int(text)
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"--classes {text!r}: an empty class name (give a count or "
                                         f"comma-separated names)")
    if dup := sorted({n for n in names if names.count(n) > 1}):
        raise argparse.ArgumentTypeError(f"--classes {text!r}: repeated class names {dup}")
    return names


#: the task options of this tool: (name, type, what it is); what each means for a task, and whether the task
#: takes it, is the task plugin's own ``Task.export_help``
TASK_OPTIONS = (("dataset", str, "dataset layout"), ("data_root", str, "dataset root"),
                ("classes", parse_classes,
                 "a class count (e.g. 3) or comma-separated class names (e.g. background,road,car)"),
                ("layout", str, "dataset layout"), ("optimizer", str, "optimizer"),
                ("crop", int, "training crop in pixels"), ("kind", str, "what the model restores"),
                ("sigma", float, "a Gaussian's sigma"), ("width", int, "channels"),
                ("iters", int, "training iterations"), ("lr", float, "peak learning rate"),
                ("batch_size", int, "training batch size"))


def _task_classes() -> dict:
    """Every installed task plugin's class, by name (their ``export_help`` writes this tool's help)."""
    from densenas.plugins import TASKS, available
    from densenas.task import task_class

    return {name: task_class(name) for name in available(TASKS)}


def _option_help(name: str, generic: str, tasks: dict) -> str:
    """``generic``, then what each task that takes option ``name`` makes of it (``Task.export_help``)."""
    per = [f"{t}: {cls.export_help[name]}" for t, cls in tasks.items() if name in cls.export_help]
    return f"{generic}. " + "; ".join(per) if per else generic


def check_options(task_cls, opts: dict) -> None:
    """Refuse an option the task's exporter does not take (``Task.export_help``), naming the tasks that do.

    Raises:
        ValueError: the first such option.
    """
    for name in opts:
        if name in COMMON or name in task_cls.export_help:
            continue
        takers = [t for t, cls in _task_classes().items() if name in cls.export_help]
        raise ValueError(f"--{name.replace('_', '-')}: the {task_cls.name} task does not take it "
                         f"(tasks that do: {', '.join(takers) or 'none'})")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("arch", nargs="?", help="arch JSON (best_arch.json / derived_arch.json of a search), or a "
                                           "search's history.sqlite with --candidate")
    p.add_argument("--candidate", type=int, help="with a history.sqlite: export this candidate (its id in the "
                                                 "leaderboard, e.g. a point of the Pareto front)")
    p.add_argument("--baseline", help="a hand-designed model of the task (--list-baselines prints those of "
                                      "every installed task plugin)")
    p.add_argument("--list-baselines", action="store_true",
                   help="print each task plugin's baselines and exit")
    p.add_argument("--out", help="config file to write (required unless --list-baselines)")
    p.add_argument("--task", help="task plugin (default: the search's task, from config.py next to the arch)")
    tasks = _task_classes()
    for name, kind, generic in TASK_OPTIONS:
        p.add_argument("--" + name.replace("_", "-"), type=kind, help=_option_help(name, generic, tasks))
    p.add_argument("--val-interval", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--work-dir", help="work_dir written into the config")
    return p.parse_args(argv)


def list_baselines() -> str:
    """Every installed task plugin's baselines, asked of the plugins (``Task.baselines`` / ``baselines_note``)."""
    from densenas.plugins import TASKS, available
    from densenas.task import task_class

    lines = []
    for name in available(TASKS):
        cls = task_class(name)
        if cls.baselines:
            lines.append(f"{name}: {', '.join(cls.baselines)}" + (f"  ({cls.baselines_note})" if cls.baselines_note
                                                                 else ""))
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    from densenas.arch import Arch, InvalidArch
    from densenas.plugins import PluginError
    from densenas.space import ExportNotImplemented
    from densenas.task import pick_task

    if args.list_baselines:
        print(list_baselines())
        return 0
    if args.out is None:
        print("error: --out is required", file=sys.stderr)
        return 2
    if args.arch is None and args.baseline is None:
        print("error: give an arch JSON or --baseline", file=sys.stderr)
        return 2
    if (args.candidate is not None) != bool(args.arch and args.arch.endswith(".sqlite")):
        print("error: --candidate goes with a search's history.sqlite (and a history needs --candidate)",
              file=sys.stderr)
        return 2
    try:
        arch = _candidate_arch(Path(args.arch), args.candidate) if args.candidate is not None else \
            Arch.load(args.arch) if args.arch else None
        search_cfg = _search_config(Path(args.arch)) if args.arch else {}
        task_cls = pick_task(args.task or dict(search_cfg.get("task") or {}).get("type"), arch, args.baseline)
        if arch is not None and args.baseline is not None and args.baseline not in task_cls.baselines_with_arch:
            raise ValueError(f"give an arch JSON or --baseline, not both (the {task_cls.name} task exports "
                             f"{list(task_cls.baselines_with_arch) or 'no baseline'} together with an arch)")
        names = [o[0] for o in TASK_OPTIONS] + list(COMMON)
        opts = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
        check_options(task_cls, opts)
        out = task_cls().export(args.out, arch=arch, baseline=args.baseline, search_cfg=search_cfg, **opts)
    except (InvalidArch, PluginError, ValueError, FileNotFoundError, TypeError, ExportNotImplemented) as e:
        print(f"error: {args.arch or args.baseline}: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} (task {task_cls.name})")
    return 0


def _candidate_arch(history_path: Path, cid: int):
    """The arch of finished candidate ``cid`` of a search history."""
    from densenas.history import History

    if not history_path.is_file():
        raise FileNotFoundError(f"no history file {history_path}")
    with History(history_path) as h:
        try:
            c = h.get(cid)
        except KeyError as e:
            raise ValueError(f"{e.args[0]} (see its leaderboard.md for the ids)") from None
    if c.result is None:
        raise ValueError(f"{history_path}: candidate #{cid} has not finished")
    return c.arch


def _search_config(arch_path: Path) -> dict:
    """The search's dumped config next to the arch JSON, as a dict (``{}`` when there is none)."""
    cfg_path = arch_path.parent / "config.py"
    if not cfg_path.is_file():
        return {}
    from mmengine.config import Config

    return Config.fromfile(str(cfg_path)).to_dict()


if __name__ == "__main__":
    sys.exit(main())
